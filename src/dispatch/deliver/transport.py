"""Transports: the only code that talks to the network (SMTP) or writes messages as files.

A connection sends one message to one recipient and returns the server's final reply; it
raises TransportError when the connection itself is lost or refused. The SMTP connection
writes each message's bytes as they are: message.py already made them CRLF with no line
starting with ".", so nothing is re-scanned per message. When the server offers PIPELINING
(RFC 2920), the next transaction's MAIL FROM, RCPT TO and DATA go out in the same write as a
message's final dot, and their replies are read in order at the next send: one round trip
and one write per message.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from threading import Lock
from typing import Protocol

from dispatch.config import SmtpSettings
from dispatch.errors import DispatchError


class SmtpStage(StrEnum):
    """Where in an SMTP session a reply came or a failure happened, as aiosmtplib's
    exception tree tells them apart (SMTPConnectError, SMTPHeloError, SMTPAuthenticationError,
    SMTPSenderRefused, SMTPRecipientRefused, SMTPDataError). What a refusal means depends on
    it: a refusal of the session or of MAIL FROM is about us, one at RCPT about the
    recipient, and a failure at DOT (after the whole message and its final dot were written)
    leaves an unknown outcome: the server may have accepted it."""

    CONNECT = "connect"  # the TCP (or implicit TLS) connection and the greeting
    EHLO = "ehlo"
    STARTTLS = "starttls"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"  # the DATA command and the message's bytes
    DOT = "dot"  # the reply to the final dot

    @property
    def about_us(self) -> bool:
        """A refusal here (opening the session, or MAIL FROM) is the relay's answer to us,
        not about a recipient or a message."""
        return self not in (SmtpStage.RCPT, SmtpStage.DATA, SmtpStage.DOT)


@dataclass(frozen=True)
class Reply:
    code: int
    text: str
    stage: SmtpStage = SmtpStage.DOT  # where in the session it came

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


class TransportError(Exception):
    """The connection failed or dropped; `reply` is the server's refusal when there was one,
    `stage` where it happened. `permanent`: retrying cannot help (the certificate does not
    verify, STARTTLS or AUTH is not offered): a refusal of the session like a 5xx one."""

    def __init__(self, message: str, reply: Reply | None = None,
                 stage: SmtpStage = SmtpStage.CONNECT, permanent: bool = False) -> None:
        super().__init__(message)
        self.reply = reply
        self.stage = stage
        self.permanent = permanent


class Abandoned(TransportError):
    """The caller's `before_dot` said no: the transaction was dropped before its final dot,
    so nothing was delivered."""


Envelope = tuple[str, str, bool]  # MAIL FROM, RCPT TO, whether SMTPUTF8 is needed
STAGES = (SmtpStage.MAIL, SmtpStage.RCPT, SmtpStage.DATA)  # each envelope command's stage


class Connection(Protocol):
    # Whether the server offers SMTPUTF8 (RFC 6531): needed for a non-ASCII local part.
    smtputf8: bool

    def send(self, sender: str, recipient: str, data: bytes, *, utf8: bool = False,
             before_dot: Callable[[], bool] | None = None,
             then: Envelope | None = None) -> Reply:
        """One transaction; `before_dot` is called just before the final dot is written
        (the worker waits there until the previous message's outcome is stored) and False
        from it abandons the transaction. `then`: the next transaction's envelope, which a
        connection may write with this one's final dot (PIPELINING); the next send must
        then be that envelope's, or close()."""
        ...

    def close(self) -> None: ...


Transport = Callable[[], Connection]  # opens a connection


def _reply(code: int, message: bytes | str, stage: SmtpStage = SmtpStage.CONNECT) -> Reply:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return Reply(code, " ".join(text.split()), stage)


class SmtpConnection:
    """One persistent SMTP session: STARTTLS or implicit TLS with a verifying context, AUTH
    when configured, PIPELINING when offered, SMTPUTF8 when a message needs it and the server
    offers it. Every command waits `timeout` for its reply; the reply to the final dot waits
    `data_timeout` (RFC 5321 4.5.3.2.6: ten minutes), since a server may check the whole
    message before answering."""

    def __init__(self, settings: SmtpSettings, context: ssl.SSLContext | None = None) -> None:
        context = context or ssl.create_default_context()
        self._timeout = settings.timeout
        self._data_timeout = settings.data_timeout
        stage = SmtpStage.CONNECT
        try:
            if settings.security == "tls":
                self._smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    settings.host, settings.port, local_hostname=settings.helo_name,
                    timeout=settings.timeout, context=context)
            else:
                self._smtp = smtplib.SMTP(settings.host, settings.port,
                                          local_hostname=settings.helo_name,
                                          timeout=settings.timeout)
            stage = SmtpStage.EHLO
            self._ehlo()
            if settings.security == "starttls":
                stage = SmtpStage.STARTTLS
                self._smtp.starttls(context=context)
                stage = SmtpStage.EHLO
                self._ehlo()
            if settings.username:
                stage = SmtpStage.AUTH
                self._smtp.login(settings.username, settings.password() or "")
        except smtplib.SMTPResponseException as exc:
            self._abandon()
            raise TransportError(f"{settings.host}:{settings.port} refused the session",
                                 _reply(exc.smtp_code, exc.smtp_error, stage),
                                 stage) from None
        except DispatchError as exc:  # the password variable vanished since the start
            self._abandon()
            raise TransportError(str(exc), stage=stage, permanent=True) from None
        except (OSError, smtplib.SMTPException) as exc:
            self._abandon()
            permanent = isinstance(exc, (ssl.SSLCertVerificationError,
                                         smtplib.SMTPNotSupportedError))
            raise TransportError(f"cannot connect to {settings.host}:{settings.port}: "
                                 f"{exc or type(exc).__name__}", stage=stage,
                                 permanent=permanent) from None
        self._pipelining = self._smtp.has_extn("pipelining")
        self._ahead: Envelope | None = None  # the envelope written after the last final dot
        self.smtputf8 = self._smtp.has_extn("smtputf8")

    def _ehlo(self) -> None:
        # smtplib returns a refused EHLO rather than raising; an old server may take HELO.
        code, message = self._smtp.ehlo()
        if code != 250:
            code, message = self._smtp.helo()
        if code != 250:
            raise smtplib.SMTPHeloError(code, message)

    def _abandon(self) -> None:
        self._ahead = None
        try:
            self._smtp.close()
        except (AttributeError, OSError):
            pass

    def _read(self, stage: SmtpStage) -> Reply:
        code, message = self._smtp.getreply()
        if code == -1:
            raise TransportError("connection dropped", stage=stage)
        return _reply(code, message, stage)

    @staticmethod
    def _commands(envelope: Envelope) -> list[bytes]:
        sender, recipient, utf8 = envelope
        return [f"MAIL FROM:<{sender}>{' SMTPUTF8' if utf8 else ''}\r\n".encode(),
                f"RCPT TO:<{recipient}>\r\n".encode(), b"DATA\r\n"]

    def send(self, sender: str, recipient: str, data: bytes, *, utf8: bool = False,
             before_dot: Callable[[], bool] | None = None,
             then: Envelope | None = None) -> Reply:
        envelope = (sender, recipient, utf8)
        sock = self._smtp.sock
        if sock is None:
            raise TransportError("connection closed", stage=SmtpStage.MAIL)
        stage = SmtpStage.MAIL
        try:
            replies: list[Reply] = []
            if self._ahead is not None:
                # This envelope went out with the previous message's final dot: its three
                # replies follow that one's, in order.
                if self._ahead != envelope:
                    raise TransportError("not the envelope written ahead",
                                         stage=SmtpStage.MAIL)
                self._ahead = None
            elif self._pipelining:
                sock.sendall(b"".join(self._commands(envelope)))
            if self._pipelining:
                while len(replies) < 3 and (not replies or replies[-1].code != 421):
                    stage = STAGES[len(replies)]
                    replies.append(self._read(stage))
            else:
                for command, ok, stage in zip(self._commands(envelope), (250, 250, 354), STAGES,
                                              strict=True):
                    sock.sendall(command)
                    replies.append(self._read(stage))
                    if replies[-1].code // 100 != ok // 100:
                        break
            if len(replies) == 3 and replies[2].code == 354:
                stage = SmtpStage.DATA
                if before_dot is not None and not before_dot():
                    self._abandon()  # no way to take back a DATA but to hang up
                    raise Abandoned("stopped before the final dot", stage=SmtpStage.DATA)
                # data ends with CRLF and no line starts with "."; the next transaction's
                # commands ride in the same write (RFC 2920): one round trip per message.
                ahead = self._commands(then) if then is not None and self._pipelining else []
                sock.sendall(b"".join((data, b".\r\n", *ahead)))
                self._ahead = then if ahead else None
                stage = SmtpStage.DOT
                sock.settimeout(self._data_timeout)
                reply = self._read(SmtpStage.DOT)
                sock.settimeout(self._timeout)
                return reply
            refusal = next(r for r in replies if r.code >= 400)
            if replies[-1].code != 421:
                try:
                    sock.sendall(b"RSET\r\n")
                    self._read(SmtpStage.MAIL)
                except (OSError, smtplib.SMTPException, TransportError):
                    self._abandon()  # the next send finds it closed and reconnects
            return refusal
        except TransportError:
            self._abandon()
            raise
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            self._abandon()
            raise TransportError(f"connection lost: {exc or type(exc).__name__}",
                                 stage=stage) from None

    def close(self) -> None:
        if self._ahead is not None:  # a DATA written ahead may be open: only hanging up ends it
            self._abandon()
            return
        try:
            self._smtp.quit()
        except (OSError, smtplib.SMTPException):
            self._abandon()


