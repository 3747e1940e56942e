"""MIME messages: a variant is serialised once into byte chunks around per-recipient slots, and
each recipient's message is those chunks joined with their own values (a few µs, no re-render).

The bodies are quoted-printable with CRLF line ends. Every slot stands on a line of its own
between QP soft line breaks, so a substituted value is encoded and wrapped on its own and a
soft break can never split a token. Lines that would start with "." are written "=2E…", so no
line of a message starts with a dot and SMTP dot-stuffing has nothing to do.
"""

from __future__ import annotations

import base64
import hashlib
import html as html_lib
import re
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.quoprimime import body_encode
from email.utils import format_datetime
from functools import lru_cache

from dispatch.compose.briefs import slugify
from dispatch.compose.models import Issue
from dispatch.compose.render import Rendered
from dispatch.compose.slots import TOKEN_PATTERN, TOKENS, plain_value, topic_list
from dispatch.config import Settings
from dispatch.errors import Problem, RenderError
from dispatch.text import header_problem

CRLF = "\r\n"
QP_LINE = 74  # leaves room to write a leading "." as "=2E" within RFC 2045's 76
_SLOT_OF_TOKEN = {token: name for name, token in TOKENS.items()}
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9 .'_-]*$")
# delivery.relay_metadata: the header each relay reads metadata from (and strips), around the
# row token; the key is dispatch.inbound.webhooks.ROW_KEY.
RELAY_METADATA = {
    "postmark": ("X-PM-Metadata-dispatch-row: ", ""),
    "mailgun": ('X-Mailgun-Variables: {"dispatch-row": "', '"}'),
    "sendgrid": ('X-SMTPAPI: {"unique_args": {"dispatch-row": "', '"}}'),
}


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str | None
    unsubscribe_url: str
    preferences_url: str
    view_url: str
    message_id: str  # "<…@domain>"
    topics: tuple[str, ...] = ()  # the labels of the topics they follow, for the footer
    confirm_url: str = ""  # only in a double opt-in confirmation
    # The List-Unsubscribe mailto address on the inbound domain (a signed token for the row,
    # read by dispatch.inbound); "" without an inbound domain: the https link alone.
    unsubscribe_address: str = ""


@dataclass(frozen=True)
class MessageTemplate:
    """A variant's message as chunks around slots: chunks[0] slot[0] chunks[1] … chunks[-1]."""

    variant_id: str
    chunks: tuple[bytes, ...]
    slots: tuple[str, ...]  # "date", "to", "message_id", "list_unsubscribe", "text:name", …


_QP_SAFE = re.compile(r"[!-<>-~]([ -<>-~]{0,72}[!-<>-~])?")  # printable ASCII but "="


def qp(text: str) -> str:
    """Quoted-printable with CRLF lines of at most 76 octets, no line starting with "."."""
    if _QP_SAFE.fullmatch(text) and text[0] != ".":
        return text  # already valid QP: the per-recipient fast path
    # body_encode works on one character per octet, so hand it the UTF-8 bytes as latin-1.
    encoded = body_encode(text.encode("utf-8").decode("latin-1"), maxlinelen=QP_LINE, eol=CRLF)
    return re.sub(r"(?m)^\.", "=2E", encoded)


def _safe(name: str, value: str) -> str:
    """`value`, refused if it holds a control character: a CR or LF would start a header line
    of its own. Inputs are checked where they enter (issue.toml, briefs, names); this is the
    last line of defence, for values that arrive some other way (an old stored subject)."""
    problem = header_problem(value)
    if problem:
        raise RenderError(Problem(f"{name} header", f"{value!r} {problem}"))
    return value


def _header(name: str, value: str) -> str:
    """One header line, folded by the email policy (non-ASCII becomes encoded words)."""
    return policy.SMTP.header_factory(name, _safe(name, value)).fold(policy=policy.SMTP)


def _address(name: str | None, email: str) -> str:
    if not name:
        return email
    if _PLAIN_NAME.match(name):
        return f'"{name}" <{email}>'
    return str(Address(display_name=name, addr_spec=email))


def needs_smtputf8(email: str) -> bool:
    """Whether an address can only be sent with SMTPUTF8 (RFC 6531): a non-ASCII local part.
    A non-ASCII domain alone goes out as its IDNA (xn--) form."""
    return not email.rpartition("@")[0].isascii()


def wire_address(email: str) -> str:
    """The address as written in RCPT TO and the To header: the domain in its IDNA form
    when only the domain is non-ASCII; unchanged otherwise."""
    local, _, domain = email.rpartition("@")
    if domain.isascii() or not local.isascii():
        return email
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError as exc:
        raise ValueError(f"the domain {domain!r} has no IDNA form: {exc}") from None


