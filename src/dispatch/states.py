"""The named states of what the store keeps: a send (an issue going out), an outbox row (one
message to one subscriber) and a subscriber. The stored strings are the enum values.

The state machines are drawn in docs/architecture.md; every change of a send's status is one
of the named `SendStep`s below, declared once in `SEND_STEPS` and enforced by
`dispatch.store.sends.change_status`: a step names the states it may come from, and there is no
"from any state".
"""

from __future__ import annotations

from enum import StrEnum


class SendStatus(StrEnum):
    """An issue's send: draft (a folder, no row) → scheduled → sending → sent; paused,
    cancelled, failed (could not be launched at its time) and missed (too late)."""

    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    SENT = "sent"
    CANCELLED = "cancelled"
    FAILED = "failed"
    MISSED = "missed"


RESCHEDULABLE = (SendStatus.CANCELLED, SendStatus.FAILED, SendStatus.MISSED)  # never launched
UNLAUNCHED = (SendStatus.SCHEDULED, *RESCHEDULABLE)  # may be sent now
CANCELLABLE = (SendStatus.SCHEDULED, SendStatus.SENDING, SendStatus.PAUSED)
ARCHIVED = (SendStatus.SENDING, SendStatus.SENT)  # launched, so someone has it; not cancelled
VIEWABLE = (*ARCHIVED, SendStatus.PAUSED)  # the view-in-browser link of a copy received


class SendStep(StrEnum):
    """A change of a send's status, by what causes it. SEND_STEPS says from where to where."""

    SCHEDULE = "schedule"  # an editor schedules it (again, if it never launched)
    FIRE = "fire"  # the daemon launches it at its time
    LAUNCH = "launch"  # an editor sends it now (never launched before)
    PAUSE = "pause"  # an editor, the relay refusing us, or the bounce/complaint rates
    RESUME = "resume"  # an editor, or `dispatch send` on a paused issue
    FINISH = "finish"  # nothing left to deliver
    CANCEL = "cancel"  # an editor
    MISS = "miss"  # its time passed with no daemon running (beyond schedule.grace)
    FAIL = "fail"  # it could not be launched at its time (nobody to send to, a broken brief)
    REOPEN = "reopen"  # dispatch's own pseudo-sends (confirmations, welcome): new mail queued


SEND_STEPS: dict[SendStep, tuple[frozenset[SendStatus], SendStatus]] = {
    SendStep.SCHEDULE: (frozenset(RESCHEDULABLE), SendStatus.SCHEDULED),
    SendStep.FIRE: (frozenset({SendStatus.SCHEDULED}), SendStatus.SENDING),
    SendStep.LAUNCH: (frozenset(UNLAUNCHED), SendStatus.SENDING),
    SendStep.PAUSE: (frozenset({SendStatus.SENDING}), SendStatus.PAUSED),
    SendStep.RESUME: (frozenset({SendStatus.PAUSED}), SendStatus.SENDING),
    SendStep.FINISH: (frozenset({SendStatus.SENDING}), SendStatus.SENT),
    SendStep.CANCEL: (frozenset(CANCELLABLE), SendStatus.CANCELLED),
    SendStep.MISS: (frozenset({SendStatus.SCHEDULED}), SendStatus.MISSED),
    SendStep.FAIL: (frozenset({SendStatus.SCHEDULED}), SendStatus.FAILED),
    # A new sign-up is a fresh chance to deliver, even after an editor's pause.
    SendStep.REOPEN: (frozenset({SendStatus.SENT, SendStatus.SENDING, SendStatus.PAUSED}),
                      SendStatus.SENDING),
}


class RowState(StrEnum):
    """One outbox row: queued → sending (claimed by a worker) → sent; retrying after a
    transient failure; failed, bounced, or skipped (the send was cancelled, or the subscriber
    left after launch)."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    RETRYING = "retrying"
    FAILED = "failed"
    BOUNCED = "bounced"
    SKIPPED = "skipped"


OPEN = (RowState.QUEUED, RowState.RETRYING)  # waiting to be claimed
UNFINISHED = (*OPEN, RowState.SENDING)  # not yet delivered or given up
PROBLEMS = (RowState.FAILED, RowState.BOUNCED, RowState.RETRYING)  # rows whose reply is news


class SubscriberStatus(StrEnum):
    """pending (signed up, not confirmed) → active; unsubscribed, bounced and complained each
    suppress the address, by hash, beyond deletion."""

    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class ReportKind(StrEnum):
    """What a message that came back was (dispatch.inbound) and what it did: a hard bounce
    suppresses (bounced); soft bounces suppress after delivery.soft_bounce_limit of them; a
    complaint suppresses (complained); an unsubscribe unsubscribes; the rest change nothing."""

    BOUNCED = "bounced"  # permanent: 5.1.x and its equivalents
    SOFT = "soft-bounce"  # 4.x.x, 5.2.2 mailbox full, Action: delayed
    COMPLAINT = "complaint"  # an ARF abuse or fraud report
    UNSUBSCRIBE = "unsubscribe"  # the List-Unsubscribe mailto, the web's one-click or page
    AUTO_REPLY = "auto-reply"  # out of office, vacation (RFC 3834)
    IGNORED = "ignored"  # a message that is none of these (a person writing to the address)
    UNMATCHED = "unmatched"  # names no message we sent, or its token does not verify
    NOT_EMAIL = "not-an-email"  # not a mail message at all (never recorded)


class ReportVia(StrEnum):
    """The way an unsubscribe came: RFC 8058's one-click POST (a mailbox provider's button),
    the button on the /u/ page the email's link opens, the preferences page, a mail to the
    List-Unsubscribe mailto address, or a relay's webhook (the relay's own unsubscribe link or
    list; the report's source names the relay). Stored in reports.via."""

    ONE_CLICK = "one-click"
    PAGE = "page"
    PREFERENCES = "preferences"
    MAILTO = "mailto"
    WEBHOOK = "webhook"


# Ways that are a reader acting on our web app: no message came, so one that changes nothing
# (the reader receives nothing already) is not recorded at all.
WEB_WAYS = (ReportVia.ONE_CLICK, ReportVia.PAGE, ReportVia.PREFERENCES)


RECEIVING = (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING)  # get issues or a confirmation
SUPPRESSING = (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED,
               SubscriberStatus.COMPLAINED)


class Role(StrEnum):
    """A console account's role; each includes the ones before it. Editors work on briefs and
    issues and schedule them; operators also send, pause, resume, cancel and manage
    subscribers; admins also manage accounts and read the audit log."""

    EDITOR = "editor"
    OPERATOR = "operator"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        order = list(Role)
        return order.index(self) >= order.index(needed)