def smtp_transport(settings: SmtpSettings, context: ssl.SSLContext | None = None) -> Transport:
    return lambda: SmtpConnection(settings, context)


class FileWriter:
    """The dry-run transport: writes the first `sample` messages as .eml files (all when None)
    and counts the rest; every message is still built, so sizes and counts are real."""

    def __init__(self, out_dir: Path, sample: int | None = None) -> None:
        self.out_dir = out_dir
        self.sample = sample
        self.written = 0
        self.counted = 0
        self.sizes: dict[str, int] = {}  # recipient -> message bytes
        self._lock = Lock()

    smtputf8 = True

    def __call__(self) -> Connection:
        return self

    def send(self, sender: str, recipient: str, data: bytes, *, utf8: bool = False,
             before_dot: Callable[[], bool] | None = None,
             then: Envelope | None = None) -> Reply:
        with self._lock:
            self.sizes[recipient] = len(data)
            write = self.sample is None or self.written < self.sample
            if write:
                self.written += 1
            else:
                self.counted += 1
        if not write:
            return Reply(250, "counted (not written: --sample)")
        name = "".join(c if c.isalnum() or c in "@.-_" else "_" for c in recipient)
        (self.out_dir / f"{name}.eml").write_bytes(data)
        return Reply(250, f"written to {name}.eml")

    def close(self) -> None:
        pass

