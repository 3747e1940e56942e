"""The judges of issue 15, run on real sent messages: the example issue delivered through the
real path (render, outbox, worker, SMTP) to an aiosmtpd sink, one reader per variant, with a
DKIM key, a Feedback-ID and photos in two briefs. Each test names the third-party tool that
judges: tinycss2, headless Chromium, SpamAssassin, dkimpy, OpenDKIM."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import tinycss2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from dispatch.config import DkimSettings, Settings, load_settings
from dispatch.config.dkim import dkim_key
from dispatch.deliver.messages import DKIM_HEADERS, DKIM_OVERSIGNED, sign_dkim
from dispatch.store.db import open_store
from tests.dkim_dns import OPENDKIM_TESTMSG, opendkim_verify
from tests.helpers import EXAMPLE_ISSUE, ROOT, send_every_variant

IMAGE_HOST = "images.example.net"
# Names run to 200 characters (audience.addresses.MAX_NAME); one word here is longer than a
# line, so it must be cut.
LONG_NAME = ("María-Fernanda de los Ángeles Montenegro y Villaseñor "
             + "Wolfeschlegelsteinhausenbergerdorffwelchevoralternwarengewissenhaftschaferswessen"
             + " Anastasia Konstantinovna Dobrovolskaya-Rimskaya Petrovna-Ivanova-Sidorova")[:200]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium and chromium-driver are not "
    "installed (tests/install-services.sh installs them)")


@dataclass(frozen=True)
class Sent:
    settings: Settings
    messages: dict[str, bytes]  # variant id → the bytes the sink received
    dns: dict[bytes, bytes]  # DKIM TXT records by name
    now: datetime  # when it was launched

    def parsed(self, vid: str) -> EmailMessage:
        message = message_from_bytes(self.messages[vid], policy=policy.default)
        assert isinstance(message, EmailMessage)
        return message

    def html(self, vid: str) -> str:
        return str(self.parsed(vid).get_body(("html",)).get_content())  # type: ignore[union-attr]

    def text(self, vid: str) -> str:
        return str(self.parsed(vid).get_body(("plain",)).get_content())  # type: ignore[union-attr]


def _keys(folder: Path) -> dict[bytes, bytes]:
    """An RSA and an Ed25519 key pair: private keys in folder, TXT records returned."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (folder / "rsa.pem").write_bytes(rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    rsa_public = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    (folder / "ed25519.pem").write_bytes(ed_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    ed_public = ed_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                 serialization.PublicFormat.Raw)
    return {b"news._domainkey.example.org.":
            b"v=DKIM1; k=rsa; p=" + base64.b64encode(rsa_public),
            b"news-ed._domainkey.example.org.":
            b"v=DKIM1; k=ed25519; p=" + base64.b64encode(ed_public)}


def _with_photos(issues: Path) -> None:
    """A lead photo on brief 2 and a photo inside brief 3's body, both on IMAGE_HOST."""
    folder = issues / EXAMPLE_ISSUE
    chip = folder / "02-chip-cooperation.md"
    chip.write_text(chip.read_text().replace(
        "reads:", f"image:\n  src: https://{IMAGE_HOST}/yokohama.jpg\n  alt: The site in "
        "Yokohama\n  caption: The research site\n  credit: Example Photo\nreads:", 1))
    missile = folder / "03-missile-warnings.md"
    missile.write_text(missile.read_text().rstrip() + f"\n\n![A radar dish at dusk]"
                       f"(https://{IMAGE_HOST}/radar.jpg)\n")


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory) -> Sent:
    project = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "config.toml", project / "config.toml")
    shutil.copytree(ROOT / "issues", project / "issues")
    _with_photos(project / "issues")
    # Scheduled for another day than today: the masthead must still say today.
    toml = project / "issues" / EXAMPLE_ISSUE / "issue.toml"
    toml.write_text(re.sub(r'(?m)^send_at = .*$', 'send_at = "2031-03-14T07:00 Asia/Seoul"',
                           toml.read_text()))
    dns = _keys(project)
    settings = load_settings(project / "config.toml")
    settings = settings.model_copy(update={
        "dkim": DkimSettings(domain="example.org", selector="news",
                             key_file=project / "rsa.pem"),
        "delivery": settings.delivery.model_copy(update={"feedback_id": "pacific-brief"})})
    engine = open_store(f"sqlite:///{project / 'store.db'}")
    try:
        now = datetime.now(UTC)  # launched now: the rows are due at once
        messages = send_every_variant(engine, settings, now, name=LONG_NAME)
    finally:
        engine.dispose()
    return Sent(settings, messages, dns, now)


