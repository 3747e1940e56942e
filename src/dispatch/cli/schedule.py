"""Scheduling: `dispatch schedule add|list|move|cancel` (`dispatch schedule ISSUE …` is short
for `add`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer

from dispatch.cli.common import (
    ClickContext,
    ConfigOption,
    DispatchGroup,
    daemon_hint,
    group,
    load,
    load_with_store,
    now,
    open_engine,
    out,
    print_table,
    say,
    when_scheduled,
)
from dispatch.states import SendStatus

# Statuses whose reason is news on the list: why it stopped, or never went.
_EXPLAINED = (SendStatus.PAUSED, SendStatus.FAILED, SendStatus.MISSED)


class _ScheduleGroup(DispatchGroup):
    """`dispatch schedule ISSUE …` is short for `dispatch schedule add ISSUE …`."""

    def resolve_command(self, ctx: ClickContext, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["add", *args]
        return super().resolve_command(ctx, args)


schedule_app = group(
    "Schedule issues: dispatch schedule ISSUE --at TIME (short for `schedule add`), then list, "
    "move or cancel. `dispatch run` sends them on time.", cls=_ScheduleGroup)

AtOption = Annotated[str | None, typer.Option(
    "--at", help='When: "2026-12-01 07:00" (in --tz, else newsletter.timezone) or any ISO 8601 '
                 'time with seconds and offset, e.g. 2026-12-01T07:00:00+09:00.')]
TzOption = Annotated[str | None, typer.Option(
    "--tz", help="IANA zone of a bare --at time, e.g. Asia/Seoul.")]


@schedule_app.command("add")
def schedule_add(
    issue: Annotated[str, typer.Argument(help="Issue folder or slug under issues/.")],
    at: AtOption = None,
    tz: TzOption = None,
    local_time: Annotated[bool, typer.Option(
        "--local-time", help="Deliver at the --at wall-clock time in each subscriber's own "
                             "zone (schedule.default_timezone for those without one).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Schedule an issue (at --at, else its send_at). The issue is checked first (every variant
    rendered); an issue with problems or a time in the past is refused.

    Example: dispatch schedule 2026-11-27-thaw --at "2026-12-01 07:00" --tz Asia/Seoul
    """
    from dispatch import schedule as scheduling
    settings, engine = load_with_store(config)
    loaded, when = scheduling.schedule_issue(engine, settings, issue, at=at, tz=tz,
                                             local=local_time, now=now())
    say(f"scheduled {loaded.slug} for {when_scheduled(engine, settings, loaded.slug)}")
    for zone, moment in when.releases:
        say(f"  {zone}: {moment:%Y-%m-%d %H:%M} UTC")
    daemon_hint(engine)


@schedule_app.command("list")
def schedule_list(
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    config: ConfigOption = None,
) -> None:
    """What goes out when (in the editors' zone and UTC), what went out, drafts, and the
    recurring digests' next times.

    Example: dispatch schedule list
    """
    from dispatch import schedule as scheduling
    settings, engine = load_with_store(config)
    overview = scheduling.schedule_overview(engine, settings, now())
    if as_json:
        out.print_json(data=overview.as_json())
        return
    zone_name = settings.newsletter.timezone
    zone = ZoneInfo(zone_name)
    rows: list[tuple[str, ...]] = []
    for s in overview.sends:
        local = ("each reader's " + s.local_time.replace("T", " ")[:16] if s.local_time
                 else f"{s.send_at.astimezone(zone):%Y-%m-%d %H:%M}" if s.send_at else "-")
        utc = f"{s.send_at:%Y-%m-%d %H:%M}" if s.send_at else "-"
        sent = f"{overview.sent[s.issue]:,}/{s.recipients:,}" if s.launched_at else "-"
        rows.append((s.issue, s.status, local, utc, sent))
    rows += [(name, "draft", "-", "-", "-") for name in overview.drafts]
    print_table(("issue", "status", f"when ({zone_name})", "UTC", "sent"), rows)
    for s in overview.sends:
        if s.reason and s.status in _EXPLAINED:
            say(f"{s.issue}: {s.status}: {s.reason}")
    for r, moment in overview.recurring:
        when = (f"{moment.astimezone(ZoneInfo(r.timezone)):%Y-%m-%d %H:%M} {r.timezone} "
                f"({moment:%Y-%m-%d %H:%M} UTC)") if moment else "never"
        say(f"recurring {r.name} ({r.cron}, briefs from {r.folder}/): next {when}")
    if overview.waiting:
        daemon_hint(engine)


@schedule_app.command("move")
def schedule_move(
    issue: Annotated[str, typer.Argument(help="A scheduled issue's slug.")],
    at: Annotated[str, typer.Option("--at", help="The new time (same forms as for "
                                                 "`dispatch schedule`).")],
    tz: TzOption = None,
    config: ConfigOption = None,
) -> None:
    """Move a scheduled issue to a new time (a local-time issue stays local-time).

    Example: dispatch schedule move 2026-11-27-thaw --at "2026-12-02 07:00"
    """
    from dispatch import schedule as scheduling
    settings, engine = load_with_store(config)
    slug = Path(issue).name
    scheduling.move_issue(engine, settings, slug, at=at, tz=tz, now=now())
    say(f"moved {slug} to {when_scheduled(engine, settings, slug)}")


@schedule_app.command("cancel")
def schedule_cancel(
    issue: Annotated[str, typer.Argument(help="A scheduled, sending or paused issue's slug.")],
    config: ConfigOption = None,
) -> None:
    """Cancel a scheduled issue, or stop a send in progress for good (messages already sent
    stay sent; the rest are dropped). Schedule it again to send it later.

    Example: dispatch schedule cancel 2026-11-27-thaw
    """
    from dispatch import schedule as scheduling
    slug = Path(issue).name
    dropped = scheduling.cancel_issue(open_engine(load(config)), slug, now())
    say(f"cancelled {slug}" + (f"; {dropped:,} unsent message(s) dropped" if dropped else ""))
