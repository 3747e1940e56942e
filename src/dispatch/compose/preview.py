"""`dispatch preview`: render every variant of an issue to files an operator can open.

Never touches SMTP or the subscriber store; the caller may pass the variants to render.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from dispatch.compose.message import Recipient, build_template, personalize, recipient_fields
from dispatch.compose.models import Issue
from dispatch.compose.recipients import Placeholders, Reader, build_recipient
from dispatch.compose.render import environment, render_checked, render_variant
from dispatch.compose.slots import fill_slots, fill_text_slots
from dispatch.compose.variants import Variant, possible_variants, smallest_mix, variant_label
from dispatch.config import Settings
from dispatch.config.topics import topic_labels
from dispatch.errors import DispatchError, Problem

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--force-device-scale-factor=1"]
SCREEN_WIDTHS = {"phone": 375, "desktop": 800}
# A screenshot shows the whole message: an editor approves what readers scroll through, not
# its first screens. The cap only guards against a runaway page.
MAX_SCREENSHOT_HEIGHT = 40_000
# The page is measured inside an iframe of the exact width: a headless window is never
# narrower than 500 px, and a phone's layout needs the phone's width.
_PROBE = ('<!doctype html><html><body style="margin:0"><iframe id="m" src="{src}" '
          'style="border:0;width:{width}px;height:100px"></iframe><script>'
          'addEventListener("load", () => document.documentElement.setAttribute('
          '"data-dispatch-height", document.getElementById("m").contentDocument'
          '.documentElement.scrollHeight))</script></body></html>')


SAMPLE = Placeholders("SAMPLE-TOKEN", "sample")


def sample_recipient(issue: Issue, variant: Variant, settings: Settings, now: datetime
                     ) -> Recipient:
    """The sample reader of a variant: following its smallest topic mix."""
    reader = Reader("sample.reader@example.com", "Sample Reader", smallest_mix(issue, variant))
    return build_recipient(reader, issue.slug, variant.id, SAMPLE, settings, now)


def find_chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def page_height(chromium: str, html_path: Path, width: int) -> int:
    """How tall a local HTML file lays out at this width, in CSS pixels, once loaded.
    Chromium's --screenshot captures only the window, so the window is made this tall."""
    with tempfile.TemporaryDirectory() as work:
        probe = Path(work) / "measure.html"
        probe.write_text(_PROBE.format(src=html_path.resolve().as_uri(), width=width),
                         encoding="utf-8")
        done = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={work}/profile",
                               "--allow-file-access-from-files", "--window-size=1000,800",
                               "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                              check=True, capture_output=True, text=True, timeout=120)
    found = re.search(r'data-dispatch-height="(\d+)"', done.stdout)
    return min(int(found.group(1)), MAX_SCREENSHOT_HEIGHT) if found else MAX_SCREENSHOT_HEIGHT


def screenshot(chromium: str, html_path: Path, png_path: Path, width: int) -> None:
    """A full-height PNG of a local HTML file, taken by headless Chromium with its network
    chatter off."""
    height = page_height(chromium, html_path, width)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                        f"--window-size={width},{height}", f"--screenshot={png_path}",
                        html_path.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)


def sample_copy(issue: Issue, variant: Variant, settings: Settings, now: datetime
                ) -> tuple[str, str]:
    """One variant as a sample reader gets it: its HTML and plaintext, slots filled (what
    `dispatch preview` writes, and the console shows)."""
    rendered = render_variant(issue, variant, settings, now)
    values = recipient_fields(sample_recipient(issue, variant, settings, now))
    return fill_slots(rendered.html, values), fill_text_slots(rendered.text, values)


def preview(issue: Issue, settings: Settings, out_dir: Path, now: datetime,
            variants: dict[str, Variant] | None = None, screenshots: bool = False,
            progress: Callable[[str], None] = lambda _: None,
            problems: Sequence[Problem] = ()) -> dict[str, Any]:
    """Write <variant>.html/.txt/.eml for every variant that renders, index.html and
    report.json; return the report. A variant that breaks a rule is still written, its
    problems listed beside it; `problems` are the issue's own (briefs left out or trimmed,
    see issues.load_draft_issue). The report's "problems" holds all of them, once each."""
    variants = variants if variants is not None else possible_variants(issue)
    out_dir.mkdir(parents=True, exist_ok=True)
    chromium = find_chromium() if screenshots else None
    if screenshots and chromium is None:
        progress("Chromium not found: skipping screenshots (apt-get install chromium)")
    # The masthead of a planned issue shows the day it is planned for; a send shows the day
    # it really goes out (compose.render._issue_date).
    planned_day = (issue.send_at.astimezone(ZoneInfo(settings.newsletter.timezone)).date()
                   if issue.send_at else None)
    every: list[Problem] = list(problems)
    report: dict[str, Any] = {"issue": issue.slug, "subject": issue.subject, "variants": []}
    for variant in variants.values():
        entry: dict[str, Any] = {
            "id": variant.id, "label": variant_label(issue, variant, settings.topics),
            "briefs": [b.path.name for b in variant.briefs],
            "titles": [b.title for b in variant.briefs],
            "topics": list(variant.topics),
            "topic_labels": topic_labels(settings.topics, variant.topics),
            "written": False, "html_bytes": 0, "text_bytes": 0, "eml_bytes": 0,
            "warnings": [], "problems": [], "screenshots": []}
        report["variants"].append(entry)
        try:
            rendered, found = render_checked(issue, variant, settings, now,
                                             day=planned_day)
        except DispatchError as exc:
            found = exc.problems
            entry["problems"] = [str(p) for p in found]
            every.extend(p for p in found if p not in every)
            progress(f"{variant.id}: not rendered: {found[0]}")
            continue
        entry["problems"] = [str(p) for p in found]
        every.extend(p for p in found if p not in every)
        recipient = sample_recipient(issue, variant, settings, now)
        values = recipient_fields(recipient)
        html_path = out_dir / f"{variant.id}.html"
        html_path.write_text(fill_slots(rendered.html, values), encoding="utf-8")
        (out_dir / f"{variant.id}.txt").write_text(fill_text_slots(rendered.text, values),
                                                   encoding="utf-8")
        eml = personalize(build_template(rendered, issue, settings), recipient, now, settings)
        (out_dir / f"{variant.id}.eml").write_bytes(eml)
        entry.update(written=True, html_bytes=len(rendered.html.encode()),
                     text_bytes=len(rendered.text.encode()), eml_bytes=len(eml),
                     warnings=list(rendered.warnings))
        if chromium:
            for screen, width in SCREEN_WIDTHS.items():
                png = out_dir / f"{variant.id}.{screen}.png"
                screenshot(chromium, html_path, png, width)
                entry["screenshots"].append(png.name)
        progress(f"{entry['label']} ({variant.id}): {len(variant.briefs)} brief(s), "
                 f"{entry['html_bytes'] / 1024:.1f} KB HTML"
                 + (f", {len(found)} problem(s)" if found else ""))
    report["problems"] = [{"path": p.path, "line": p.line, "message": p.message,
                           "text": str(p)} for p in every]
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n",
                                         encoding="utf-8")
    index = environment(settings).get_template("preview/index.html.j2").render(
        report=report, newsletter=settings.newsletter)
    (out_dir / "index.html").write_text(index, encoding="utf-8")
    return report
