"""The MIME message a recipient receives: headers, structure, encoding, personalisation."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email import policy

import pytest

from dispatch.audience.tokens import Signer
from dispatch.compose.issues import load_issue
from dispatch.compose.message import (
    Recipient,
    build_template,
    message_id,
    personalize,
    template_from_parts,
)
from dispatch.compose.render import render_variant
from dispatch.compose.slots import fill_slots
from dispatch.compose.variants import variant_for
from dispatch.errors import RenderError
from tests.helpers import EXAMPLE_ISSUE

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


@pytest.fixture
def parts(settings):
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    rendered = render_variant(issue, variant_for(issue, issue.briefs), settings, NOW)
    return issue, rendered, build_template(rendered, issue, settings)


def recipient(settings, name: str | None = "Ana Reader", **overrides) -> Recipient:
    base = "https://news.example.org"
    fields = {"email": "ana@example.com", "name": name,
              "unsubscribe_url": f"{base}/u/tok_ABC-123.xyz=",
              "preferences_url": f"{base}/p/tok_ABC-123.xyz=?a=1&b=2",
              "view_url": f"{base}/a/issue/b1",
              "unsubscribe_address": "u-1-abcdefghijklmnop@bounces.example.org",
              "message_id": message_id("i", "0f" * 16, settings)}
    fields.update(overrides)
    return Recipient(**fields)


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=policy.default)


def test_structure_text_first_html_last_utf8_qp(parts, settings):
    _issue, _rendered, template = parts
    msg = parse(personalize(template, recipient(settings), NOW, settings))
    assert msg.get_content_type() == "multipart/alternative"
    plain, html = msg.get_payload()
    assert plain.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
    for part in (plain, html):
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert not msg.defects and not plain.defects and not html.defects


def test_bodies_decode_to_the_rendered_variant_with_fields_filled(parts, settings):
    _issue, rendered, template = parts
    r = recipient(settings, name='Zoë "Z" <script>', topics=("East Asia", "Economy & Trade"))
    msg = parse(personalize(template, r, NOW, settings))
    plain, html = msg.get_payload()
    values = {"name": r.name, "topics": "East Asia, Economy & Trade",
              "unsubscribe_url": r.unsubscribe_url,
              "preferences_url": r.preferences_url, "view_url": r.view_url}
    text_body = plain.get_content().replace("\r\n", "\n")
    assert text_body == fill_slots(rendered.text, values)
    import html as html_lib
    escaped = {k: html_lib.escape(v, quote=True) for k, v in values.items()}
    assert html.get_content().replace("\r\n", "\n") == fill_slots(rendered.html, escaped)
    assert "Zoë &quot;Z&quot; &lt;script&gt;" in html.get_content()
    assert "follow East Asia, Economy &amp; Trade." in html.get_content()
    assert "follow:\nEast Asia, Economy & Trade.\n" in text_body
    assert "p/tok_ABC-123.xyz=?a=1&amp;b=2" in html.get_content()


def test_required_headers(parts, settings):
    issue, _rendered, template = parts
    r = recipient(settings)
    raw = personalize(template, r, NOW, settings)
    msg = parse(raw)
    for name in ("Date", "From", "To", "Subject", "Message-ID", "MIME-Version", "List-Id",
                 "List-Unsubscribe", "List-Unsubscribe-Post"):
        assert msg[name], name
    assert msg["Subject"] == issue.subject
    assert msg["To"].addresses[0].addr_spec == "ana@example.com"
    assert msg["From"].addresses[0].addr_spec == settings.newsletter.from_email
    assert msg["Message-ID"] == r.message_id and r.message_id.endswith("@example.org>")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Date"].datetime == NOW
    unsub = raw.split(b"List-Unsubscribe: ")[1].split(b"\r\nList-Unsubscribe-Post")[0]
    assert b"=?" not in unsub  # never folded into encoded words
    assert unsub == (b"<https://news.example.org/u/tok_ABC-123.xyz=>,\r\n "
                     b"<mailto:u-1-abcdefghijklmnop@bounces.example.org?subject=unsubscribe>")
    # Without an inbound domain there is no mailto: never the editors' inbox.
    raw = personalize(template, recipient(settings, unsubscribe_address=""), NOW, settings)
    assert b"List-Unsubscribe: <https://news.example.org/u/tok_ABC-123.xyz=>\r\n" in raw


def test_line_rules(parts, settings):
    _issue, _rendered, template = parts
    long_url = "https://news.example.org/u/" + "x" * 300
    raw = personalize(template, recipient(settings, unsubscribe_url=long_url), NOW, settings)
    lines = raw.split(b"\r\n")
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    assert max(map(len, lines)) <= 998
    _head, _, body = raw.partition(b"\r\n\r\n")
    assert max(len(line) for line in body.split(b"\r\n")) <= 76  # RFC 2045 QP lines
    assert not any(line.startswith(b".") for line in lines)  # no dot-stuffing needed
    assert long_url in parse(raw).get_payload()[0].get_content()


def test_non_ascii_names_and_subjects_are_encoded(parts, settings):
    import dataclasses
    issue, rendered, _ = parts
    korean = dataclasses.replace(issue, subject="서울과 도쿄, 몇 년 만에 가장 가까워지다")
    template = build_template(rendered, korean, settings)
    raw = personalize(template, recipient(settings, name="김민지"), NOW, settings)
    assert raw.isascii()
    msg = parse(raw)
    assert msg["Subject"] == korean.subject
    assert msg["To"].addresses[0].display_name == "김민지"


def test_personalize_uses_no_name_fallback(parts, settings):
    _issue, _rendered, template = parts
    msg = parse(personalize(template, recipient(settings, name=None), NOW, settings))
    assert "Hi there," in msg.get_payload()[0].get_content()
    assert msg["To"] == "ana@example.com"


def test_message_ids_are_keyed_stable_per_recipient_and_unguessable(settings):
    signer, other = Signer("secret-one"), Signer("secret-two")
    assert signer.digest("message-id", "i\0a") == signer.digest("message-id", "i\0a")
    assert signer.digest("message-id", "i\0a") != signer.digest("message-id", "i\0b")
    # Without the secret the same pair gives another id: nobody can compute ours.
    assert signer.digest("message-id", "i\0a") != other.digest("message-id", "i\0a")
    assert message_id("i", "ab12", settings) == "<i.ab12@example.org>"


@pytest.mark.parametrize("field, value, header", [
    ("subject", "Hi\r\nBcc: all@example.org\r\nX-Injected: yes", "Subject header"),
    ("subject", "Hi\x85there", "Subject header"),
    ("slug", "thaw\r\nBcc: all@example.org", "X-Dispatch-Issue header"),
])
def test_the_message_builder_refuses_control_characters_in_headers(parts, settings, field,
                                                                   value, header):
    # The last line of defence, for a subject that did not come through load_issue (one
    # stored by an older version, say): no extra header line is ever written.
    _, rendered, _ = parts
    args = {"subject": "Hi", "slug": "thaw"} | {field: value}
    with pytest.raises(RenderError) as info:
        template_from_parts("b1", rendered.html, rendered.text, args["subject"], args["slug"],
                            settings)
    (problem,) = info.value.problems
    assert problem.path == header and "control character" in problem.message
    assert "\r" not in str(problem) and "\n" not in str(problem)


def test_a_non_ascii_local_part_gets_a_utf8_to_header_and_the_envelope_stays_utf8(parts,
                                                                                  settings):
    from dispatch.compose.message import envelope_sender, needs_smtputf8, wire_address

    _issue, _rendered, template = parts
    raw = personalize(template, recipient(settings, name="José", email="josé@example.com"),
                      NOW, settings)
    assert 'To: "José" <josé@example.com>\r\n'.encode() in raw  # RFC 6532: as it is
    assert needs_smtputf8("josé@example.com") and not needs_smtputf8("ann@bücher.example")
    assert wire_address("ann@bücher.example") == "ann@xn--bcher-kva.example"
    assert wire_address("josé@bücher.example") == "josé@bücher.example"  # SMTPUTF8 carries it
    verp = settings.model_copy(update={"delivery": settings.delivery.model_copy(
        update={"verp_domain": "bounces.example.org"})})
    assert envelope_sender(verp, "b-1-token") == "b-1-token@bounces.example.org"
    assert envelope_sender(settings, "b-1-token") == "briefs@example.org"


@pytest.mark.parametrize("name", ["Evil\r\nBcc: x@example.net", "Tab\there", "Bell\x07"])
def test_a_name_no_header_may_carry_is_refused(parts, settings, name):
    _issue, _rendered, template = parts
    with pytest.raises(ValueError, match="control character in the display name"):
        personalize(template, recipient(settings, name=name), NOW, settings)


def test_a_name_that_looks_like_an_encoded_word_reads_back_as_written(parts, settings):
    from email.header import decode_header, make_header

    _issue, _rendered, template = parts
    raw = personalize(template, recipient(settings, name="=?utf-8?q?Admin?="), NOW, settings)
    to = email.message_from_bytes(raw, policy=policy.compat32)["To"]
    assert str(make_header(decode_header(to.rpartition(" <")[0]))) == "=?utf-8?q?Admin?="