# ---- CSS and remote resources ----------------------------------------------------------

def _parse_errors(nodes: list[object]) -> list[str]:
    errors = []
    for node in nodes:
        if isinstance(node, tinycss2.ast.ParseError):
            errors.append(f"line {node.source_line}: {node.message}")
        elif isinstance(node, (tinycss2.ast.QualifiedRule, tinycss2.ast.AtRule)) and node.content:
            errors += _parse_errors(tinycss2.parse_blocks_contents(node.content))
        elif isinstance(node, tinycss2.ast.Declaration):
            errors += [f"line {v.source_line}: {v.message}" for v in node.value
                       if isinstance(v, tinycss2.ast.ParseError)]
    return errors


def test_every_style_block_of_every_sent_variant_parses_as_css(sent: Sent):
    for vid in sent.messages:
        html = sent.html(vid)
        blocks = re.findall(r"<style\b[^>]*>(.*?)</style>", html, re.DOTALL)
        assert len(blocks) >= 3, vid
        for block in blocks:
            errors = _parse_errors(tinycss2.parse_stylesheet(block, skip_comments=True,
                                                             skip_whitespace=True))
            assert errors == [], f"{vid}: {errors} in\n{block}"
            assert "&#" not in block and "&quot;" not in block, f"{vid}: HTML escapes in CSS"
        # The intended sans stack reaches the CSS intact.
        assert "font-family: -apple-system, BlinkMacSystemFont, 'Segoe UI'" in html
        assert not re.search(r"fonts\.googleapis|@import|<link\b|Roboto", html), vid


