"""What a message that came back is: an RFC 3464 delivery status notification read by its
RFC 3463 status codes, an RFC 5965 (ARF) feedback report, an older MTA's bounce in prose
(flufl.bounce's detectors), a mailto unsubscribe, an RFC 3834 auto-reply, or none of these.

Pure: bytes in, a `Report` out. Which message it is about is only a claim here (the
addresses it came to, the Message-IDs it quotes); dispatch.inbound.process verifies it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser, HeaderParser
from email.utils import getaddresses

from dispatch.audience.tokens import ROW_ADDRESS
from dispatch.states import ReportKind, ReportVia

# RFC 3463: class.subject.detail; the first one found in a Status or Diagnostic-Code field.
STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
MESSAGE_ID = re.compile(r"^\s*Message-ID:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)
# A generic permanent failure (5.0.0, or a bare 550 from an old MTA) is an address that does
# not exist only when its text says so; otherwise it counts as soft.
NO_SUCH_USER = re.compile(
    r"user unknown|unknown user|no such (user|mailbox|recipient)|does not exist|"
    r"doesn't exist|unknown (recipient|mailbox|address)|invalid (recipient|mailbox)|"
    r"mailbox (unavailable|not found)|address rejected|not a valid mailbox|"
    r"recipient not found|no mailbox here", re.IGNORECASE)
# Hard besides every 5.1.x: a disabled mailbox (5.2.1), a destination that cannot be routed
# to (5.4.4: no such domain). Every other permanent code (5.2.2 mailbox full, 5.7.x policy,
# 5.3.x, 5.6.x content) says nothing certain about the address: soft.
HARD_CODES = {(2, 1), (4, 4)}
AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|abwesenheit|"
    r"vacation|away from|absence|r[ée]ponse automatique|auto:)", re.IGNORECASE)
COMPLAINT_TYPES = {"abuse", "fraud"}
HEADER_ADDRESSES = ("To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To",
                    "X-Envelope-To")
MAX_REASON = 300


@dataclass(frozen=True)
class Report:
    """A message that came back, classified, or a report from another way in (a relay's
    webhook event, a reader's unsubscribe on the web); `rows` of a message are filled in only
    by verification (dispatch.inbound.process.verify), those of the other ways by whoever
    verified their token."""

    kind: ReportKind
    fingerprint: str  # the same report read twice, by any way in, has the same one
    reason: str | None = None  # "5.1.1 smtp; 550 5.1.1 <ana@…>: user unknown"
    addresses: tuple[str, ...] = ()  # where it was sent: envelope recipients, To, Delivered-To
    message_ids: tuple[str, ...] = ()  # the Message-IDs of ours it quotes
    failed: tuple[str, ...] = ()  # the recipients it reports as failing
    rows: tuple[tuple[int, int], ...] = ()  # (outbox row, subscriber) of tokens that verified
    source: str = "file"  # file, smtp, imap, web, or the relay's name
    via: ReportVia | None = None  # an unsubscribe's way (None from mail: the mailto)
    subscriber: int | None = None  # named by a verified web token that names no row

    @property
    def claimed_issue(self) -> str | None:
        """The issue its first Message-ID names (ours look like <slug.digest@domain>)."""
        for mid in self.message_ids:
            slug, dot, _ = mid.strip("<>").partition("@")[0].rpartition(".")
            if dot and slug:
                return slug[:200]
        return None


def fingerprint(raw: bytes) -> str:
    """Identity of a report whatever way it came in: its Message-ID, Date, From and Subject,
    and its body with line ends and trailing space normalised; trace headers (Received,
    Return-Path, Delivered-To) differ between ways in and are left out."""
    head, _, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    try:
        headers = HeaderParser(policy=policy.compat32).parsestr(
            head.decode("ascii", "replace") + "\n\n", headersonly=True)
        ident = "\0".join(str(headers.get(name, "")).strip()
                          for name in ("Message-ID", "Date", "From", "Subject"))
    except Exception:
        ident = ""
    digest = hashlib.sha256(ident.encode("utf-8", "replace") + b"\0")
    digest.update(b"\n".join(line.rstrip() for line in body.split(b"\n")).rstrip())
    return digest.hexdigest()


def _parse(raw: bytes) -> EmailMessage | None:
    """The message, or None when the bytes are not a mail message at all."""
    if not raw.strip():
        return None
    try:
        msg = BytesParser(policy=policy.default).parsebytes(raw)
    except Exception:
        return None
    if not isinstance(msg, EmailMessage) or len(msg.keys()) == 0:
        return None
    if not any(name in msg for name in ("From", "To", "Subject", "Date", "Message-ID",
                                        "Content-Type", "Received", "Return-Path")):
        return None
    return msg


def _text(part: Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return ""
    if not isinstance(payload, bytes):
        return ""
    try:
        return payload.decode(part.get_content_charset() or "utf-8", "replace")
    except LookupError:  # a charset nobody knows
        return payload.decode("utf-8", "replace")


def _header(msg: Message, name: str) -> str:
    try:
        return str(msg.get(name, "") or "")
    except Exception:  # a header too broken for the policy to parse
        return ""


def _addresses(msg: EmailMessage, recipients: tuple[str, ...]) -> tuple[str, ...]:
    """Where it was sent (envelope recipients, To, Delivered-To…) and the envelope sender of
    the original it attaches (its Return-Path: how an ARF report names our VERP address)."""
    found = [r.strip().strip("<>") for r in recipients]
    for name in HEADER_ADDRESSES:
        values = [_header(msg, name)] if name in msg else []
        found += [addr for _, addr in getaddresses(values) if "@" in addr]
    for part in msg.walk():
        ctype, inner = part.get_content_type(), None
        if ctype in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else payload
        elif ctype in ("text/rfc822-headers", "text/global-headers"):
            inner = HeaderParser().parsestr(_text(part) + "\n\n", headersonly=True)
        if isinstance(inner, Message):
            found += [addr for _, addr in getaddresses([_header(inner, "Return-Path")])
                      if "@" in addr]
    return tuple(dict.fromkeys(a.lower() for a in found if a))


def _quoted_ids(msg: EmailMessage, prose: bool) -> tuple[str, ...]:
    """Message-IDs of the original message: in an attached message or its headers, in
    In-Reply-To/References, and (for bounces in prose) in quoted header lines."""
    ids: list[str] = []
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            inner = inner[0] if isinstance(inner, list) and inner else inner
            if isinstance(inner, Message) and inner.get("Message-ID"):
                ids.append(_header(inner, "Message-ID").strip())
        elif ctype in ("text/rfc822-headers", "text/global-headers") or (
                prose and part.get_content_maintype() == "text"):
            ids += MESSAGE_ID.findall(_text(part))
    for name in ("In-Reply-To", "References"):
        ids += re.findall(r"<[^<>\s]+>", _header(msg, name))
    own = _header(msg, "Message-ID").strip()
    return tuple(dict.fromkeys(i for i in ids if i and i != own))


def _blocks(msg: EmailMessage, ctype: str) -> list[Message]:
    """The field blocks of a message/delivery-status or message/feedback-report part."""
    for part in msg.walk():
        if part.get_content_type() == ctype:
            payload = part.get_payload()
            if isinstance(payload, list):
                return [p for p in payload if isinstance(p, Message)]
            text = payload if isinstance(payload, str) else _text(part)
            return [HeaderParser().parsestr(block + "\n")
                    for block in re.split(r"\r?\n\s*\r?\n", text) if block.strip()]
    return []


def severity(action: str, status: str, diagnostic: str) -> ReportKind | None:
    """One DSN recipient's verdict by its Action and RFC 3463 status; None: delivered."""
    action = action.strip().lower()
    if action in ("delivered", "relayed", "expanded"):
        return None
    if action == "delayed":
        return ReportKind.SOFT
    found = STATUS.search(status) or STATUS.search(diagnostic)
    if found is None:
        basic = re.search(r"\b([45])\d\d\b", diagnostic)
        if basic is None or basic[1] == "4":
            return ReportKind.SOFT
        return ReportKind.BOUNCED if NO_SUCH_USER.search(diagnostic) else ReportKind.SOFT
    klass, subject, detail = (int(g) for g in found.groups())
    if klass != 5:
        return ReportKind.SOFT
    if subject == 1 or (subject, detail) in HARD_CODES:
        return ReportKind.BOUNCED
    if (subject, detail) == (0, 0) and NO_SUCH_USER.search(diagnostic):
        return ReportKind.BOUNCED
    return ReportKind.SOFT


def _one_line(text: str) -> str:
    return " ".join(text.split())[:MAX_REASON]


def _dsn(msg: EmailMessage) -> tuple[ReportKind, str, tuple[str, ...]] | None:
    blocks = _blocks(msg, "message/delivery-status")
    per_recipient = [b for b in blocks if b.get("Action") or b.get("Final-Recipient")]
    if not per_recipient:
        return None
    verdicts = []
    for block in per_recipient:
        status, diagnostic = str(block.get("Status", "")), str(block.get("Diagnostic-Code", ""))
        kind = severity(str(block.get("Action", "failed")), status, diagnostic)
        if kind is not None:
            recipient = str(block.get("Final-Recipient", "")).partition(";")[2].strip()
            words = f"{status.strip()} {diagnostic.strip()}".strip()
            action = str(block.get("Action", "")).strip().lower()
            if action == "delayed":
                words = f"delayed: {words}"
            verdicts.append((kind, _one_line(words) or action, recipient))
    if not verdicts:
        return ReportKind.IGNORED, "a delivery report of success", ()
    # The worst verdict speaks for the report: one hard failure is a hard bounce.
    verdicts.sort(key=lambda v: v[0] != ReportKind.BOUNCED)
    return verdicts[0][0], verdicts[0][1], tuple(r for _, _, r in verdicts if r)


def _arf(msg: EmailMessage) -> tuple[ReportKind, str] | None:
    blocks = _blocks(msg, "message/feedback-report")
    if not blocks:
        return None
    fields = blocks[0]
    feedback = str(fields.get("Feedback-Type", "")).strip().lower()
    agent = _one_line(str(fields.get("User-Agent", "") or _header(msg, "From")))
    reason = f"ARF {feedback or 'unknown'} report" + (f" ({agent})" if agent else "")
    if feedback in COMPLAINT_TYPES:
        return ReportKind.COMPLAINT, reason
    return ReportKind.IGNORED, reason


def _old_bounce(raw: bytes) -> tuple[ReportKind, str, tuple[str, ...]] | None:
    """A bounce without a DSN, in an older MTA's own words: Mailman's detectors, given the
    message as Mailman parses it (compat32)."""
    from flufl.bounce import all_failures  # loaded only for the few messages that need it

    # A detector that trips over a malformed message logs a traceback before raising: that
    # is hostile input, not news for the operator's terminal.
    logging.getLogger("flufl.bounce").disabled = True
    try:
        temporary, permanent = all_failures(BytesParser(policy=policy.compat32).parsebytes(raw))
    except Exception:
        return None
    if permanent:
        failed = tuple(sorted(a.decode("utf-8", "replace") for a in permanent))
        return ReportKind.BOUNCED, "permanent failure (no DSN; by flufl.bounce)", failed
    if temporary:
        failed = tuple(sorted(a.decode("utf-8", "replace") for a in temporary))
        return ReportKind.SOFT, "temporary failure (no DSN; by flufl.bounce)", failed
    return None


def _auto_reply(msg: EmailMessage) -> str | None:
    """Why it is an automatic reply (RFC 3834 and the headers vacation programs use), or
    None. Only asked once the content showed it is no bounce or report: bounces carry
    Auto-Submitted too."""
    submitted = _header(msg, "Auto-Submitted").strip().lower()
    if submitted and not submitted.startswith("no"):
        return f"Auto-Submitted: {submitted.split(';')[0]}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress"):
        if name in msg:
            return f"{name} header"
    if _header(msg, "Precedence").strip().lower() in ("auto_reply", "bulk", "junk"):
        return f"Precedence: {_header(msg, 'Precedence').strip().lower()}"
    if AUTO_SUBJECT.search(_header(msg, "Subject")):
        return "an out-of-office subject"
    return None


