"""The public archive: `dispatch archive hide|show ISSUE`."""

from __future__ import annotations

from typing import Annotated

import typer

from dispatch.cli.common import ConfigOption, group, load_with_store, now, say

archive_app = group(
    "Take an issue down from the public archive (its page, the list and the feed at /a) or "
    "put it back. The messages already delivered are not touched.")

IssueArgument = Annotated[str, typer.Argument(
    help="Issue folder or slug: one that was sent or scheduled, or a folder under issues/.")]


@archive_app.command("hide")
def archive_hide(issue: IssueArgument, config: ConfigOption = None) -> None:
    """Take an issue down from the public archive.

    It leaves the list and the feed, and its pages (the "view in your browser" links
    included) answer 410 Gone. A draft or scheduled issue hidden now stays out when it goes
    out.

    Example: dispatch archive hide 2026-11-27-thaw
    """
    from dispatch import schedule as scheduling

    settings, engine = load_with_store(config)
    change = scheduling.hide_issue(engine, settings, issue, now())
    if not change.changed:
        say(f"{change.slug} was already hidden from the archive")
    elif change.sent:
        say(f"hid {change.slug}: it is out of the archive and its feed, and its pages answer "
            "410 Gone (dispatch archive show puts it back)")
    else:
        say(f"hid {change.slug}: it will stay out of the archive when it goes out")


@archive_app.command("show")
def archive_show(issue: IssueArgument, config: ConfigOption = None) -> None:
    """Put a hidden issue back in the public archive.

    An issue taken down with `dispatch archive hide` gets its pages, its entry in the list
    and in the feed back as they were.

    Example: dispatch archive show 2026-11-27-thaw
    """
    from dispatch import schedule as scheduling

    settings, engine = load_with_store(config)
    change = scheduling.show_issue(engine, settings, issue)
    if not change.changed:
        say(f"{change.slug} was not hidden from the archive")
    elif change.sent:
        say(f"{change.slug} is back in the archive and its feed")
    else:
        say(f"{change.slug} is no longer hidden: it appears in the archive once it goes out")
