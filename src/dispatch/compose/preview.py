"""`dispatch preview`: render every variant of an issue to files an operator can open.

Never touches SMTP or the subscriber store; the caller may pass the variants to render.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from dispatch.compose.message import Recipient, build_template, message_id, personalize
from dispatch.compose.models import Issue
from dispatch.compose.render import environment, render_checked, render_variant
from dispatch.compose.slots import fill_slots, sample_values
from dispatch.compose.variants import Variant, possible_variants
from dispatch.config import Settings
from dispatch.errors import DispatchError, Problem

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--force-device-scale-factor=1"]
SCREEN_SIZES = {"phone": (375, 4200), "desktop": (800, 3200)}


def sample_recipient(issue: Issue, variant: Variant, settings: Settings) -> Recipient:
    values = sample_values(settings)
    return Recipient(email="sample.reader@example.com", name="Sample Reader",
                     unsubscribe_url=values["unsubscribe_url"],
                     preferences_url=values["preferences_url"],
                     view_url=f"{settings.newsletter.base_url}/a/{issue.slug}/{variant.id}",
                     message_id=message_id(issue.slug, "sample", settings))


def find_chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def screenshot(chromium: str, html_path: Path, png_path: Path, size: tuple[int, int]) -> None:
    """A PNG of a local HTML file, taken by headless Chromium with its network chatter off."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                        f"--window-size={size[0]},{size[1]}", f"--screenshot={png_path}",
                        html_path.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)


def sample_copy(issue: Issue, variant: Variant, settings: Settings, now: datetime
                ) -> tuple[str, str]:
    """One variant as a sample reader gets it: its HTML and plaintext, slots filled (what
    `dispatch preview` writes, and the console shows)."""
    rendered = render_variant(issue, variant, settings, now)
    values = {**sample_values(settings),
              "view_url": sample_recipient(issue, variant, settings).view_url}
    return fill_slots(rendered.html, values), fill_slots(rendered.text, values)


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
    labels = {key: topic.label for key, topic in settings.topics.items()}
    chromium = find_chromium() if screenshots else None
    if screenshots and chromium is None:
        progress("Chromium not found: skipping screenshots (apt-get install chromium)")
    every: list[Problem] = list(problems)
    report: dict[str, Any] = {"issue": issue.slug, "subject": issue.subject, "variants": []}
    for variant in variants.values():
        entry: dict[str, Any] = {
            "id": variant.id, "briefs": [b.path.name for b in variant.briefs],
            "titles": [b.title for b in variant.briefs],
            "topics": list(variant.topics), "topic_labels": [labels[t] for t in variant.topics],
            "written": False, "html_bytes": 0, "text_bytes": 0, "eml_bytes": 0,
            "warnings": [], "problems": [], "screenshots": []}
        report["variants"].append(entry)
        try:
            rendered, found = render_checked(issue, variant, settings, now)
        except DispatchError as exc:
            found = exc.problems
            entry["problems"] = [str(p) for p in found]
            every.extend(p for p in found if p not in every)
            progress(f"{variant.id}: not rendered: {found[0]}")
            continue
        entry["problems"] = [str(p) for p in found]
        every.extend(p for p in found if p not in every)
        recipient = sample_recipient(issue, variant, settings)
        values = {**sample_values(settings), "view_url": recipient.view_url}
        html_path = out_dir / f"{variant.id}.html"
        html_path.write_text(fill_slots(rendered.html, values), encoding="utf-8")
        (out_dir / f"{variant.id}.txt").write_text(fill_slots(rendered.text, values),
                                                   encoding="utf-8")
        eml = personalize(build_template(rendered, issue, settings), recipient, now, settings)
        (out_dir / f"{variant.id}.eml").write_bytes(eml)
        entry.update(written=True, html_bytes=len(rendered.html.encode()),
                     text_bytes=len(rendered.text.encode()), eml_bytes=len(eml),
                     warnings=list(rendered.warnings))
        if chromium:
            for screen, size in SCREEN_SIZES.items():
                png = out_dir / f"{variant.id}.{screen}.png"
                screenshot(chromium, html_path, png, size)
                entry["screenshots"].append(png.name)
        progress(f"{variant.id}: {len(variant.briefs)} brief(s), "
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
