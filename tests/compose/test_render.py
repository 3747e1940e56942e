"""Rendering rules from DESIGN.md's "Email correctness", each checked on real output."""

from __future__ import annotations

import dataclasses
import http.server
import re
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mjml import mjml2html

from dispatch.compose.briefs import parse_brief
from dispatch.compose.issues import load_issue
from dispatch.compose.render import inline_css, markdown_html, markdown_text, render_variant
from dispatch.compose.rules import MAX_TEXT_LINE, check_rendered
from dispatch.compose.slots import fill_slots, sample_values
from dispatch.compose.variants import (
    matched_briefs,
    plan_variants,
    possible_variants,
    variant_for,
)
from dispatch.errors import RenderError
from tests.helpers import EXAMPLE_ISSUE

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


@pytest.fixture
def issue(settings):
    return load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)


@pytest.fixture
def full(issue, settings):
    return render_variant(issue, variant_for(issue, issue.briefs), settings, NOW)


def brief_with(settings, body: str, extra: str = ""):
    text = f"---\ntitle: T\ntopics: [security]\nsummary: S.\n{extra}---\n\n{body}\n"
    return parse_brief(Path("t.md"), text, settings.topics)


def render_briefs(issue, settings, *briefs):
    custom = dataclasses.replace(issue, briefs=tuple(briefs))
    return render_variant(custom, variant_for(custom, custom.briefs), settings, NOW)


# ---- variants ----------------------------------------------------------------------------

def test_every_topic_mix_has_its_variant(issue):
    variants = possible_variants(issue)
    ids = set(variants)
    from itertools import combinations
    for size in range(1, len(issue.topics) + 1):
        for mix in combinations(issue.topics, size):
            assert variant_for(issue, matched_briefs(issue, mix)).id in ids
    assert "b1-2-3-4-5" in ids
    # Each variant is a distinct set of briefs.
    assert len({tuple(v.briefs) for v in variants.values()}) == len(variants)


def test_variants_are_shared_and_empty_matches_get_none(issue):
    variants = plan_variants(issue, [{"security"}, {"security"}, {"security", "economy"},
                                     {"unfollowed"}])
    assert list(variants) == ["b2-3-4-5", "b3-5"]


def test_not_personalized_is_one_variant(issue):
    plain = dataclasses.replace(issue, personalize=False)
    assert list(possible_variants(plain)) == ["b1-2-3-4-5"]


# ---- HTML rules --------------------------------------------------------------------------

def test_doctype_and_lang(full, issue, settings):
    assert full.html.startswith("<!doctype html>")
    assert re.search(r'<html[^>]*\blang="en"', full.html)
    korean = settings.model_copy(update={"newsletter": settings.newsletter.model_copy(
        update={"lang": "ko"})})
    html = render_variant(issue, variant_for(issue, issue.briefs), korean, NOW).html
    assert re.search(r'<html[^>]*\blang="ko"', html)


def test_media_queries_keep_important_and_outlook_blocks_survive(full):
    media = re.findall(r"@media[^{]*\{.*?\}\s*\}", full.html, re.DOTALL)
    assert len(media) >= 2 and all("!important" in m for m in media)
    assert "prefers-color-scheme: dark" in full.html
    opened = re.findall(r"<!--\[if [^\]]*\]>", full.html)
    assert len(opened) >= 3 and len(opened) == full.html.count("<![endif]-->")
    assert "<!--[if mso | IE]>" in full.html


def test_css_is_inlined_and_image_widths_untouched(settings, issue):
    brief = brief_with(settings, "Body.", "image:\n  src: https://img.example.org/p.jpg\n"
                                          "  alt: A harbour at dusk\n  caption: Busan\n")
    rendered = render_briefs(issue, settings, brief)
    assert re.search(r'<p style="[^"]*margin', rendered.html)  # .body p rules inlined
    (img,) = re.findall(r"<img[^>]*img\.example\.org[^>]*>", rendered.html)
    assert 'alt="A harbour at dusk"' in img
    # premailer must not rewrite the width MJML computed for the image.
    from dispatch.compose.render import environment
    raw = mjml2html(environment(settings).get_template("email/issue.mjml.j2").render(
        **_html_context(issue, settings, brief)))
    (raw_img,) = re.findall(r"<img[^>]*img\.example\.org[^>]*>", raw)
    assert re.search(r'width="(\d+)"', img)[1] == re.search(r'width="(\d+)"', raw_img)[1]


def _html_context(issue, settings, brief):
    from dispatch.compose.render import _context
    custom = dataclasses.replace(issue, briefs=(brief,))
    return _context(custom, variant_for(custom, custom.briefs), settings, NOW, None)[0]


def test_every_img_needs_alt(settings, issue):
    brief = brief_with(settings, "A chart: ![](https://img.example.org/c.png)")
    with pytest.raises(RenderError, match="image without alt text") as info:
        render_briefs(issue, settings, brief)
    assert info.value.problems[0].path == f"{issue.slug}/b1"