def _to_unsubscribe_address(addresses: tuple[str, ...]) -> bool:
    return any(ROW_ADDRESS.match(a.rpartition("@")[0]) and a.startswith("u-")
               for a in addresses)


def classify(raw: bytes, recipients: tuple[str, ...] = (), source: str = "file") -> Report:
    """What a message that came back is, from its content; `recipients` are the envelope
    recipients when it came by SMTP."""
    msg = _parse(raw)
    if msg is None:
        return Report(ReportKind.NOT_EMAIL, fingerprint(raw), "not a mail message",
                      source=source)
    addresses = _addresses(msg, recipients)
    base = Report(ReportKind.IGNORED, fingerprint(raw), addresses=addresses, source=source)

    def report(kind: ReportKind, reason: str | None, prose: bool = False,
               failed: tuple[str, ...] = ()) -> Report:
        return Report(kind, base.fingerprint, reason, addresses, _quoted_ids(msg, prose),
                      failed, source=source)

    if (arf := _arf(msg)) is not None:
        return report(*arf)
    if (dsn := _dsn(msg)) is not None:
        return report(dsn[0], dsn[1], failed=dsn[2])
    if (old := _old_bounce(raw)) is not None:
        return report(old[0], old[1], prose=True, failed=old[2])
    auto = _auto_reply(msg)
    if auto is None and _to_unsubscribe_address(addresses):
        return report(ReportKind.UNSUBSCRIBE, "a message to the List-Unsubscribe address")
    if auto is not None:
        return report(ReportKind.AUTO_REPLY, auto)
    return report(ReportKind.IGNORED, "not a bounce, complaint or unsubscribe")