@needs_chromium
def test_opening_any_variant_in_chromium_requests_nothing_but_the_briefs_images(
        sent: Sent, tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=800,1200",
                     # Nothing resolves: a request is logged, never leaves the machine.
                     "--host-resolver-rules=MAP * ~NOTFOUND"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    seen: dict[str, set[str]] = {}
    try:
        for vid in sent.messages:
            page = tmp_path / f"{vid}.html"
            page.write_text(sent.html(vid), encoding="utf-8")
            browser.get_log("performance")  # drop what came before
            browser.get(page.as_uri())
            browser.execute_script("return document.readyState")
            requests = [json.loads(entry["message"])["message"]
                        for entry in browser.get_log("performance")]
            urls = {m["params"]["request"]["url"] for m in requests
                    if m["method"] == "Network.requestWillBeSent"}
            seen[vid] = {urlsplit(u).hostname or "" for u in urls
                         if not u.startswith("file:")}
    finally:
        browser.quit()
    for vid, hosts in seen.items():
        assert hosts <= {IMAGE_HOST}, f"{vid} fetched from {hosts - {IMAGE_HOST}}"
    # The log works: a variant with a photo did request it.
    assert seen["b1-2-3-4-5"] == {IMAGE_HOST}




def test_every_image_is_as_wide_as_its_column_in_pixels(sent: Sent):
    """Outlook for Windows sizes images by the width attribute: the 592 px column (640 less
    24 px padding each side), a whole number; height="auto" is no valid attribute."""
    images = {vid: re.findall(r"<img\b[^>]*>", sent.html(vid)) for vid in sent.messages}
    assert len(images["b1-2-3-4-5"]) == 2  # the lead photo and the one in a brief's body
    for vid, tags in images.items():
        for tag in tags:
            assert re.search(r'\swidth="592"', tag), f"{vid}: {tag}"
            assert not re.search(r'\sheight="(?!\d+")', tag), f"{vid}: {tag}"


# ---- SpamAssassin ----------------------------------------------------------------------

SPAM_LIMIT = 0.5


@pytest.mark.skipif(not shutil.which("spamassassin"), reason="Debian's spamassassin is not "
                    "installed (tests/install-services.sh installs it)")
def test_spamassassin_scores_every_sent_variant_at_most_half_a_point(sent: Sent, tmp_path):
    """`spamassassin -L -t`: local tests only (no DNS, no network), the report appended."""
    def judge(data: bytes) -> tuple[float, list[str]]:
        result = subprocess.run(["spamassassin", "-L", "-t"], input=data, capture_output=True,
                                timeout=300, check=True, env={"HOME": str(tmp_path),
                                                              "PATH": "/usr/bin:/bin"})
        report = result.stdout.decode("utf-8", "replace")
        score = re.search(r"Content analysis details:\s+\((-?[\d.]+) points", report)
        assert score, report[-2000:]
        rules = re.findall(r"(?m)^\s*(-?\d+\.\d+)\s+([A-Z][A-Z0-9_]+)\s", report)
        return float(score[1]), [f"{name} {points}" for points, name in rules]

    with ThreadPoolExecutor(2) as pool:  # each run is mostly Perl compiling its rules
        scores = dict(zip(sent.messages, pool.map(judge, sent.messages.values()), strict=True))
    print("\nSpamAssassin: " + ", ".join(f"{vid} {s:.1f}" for vid, (s, _) in scores.items()))
    failing = {vid: hit for vid, hit in scores.items() if hit[0] > SPAM_LIMIT}
    assert not failing, f"scored over {SPAM_LIMIT}: {failing}"




# ---- DKIM ------------------------------------------------------------------------------

needs_opendkim = pytest.mark.skipif(
    not (OPENDKIM_TESTMSG and shutil.which("unshare") and shutil.which("ip")),
    reason="opendkim-testmsg (Debian's opendkim-tools, tests/install-services.sh installs it), "
           "unshare or ip missing")


def _dkimpy(sent: Sent, data: bytes) -> bool:
    import dkim

    return bool(dkim.verify(data, dnsfunc=lambda name, timeout=5: sent.dns.get(name)))


def _h_tag(data: bytes) -> list[str]:
    header = data.split(b"\r\n\r\n", 1)[0].decode()
    signature = re.search(r"^DKIM-Signature:(.*?)\r\n(?=\S)", header, re.S | re.M)
    assert signature, header
    h = re.search(r"\bh=([^;]*)", re.sub(r"\s+", "", signature[1]))
    assert h
    return h[1].lower().split(":")


def _tampered(data: bytes) -> dict[str, bytes]:
    """What someone between us and the reader might do: prepend a second copy of a header
    (clients show the first), or change one we set."""
    changes = {f"prepended {name}": f"{name}: {value}\r\n".encode() + data for name, value in (
        ("Subject", "Your account is locked"), ("From", "Bank <alerts@bank.example>"),
        ("To", "someone@example.net"),
        ("List-Unsubscribe", "<https://evil.example/u>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))}
    changes["changed Reply-To"] = data.replace(b"Reply-To: editors@example.org",
                                               b"Reply-To: thief@evil.example", 1)
    changes["changed Feedback-ID"] = re.sub(rb"Feedback-ID: \S+", b"Feedback-ID: a:b:c:evil",
                                            data, count=1)
    assert all(changed != data for changed in changes.values())
    return changes


def test_every_sent_variant_signs_the_header_set_and_oversigns(sent: Sent):
    for vid, data in sent.messages.items():
        h = _h_tag(data)
        for name in DKIM_HEADERS:
            assert name.decode() in h, f"{vid}: {name!r} not signed"
        for name in ("from", "subject", "to", "list-unsubscribe", "list-unsubscribe-post"):
            assert h.count(name) == 2, f"{vid}: {name} not oversigned: {h}"
        assert {n.encode() for n in h if h.count(n) == 2} == DKIM_OVERSIGNED
        assert b"\r\nReply-To: " in data and b"\r\nFeedback-ID: " in data


def test_dkimpy_verifies_every_sent_variant_and_refuses_every_tampering(sent: Sent):
    for vid, data in sent.messages.items():
        assert _dkimpy(sent, data), vid
    for change, data in _tampered(sent.messages["b1-2-3-4-5"]).items():
        assert not _dkimpy(sent, data), f"{change} still verifies"


@needs_opendkim
def test_opendkim_verifies_every_sent_variant_and_refuses_every_tampering(sent: Sent,
                                                                         tmp_path: Path):
    tampered = _tampered(sent.messages["b1-2-3-4-5"])
    results = opendkim_verify(sent.dns, [*sent.messages.values(), *tampered.values()], tmp_path)
    genuine, forged = results[:len(sent.messages)], results[len(sent.messages):]
    assert genuine == [(0, "")] * len(sent.messages), dict(zip(sent.messages, genuine,
                                                              strict=True))
    for change, (status, output) in zip(tampered, forged, strict=True):
        assert status != 0, f"{change} still verifies ({output})"


def test_ed25519_signatures_verify_with_dkimpy_and_opendkim(sent: Sent, tmp_path: Path):
    """RFC 8463: the same message signed with an Ed25519 key (the PEM `openssl genpkey`
    writes), as Messages signs it when [dkim] key_file holds one."""
    key = dkim_key((sent.settings.root / "ed25519.pem").read_bytes())
    assert key.algorithm == b"ed25519-sha256"
    unsigned = sent.messages["b1-2-3-4-5"].split(b"\r\n", 1)[1]
    unsigned = unsigned[re.search(rb"(?m)^(?![ \t])", unsigned).start():]  # type: ignore[union-attr]
    assert not unsigned.startswith(b"DKIM-Signature")
    signed = sign_dkim(unsigned, b"news-ed", b"example.org", key)
    assert b"a=ed25519-sha256" in signed.split(b"\r\n\r\n", 1)[0]
    assert _dkimpy(sent, signed)
    assert not _dkimpy(sent, b"Subject: Re: hi\r\n" + signed)
    if OPENDKIM_TESTMSG and shutil.which("unshare"):
        assert opendkim_verify(sent.dns, [signed], tmp_path) == [(0, "")]


# ---- Plaintext -------------------------------------------------------------------------

def test_plaintext_lines_fit_76_columns_with_the_longest_name_and_real_urls(sent: Sent):
    assert len(LONG_NAME) == 200
    longest = {}
    for vid in sent.messages:
        text = sent.text(vid)
        lines = text.splitlines()
        longest[vid] = max(len(line) for line in lines)
        assert longest[vid] <= 76, [line for line in lines if len(line) > 76]
        # The whole name is there, wrapped; so are the reader's own links, each on its line.
        greeting = re.search(r"^Hi (.*?),\r?\n\r?\n", text, re.S | re.M)
        assert greeting and "".join(greeting[1].split()) == "".join(LONG_NAME.split())
        for path in ("/u/", "/p/", f"/a/{EXAMPLE_ISSUE}/{vid}"):
            assert any(re.fullmatch(rf"https://news\.example\.org{path}\S*", line)
                       for line in lines), path
        # Each title's underline is exactly as long as the title's longest line.
        for number, line in enumerate(lines):
            if line and set(line) == {"-"} and number and lines[number - 1]:
                title = []
                back = number - 1
                while back >= 0 and lines[back]:
                    title.insert(0, lines[back])
                    back -= 1
                assert len(line) == max(map(len, title)), (vid, title, line)
    print(f"\nlongest plaintext line per variant: {longest}")


# ---- The masthead date -----------------------------------------------------------------

def test_the_masthead_says_the_day_the_issue_went_out_in_the_editors_zone(sent: Sent):
    """The issue.toml plans 14 March 2031; it was sent today: the masthead says today, as
    the Date header does, both read in the editors' zone (Asia/Seoul)."""
    from email.utils import parsedate_to_datetime
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(sent.settings.newsletter.timezone)
    for vid in sent.messages:
        sent_on = parsedate_to_datetime(str(sent.parsed(vid)["Date"])).astimezone(zone).date()
        expected = f"{sent_on:%A}, {sent_on.day} {sent_on:%B %Y}"
        assert sent.text(vid).splitlines()[1] == expected, vid
        assert expected.upper() in sent.html(vid), vid
        assert "2031" not in sent.text(vid)


# ---- Accessibility ---------------------------------------------------------------------

# For every visible element with text of its own: its colour's contrast ratio (WCAG 2.x)
# against the first opaque background behind it, as Chromium computes both.
CONTRAST_JS = """
function lum(c) {
  const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map(v => {
    v = v / 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}
function opaque(c) { const p = c.match(/[\\d.]+/g); return p && (p.length < 4 || +p[3] > 0.5); }
const worst = [];
for (const el of document.body.querySelectorAll('*')) {
  const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  if (!own || !el.getClientRects().length || el.closest('.preheader')) continue;
  const style = getComputedStyle(el);
  if (style.visibility === 'hidden' || style.display === 'none') continue;
  let bg = 'rgb(255, 255, 255)';
  for (let a = el; a; a = a.parentElement) {
    const c = getComputedStyle(a).backgroundColor;
    if (opaque(c)) { bg = c; break; }
  }
  const [l1, l2] = [lum(style.color), lum(bg)].sort((x, y) => y - x);
  worst.push([(l1 + 0.05) / (l2 + 0.05), el.tagName, style.color, bg,
              el.textContent.trim().slice(0, 40)]);
}
worst.sort((x, y) => x[0] - y[0]);
return worst.slice(0, 3);
"""


@needs_chromium
def test_structure_and_text_contrast_in_light_and_dark(sent: Sent, tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    for vid in sent.messages:
        html = sent.html(vid)
        title = re.search(r"<title>([^<]*)</title>", html)
        assert title and title[1].strip(), vid
        tables = re.findall(r"<table\b[^>]*>", html)
        assert tables and all('role="presentation"' in t for t in tables), vid
        briefs = len(vid[1:].split("-"))
        assert len(re.findall(r"<h1\b", html)) == 1, vid
        assert len(re.findall(r"<h2\b", html)) == briefs, vid
        targets = re.findall(r'href="#([^"]+)"', html)
        assert len(targets) == briefs and all(f'id="{t}"' in html for t in targets), vid

    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=800,1200",
                     "--host-resolver-rules=MAP * ~NOTFOUND"):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    lowest: dict[str, float] = {}
    try:
        for scheme in ("light", "dark"):
            browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {
                "features": [{"name": "prefers-color-scheme", "value": scheme}]})
            for vid in sent.messages:
                page = tmp_path / f"{vid}.html"
                page.write_text(sent.html(vid), encoding="utf-8")
                browser.get(page.as_uri())
                worst = browser.execute_script(CONTRAST_JS)
                assert worst[0][0] >= 4.5, f"{scheme} {vid}: {worst}"
                lowest[scheme] = min(lowest.get(scheme, 99.0), worst[0][0])
                if scheme == "dark":  # no light band: the page itself is dark
                    body = browser.execute_script(
                        "return getComputedStyle(document.body).backgroundColor")
                    assert body == "rgb(28, 28, 30)", f"{vid}: {body}"
    finally:
        browser.quit()
    print(f"\nlowest text contrast: {lowest}")