def test_html_over_100kb_is_refused(settings, issue):
    brief = brief_with(settings, "\n\n".join(["A long paragraph of words. " * 40] * 120))
    with pytest.raises(RenderError, match="Gmail clips"):
        render_briefs(issue, settings, brief)


def test_raw_html_is_not_passed_through(settings):
    html = markdown_html('Hello <script>alert(1)</script> <img src=x onerror="y">\n\n'
                         "<div>block</div>", "https://n.example")
    assert "<script>" not in html and "<img" not in html and "<div>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_raw_html_in_a_brief_is_a_located_error(settings):
    from dispatch.errors import ContentError
    with pytest.raises(ContentError) as info:
        brief_with(settings, "Fine.\n\nHello <b>there</b>.")
    (problem,) = info.value.problems
    assert problem.line == 9 and "raw HTML is not allowed" in problem.message


def test_links_are_absolute_and_unsafe_schemes_dropped(settings):
    html = markdown_html("[a](/archive) [b](javascript:alert(1)) [c](mailto:x@example.org)",
                         "https://news.example.org")
    assert 'href="https://news.example.org/archive"' in html
    assert "javascript:" not in html.replace("[b](javascript:alert(1))", "")
    assert 'href="mailto:x@example.org"' in html


def test_premailer_never_fetches_remote_css(settings, tmp_path):
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"p { color: red }")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/remote.css"
        inline_css(f'<html><head><link rel="stylesheet" href="{url}"></head>'
                   "<body><p>x</p></body></html>")
    finally:
        server.shutdown()
    assert hits == []


@pytest.mark.parametrize("damage, message", [
    (lambda h: h.replace("<!doctype html>", ""), "doctype"),
    (lambda h: re.sub(r'lang="en"', 'lang="und"', h), "lang"),
    (lambda h: h.replace("!important", ""), "!important"),
    (lambda h: h.replace("<![endif]-->", "", 1), "Outlook conditional"),
    (lambda h: h.replace("</body>", "{{ name }}</body>"), "unrendered template syntax"),
    (lambda h: h.replace("</body>", '<a href="/relative">x</a></body>'), "not an absolute"),
    (lambda h: h.replace("</body>", '<img src="https://x.example/a.png"></body>'),
     "without alt"),
])
def test_checks_catch_damaged_html(full, settings, damage, message):
    assert check_rendered(full.html, full.text, settings) == []
    problems = check_rendered(damage(full.html), full.text, settings)
    assert any(message in p for p in problems), problems


# ---- plaintext ---------------------------------------------------------------------------

def test_plaintext_rules(full, settings):
    text = fill_slots(full.text, sample_values(settings))
    for line in text.split("\n"):
        assert len(line) <= MAX_TEXT_LINE or "http" in line
    assert not re.search(r"<[a-z/][^>]*>", text)
    assert sample_values(settings)["unsubscribe_url"] in text
    assert "[1] https://example.org/chip-4" in text
    assert "Chip 4 Alliance explained (Example Wire) [1]" in text
    assert "    — Antony Blinken, U.S. Secretary of State, in March" in text
    assert "- North Korea has fired missiles over or toward Japan in recent months.\n- It" in text


def test_plaintext_link_references_continue_across_briefs(settings):
    links: list[str] = []
    first = markdown_text("See [one](https://a.example/1).", "https://n.example", links)
    second = markdown_text("And [two](https://a.example/2).", "https://n.example", links)
    assert first == "See one [1]." and second == "And two [2]."
    assert links == ["https://a.example/1", "https://a.example/2"]
    assert markdown_text("[x](/y)", "https://n.example", links) == "x [3]"
    assert links[-1] == "https://n.example/y"


def test_quote_attribution_both_forms():
    for source in ("> Said it.\n>\n> — A. Person", "> Said it.\n> — A. Person"):
        html = markdown_html(source, "https://n.example")
        assert '<p class="attribution">— A. Person</p>' in html
        assert "<p>Said it.</p>" in html


def test_check_cli_renders_templates(project):
    import subprocess
    import sys
    tpl = project / "templates" / "email"
    tpl.mkdir(parents=True)
    (tpl / "issue.txt.j2").write_text("{{ newsletter.name }} {{ no_such_thing }}\n")
    result = subprocess.run([sys.executable, "-m", "dispatch", "check"], cwd=project,
                            check=False, capture_output=True, text=True)
    assert result.returncode == 1
    assert "no_such_thing" in result.stdout


def test_project_templates_override_packaged(project, settings, issue):
    tpl = project / "templates" / "email"
    tpl.mkdir(parents=True)
    (tpl / "issue.txt.j2").write_text(
        "OUR OWN {{ newsletter.name }}\nUnsubscribe: {{ slots.unsubscribe_url }}\n")
    rendered = render_variant(issue, variant_for(issue, issue.briefs), settings, NOW)
    assert rendered.text.startswith("OUR OWN The Pacific Brief")