def _quoted(name: str) -> str:
    """An RFC 5322 quoted-string (UTF-8 inside is allowed by RFC 6532 under SMTPUTF8)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _encoded_words(text: str, chunk: int = 45) -> str:
    """RFC 2047 "B" encoded words of at most 75 characters (45 octets of UTF-8 each, cut
    between characters), folded one per line: whitespace between them is not part of the
    text, so the name reads back exactly."""
    words, current = [], b""
    for char in text:
        octets = char.encode("utf-8")
        if len(current) + len(octets) > chunk:
            words.append(current)
            current = b""
        current += octets
    words.append(current)
    return f"{CRLF} ".join(f"=?utf-8?b?{base64.b64encode(w).decode('ascii')}?=" for w in words)


def _to_value(name: str | None, email: str, utf8: bool = False) -> str:
    """The To header's value (without "To: " and the final CRLF), folded to short lines. A
    display name is a quoted string when it is ASCII (or when the message goes out with
    SMTPUTF8, which carries UTF-8 headers as they are), else RFC 2047 encoded words; a name
    that merely looks like an encoded word is encoded too, so it reads back as written.
    ValueError for a name or address no header may carry (line breaks, control characters)."""
    for text, what in ((name or "", "the display name"), (email, "the address")):
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise ValueError(f"control character in {what}")
    if not name:
        return email
    if utf8 or (name.isascii() and "=?" not in name):
        display = _quoted(name)
    else:
        display = _encoded_words(name)
    first_line = 4 + len(display.split(CRLF)[-1]) + 2 + len(email)
    return f"{display}{CRLF} <{email}>" if first_line > 78 else f"{display} <{email}>"


@lru_cache(maxsize=4)
def _date(now: datetime) -> bytes:
    return format_datetime(now).encode("ascii")


def list_id(settings: Settings) -> str:
    domain = settings.newsletter.from_email.rpartition("@")[2]
    return f"{slugify(settings.newsletter.name)}.{domain}"


def _body_part(kind: str, content: str, boundary: str) -> list[str | tuple[str]]:
    """A MIME part as literal strings and (slot,) markers."""
    pieces: list[str | tuple[str]] = [
        f"--{boundary}{CRLF}Content-Type: text/{kind}; charset=\"utf-8\"{CRLF}"
        f"Content-Transfer-Encoding: quoted-printable{CRLF}{CRLF}"]
    position = 0
    for match in TOKEN_PATTERN.finditer(content):
        pieces.append(qp(content[position:match.start()]) + "=" + CRLF)
        pieces.append((f"{kind}:{_SLOT_OF_TOKEN[match[0]]}",))
        pieces.append("=" + CRLF)
        position = match.end()
    pieces.append(qp(content[position:]) + CRLF)
    return pieces


def build_template(rendered: Rendered, issue: Issue, settings: Settings) -> MessageTemplate:
    """Serialise a rendered variant once, leaving the per-recipient slots open."""
    return template_from_parts(rendered.variant.id, rendered.html, rendered.text,
                               issue.subject, issue.slug, settings)


def template_from_parts(variant_id: str, html: str, text: str, subject: str, slug: str,
                        settings: Settings) -> MessageTemplate:
    """build_template from stored parts: what a worker uses for a variant rendered at launch."""
    nl = settings.newsletter
    digest = hashlib.sha256((html + text).encode()).hexdigest()[:24]
    boundary = f"=_dispatch_{digest}"  # "=_" never occurs in quoted-printable output
    headers: list[str | tuple[str]] = [
        "Date: ", ("date",), CRLF,
        _header("From", _address(nl.from_name, nl.from_email)),
        "To: ", ("to",), CRLF,
        _header("Subject", subject),
        "Message-ID: ", ("message_id",), CRLF,
        "MIME-Version: 1.0" + CRLF,
        _header("List-Id", f"{nl.name} <{list_id(settings)}>"),
        # Written by hand: the email policy would fold a long List-Unsubscribe into encoded
        # words, which breaks one-click unsubscribe in mailbox providers.
        "List-Unsubscribe: ", ("list_unsubscribe",), CRLF,
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click" + CRLF,
    ]
    if nl.reply_to:
        headers.append(_header("Reply-To", nl.reply_to))
    if settings.delivery.feedback_id:
        headers.append(_header("Feedback-ID", f"{slug}:{variant_id}:"
                                              f"{settings.delivery.feedback_id}"))
    relay = settings.delivery.relay_metadata
    if relay and settings.delivery.verp_domain:
        # The row's signed token as metadata the relay hands back in its webhooks
        # (dispatch.inbound.webhooks): the only thing Postmark's bounce events echo.
        before, after = RELAY_METADATA[relay]
        headers += [before, ("row_token",), after + CRLF]
    headers += [
        f"X-Dispatch-Issue: {_safe('X-Dispatch-Issue', slug)}{CRLF}"
        f"X-Dispatch-Variant: {_safe('X-Dispatch-Variant', variant_id)}{CRLF}",
        f"Content-Type: multipart/alternative;{CRLF} boundary=\"{boundary}\"{CRLF}{CRLF}",
        f"This is a multi-part message in MIME format.{CRLF}",
    ]
    pieces = headers + _body_part("plain", text, boundary) + _body_part(
        "html", html, boundary) + [f"--{boundary}--{CRLF}"]

    chunks: list[bytes] = []
    slots: list[str] = []
    current: list[str] = []
    for piece in pieces:
        if isinstance(piece, tuple):
            chunks.append("".join(current).encode("ascii"))
            slots.append(piece[0])
            current = []
        else:
            current.append(piece)
    chunks.append("".join(current).encode("ascii"))
    return MessageTemplate(variant_id=variant_id, chunks=tuple(chunks),
                           slots=tuple(slots))


def unsubscribe_mailto(address: str) -> str:
    return f"mailto:{address}?subject=unsubscribe"


def recipient_fields(recipient: Recipient) -> dict[str, str]:
    """The text of each body slot for one recipient (compose.slots.SLOTS): what delivery
    encodes into the message and previews fill in."""
    fields = {"name": recipient.name or "there", "topics": topic_list(recipient.topics),
              "unsubscribe_url": recipient.unsubscribe_url,
              "preferences_url": recipient.preferences_url, "view_url": recipient.view_url}
    if recipient.confirm_url:
        fields["confirm_url"] = recipient.confirm_url
    return fields


def slot_values(recipient: Recipient, now: datetime, settings: Settings) -> dict[str, bytes]:
    """Each slot's bytes for one recipient, encoded for where the slot stands. The To header
    is UTF-8 as it is when the address needs SMTPUTF8 (RFC 6532), ASCII otherwise."""
    utf8 = needs_smtputf8(recipient.email)
    values = {
        "date": _date(now),
        "to": _to_value(recipient.name, wire_address(recipient.email), utf8).encode(
            "utf-8" if utf8 else "ascii"),
        "message_id": recipient.message_id.encode("ascii"),
        "list_unsubscribe": _list_unsubscribe(recipient).encode("ascii"),
        "row_token": recipient.unsubscribe_address.rpartition("@")[0].encode("ascii"),
    }
    for field, value in recipient_fields(recipient).items():
        values[f"plain:{field}"] = qp(plain_value(field, value)).encode("ascii")
        values[f"html:{field}"] = qp(html_lib.escape(value, quote=True)).encode("ascii")
    return values


def _list_unsubscribe(recipient: Recipient) -> str:
    value = f"<{recipient.unsubscribe_url}>"
    if recipient.unsubscribe_address:
        value += f",{CRLF} <{unsubscribe_mailto(recipient.unsubscribe_address)}>"
    return value


def personalize(template: MessageTemplate, recipient: Recipient, now: datetime,
                settings: Settings) -> bytes:
    """One recipient's complete message: the variant's chunks joined with their values."""
    values = slot_values(recipient, now, settings)
    parts: list[bytes] = [template.chunks[0]]
    for slot, chunk in zip(template.slots, template.chunks[1:], strict=True):
        parts.append(values[slot])
        parts.append(chunk)
    return b"".join(parts)


def message_id(issue_slug: str, digest: str, settings: Settings) -> str:
    """A Message-ID on the sender's domain. `digest` is a keyed hash of the (issue, recipient)
    pair (audience.tokens.Signer.digest): stable, so a retried message keeps its identity, and
    unguessable, so a report quoting it is about a message we sent (dispatch.inbound)."""
    domain = settings.newsletter.from_email.rpartition("@")[2]
    return f"<{issue_slug}.{digest}@{domain}>"


def envelope_sender(settings: Settings, bounce_local_part: str) -> str:
    """The SMTP MAIL FROM: with delivery.verp_domain set, a per-message VERP address whose
    local part is a signed token for the outbox row (audience.tokens.Signer.row_local_part),
    so a bounce names which message it was for and cannot be forged; else the From address."""
    domain = settings.delivery.verp_domain
    if not domain:
        return settings.newsletter.from_email
    return f"{bounce_local_part}@{domain}"
