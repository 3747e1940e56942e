"""The relays' webhooks at the web app, over HTTP (Starlette's TestClient): an issue sent to a
sink, then the events SES (through SNS), Postmark, Mailgun and SendGrid would post about those
messages, signed with keys and a certificate made here. Verified events leave subscribers in
the right state once; unverifiable ones get 401/403 and change nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from dispatch.config import InboundSettings, Settings, WebhookSettings
from dispatch.inbound.providers.ses import sns_string_to_sign
from dispatch.store import reports
from dispatch.store import subscribers as subs
from dispatch.store.schema import reports as reports_table
from dispatch.web.app import create_app
from tests.helpers import (
    EXAMPLE_ISSUE,
    populate_audience,
    send_example_to_sink,
)

NOW = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
INBOUND = "bounces.example.org"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:dispatch-bounces"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem"
MAILGUN_KEY = "key-" + "7" * 32
POSTMARK_PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Sent:
    email: str
    message_id: str
    headers: dict[str, str]


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(days=30))
            .not_valid_after(NOW + timedelta(days=365))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def sendgrid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


class Fetcher:
    """Stands in for HTTPS to AWS: serves the certificate made here, records every URL."""

    def __init__(self, pem: bytes) -> None:
        self.pem, self.urls = pem, []

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        return self.pem if url.endswith(".pem") else b"<ConfirmSubscriptionResponse/>"


def hooked(settings: Settings, relay: str | None = None) -> Settings:
    hooks = WebhookSettings.model_validate({
        "ses": {"topic_arns": [TOPIC]},
        "postmark": {"username": "postmark", "password_env": "H7_POSTMARK_PASSWORD"},
        "mailgun": {"signing_key_env": "H7_MAILGUN_KEY"},
        "sendgrid": {"public_key_env": "H7_SENDGRID_KEY"},
        "max_size": 50_000})
    inbound = InboundSettings.model_validate({"smtp": False}).model_copy(
        update={"webhooks": hooks})
    return settings.model_copy(update={
        "delivery": settings.delivery.model_copy(update={"verp_domain": INBOUND,
                                                         "relay_metadata": relay}),
        "inbound": inbound})


def send(engine: Engine, settings: Settings) -> list[Sent]:
    """Launch and deliver the example issue to a sink; what each message carried."""
    found = []
    for item in send_example_to_sink(engine, settings, NOW):
        msg = message_from_bytes(item.data, policy=policy.compat32)
        found.append(Sent(item.recipient, str(msg["Message-ID"]),
                          {k: str(v) for k, v in msg.items()}))
    return sorted(found, key=lambda s: s.email)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, sendgrid_key: ec.EllipticCurvePrivateKey) -> None:
    der = sendgrid_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    monkeypatch.setenv("H7_POSTMARK_PASSWORD", POSTMARK_PASSWORD)
    monkeypatch.setenv("H7_MAILGUN_KEY", MAILGUN_KEY)
    monkeypatch.setenv("H7_SENDGRID_KEY", base64.b64encode(der).decode())


@dataclass
class World:
    engine: Engine
    settings: Settings
    sent: list[Sent]
    client: TestClient
    fetcher: Fetcher

    def status(self, email: str) -> str:
        found = subs.get(self.engine, email)
        assert found is not None
        return found.status

    def statuses(self) -> dict[str, str]:
        return {s.email: s.status for s in subs.list_subscribers(self.engine)}


def make_world(engine: Engine, settings: Settings, rsa_key: rsa.RSAPrivateKey,
               relay: str | None = None) -> World:
    configured = hooked(settings, relay)
    populate_audience(engine, configured, 6, NOW)
    sent = send(engine, configured)
    fetcher = Fetcher(certificate(rsa_key))
    app = create_app(engine, configured, clock=lambda: LATER, fetch=fetcher)
    return World(engine, configured, sent, TestClient(app, base_url="https://news.example.org"),
                 fetcher)


@pytest.fixture
def world(engine, settings, rsa_key, env) -> World:
    return make_world(engine, settings, rsa_key)


# ---- SES through SNS ---------------------------------------------------------------------------

def sns(key: rsa.RSAPrivateKey, kind: str, message: str, *, version: str = "1",
        topic: str = TOPIC, cert_url: str = CERT_URL, **extra: str) -> dict[str, str]:
    body = {"Type": kind, "MessageId": extra.pop("MessageId", secrets.token_hex(8)),
            "TopicArn": topic, "Message": message, "Timestamp": "2026-01-05T08:00:00.000Z",
            "SignatureVersion": version, "SigningCertURL": cert_url, **extra}
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(sns_string_to_sign(body), padding.PKCS1v15(), digest)
    body["Signature"] = base64.b64encode(signature).decode()
    return body


def ses_mail(sent: Sent) -> dict[str, object]:
    # SES's "mail" object with the original headers included, as SES sends them.
    return {"timestamp": "2026-01-05T07:00:01.000Z", "source": "news@example.org",
            "messageId": "0102018c-ses-id", "destination": [sent.email],
            "headersTruncated": False,
            "headers": [{"name": k, "value": v} for k, v in sent.headers.items()],
            "commonHeaders": {"from": ["news@example.org"], "to": [sent.email],
                              "messageId": sent.message_id, "subject": "x"}}


def ses_bounce(sent: Sent, kind: str = "Permanent", status: str = "5.1.1",
               diagnostic: str = "smtp; 550 5.1.1 user unknown", **mail: object) -> str:
    return json.dumps({"notificationType": "Bounce", "mail": ses_mail(sent) | mail,
                       "bounce": {"bounceType": kind, "bounceSubType": "General",
                                  "bouncedRecipients": [{"emailAddress": sent.email,
                                                         "status": status,
                                                         "diagnosticCode": diagnostic}],
                                  "timestamp": "2026-01-05T07:00:02.000Z"}})


def ses_complaint(sent: Sent, feedback: str = "abuse") -> str:
    return json.dumps({"notificationType": "Complaint", "mail": ses_mail(sent),
                       "complaint": {"complainedRecipients": [{"emailAddress": sent.email}],
                                     "complaintFeedbackType": feedback,
                                     "userAgent": "ExampleMail FBL"}})


def post_sns(world: World, body: dict[str, str] | bytes):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return world.client.post("/hooks/ses", content=data,
                             headers={"Content-Type": "text/plain; charset=UTF-8",
                                      "x-amz-sns-message-type": "Notification"})


def test_ses_bounces_and_complaints_signed_both_ways_act_once(world, rsa_key):
    hard, full, complainer = world.sent[0], world.sent[1], world.sent[2]
    first = sns(rsa_key, "Notification", ses_bounce(hard), version="1")
    answer = post_sns(world, first)
    assert answer.status_code == 200, answer.text
    assert "bounced 1" in answer.text
    # A relay's "Permanent" 5.2.2 (mailbox full) is soft here.
    answer = post_sns(world, sns(rsa_key, "Notification", ses_bounce(
        full, status="5.2.2", diagnostic="smtp; 552 5.2.2 mailbox full"), version="2"))
    assert answer.status_code == 200 and "soft-bounce 1" in answer.text
    answer = post_sns(world, sns(rsa_key, "Notification", ses_complaint(complainer),
                                 version="2"))
    assert answer.status_code == 200 and "complaint 1" in answer.text
    assert world.status(hard.email) == "bounced"
    assert world.status(full.email) == "active"
    assert world.status(complainer.email) == "complained"
    # SNS delivers at least once: the same notification again changes nothing more.
    again = post_sns(world, first)
    assert again.status_code == 200 and "repeat 1" in again.text
    counted = reports.counts(world.engine, EXAMPLE_ISSUE)[EXAMPLE_ISSUE]
    assert (counted["bounced"], counted["soft_bounced"], counted["complained"]) == (1, 1, 1)
    assert sum(counted.values()) == 3
    # The certificate was fetched once and cached.
    assert world.fetcher.urls == [CERT_URL]


def test_ses_matches_by_the_echoed_token_alone_or_the_message_id_alone(world, rsa_key):
    by_token, by_id = world.sent[0], world.sent[1]
    # SES replaced the Message-ID (it may): the List-Unsubscribe mailto token still names it.
    no_id = json.loads(ses_bounce(by_token))
    no_id["mail"]["commonHeaders"]["messageId"] = "<0102018c@eu-west-1.amazonses.com>"
    no_id["mail"]["headers"] = [h for h in no_id["mail"]["headers"]
                                if h["name"] != "Message-ID"]
    assert post_sns(world, sns(rsa_key, "Notification", json.dumps(no_id))).status_code == 200
    # Headers not included in the notification: the keyed Message-ID alone.
    only_id = json.loads(ses_bounce(by_id))
    only_id["mail"]["headers"] = []
    assert post_sns(world, sns(rsa_key, "Notification", json.dumps(only_id))).status_code == 200
    assert world.status(by_token.email) == world.status(by_id.email) == "bounced"
    # A genuine token on another domain than the inbound one is not ours to read.
    elsewhere = json.loads(ses_bounce(world.sent[2]))
    elsewhere["mail"]["commonHeaders"]["messageId"] = "<0102018d@eu-west-1.amazonses.com>"
    elsewhere["mail"]["headers"] = [
        {"name": h["name"], "value": h["value"].replace(INBOUND, "elsewhere.example")}
        for h in elsewhere["mail"]["headers"] if h["name"] != "Message-ID"]
    answer = post_sns(world, sns(rsa_key, "Notification", json.dumps(elsewhere)))
    assert "unmatched 1" in answer.text
    assert world.status(world.sent[2].email) == "active"


def test_ses_requests_that_do_not_verify_are_refused_and_change_nothing(world, rsa_key):
    victim = world.sent[0]
    good = sns(rsa_key, "Notification", ses_bounce(victim))
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "tampered message": good | {"Message": ses_bounce(world.sent[1])},
        "tampered topic": good | {"TopicArn": TOPIC.replace("bounces", "other")},
        "someone else's topic, signed by AWS": sns(
            rsa_key, "Notification", ses_bounce(victim),
            topic="arn:aws:sns:eu-west-1:999999999999:attacker"),
        "signed by another key": sns(other_key, "Notification", ses_bounce(victim)),
        "unknown signature version": sns(rsa_key, "Notification", ses_bounce(victim),
                                         version="3"),
        "no signature": {k: v for k, v in good.items() if k != "Signature"},
        "signature not base64": good | {"Signature": "%%%"},
    }
    for url in ("http://sns.eu-west-1.amazonaws.com/cert.pem",
                "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
                "https://evil.example/sns.eu-west-1.amazonaws.com/cert.pem",
                "https://sns.eu-west-1.amazonaws.com@evil.example/cert.pem",
                "https://s3.amazonaws.com/cert.pem"):
        refused[url] = sns(rsa_key, "Notification", ses_bounce(victim), cert_url=url)
    for why, body in refused.items():
        answer = post_sns(world, body)
        assert answer.status_code == 403, (why, answer.status_code, answer.text)
    assert set(world.fetcher.urls) <= {CERT_URL}  # no other host was ever asked
    for body, code in ((b"{not json", 400), (b"[1, 2]", 400),
                       (json.dumps({"Type": "Surprise", "TopicArn": TOPIC}).encode(), 403),
                       (b"x" * 60_000, 413)):
        assert post_sns(world, body).status_code == code, body[:20]
    # A verified notification whose inner message is not JSON: 400, nothing recorded.
    assert post_sns(world, sns(rsa_key, "Notification", "{oops")).status_code == 400
    assert set(world.statuses().values()) == {"active"}
    assert reports.counts(world.engine) == {}


def test_ses_subscription_is_confirmed_only_at_an_sns_url(world, rsa_key):
    subscribe = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=abc"
    answer = post_sns(world, sns(rsa_key, "SubscriptionConfirmation", "You have chosen...",
                                 version="2", SubscribeURL=subscribe, Token="abc"))
    assert answer.status_code == 200 and "subscribed" in answer.text
    assert world.fetcher.urls == [CERT_URL, subscribe]
    evil = "https://evil.example/?Action=ConfirmSubscription&Token=abc"
    answer = post_sns(world, sns(rsa_key, "SubscriptionConfirmation", "You have chosen...",
                                 SubscribeURL=evil, Token="abc"))
    assert answer.status_code == 403
    assert evil not in world.fetcher.urls


def test_webhooks_not_configured_are_not_there(engine, settings, rsa_key):
    app = create_app(engine, settings, clock=lambda: LATER, fetch=Fetcher(b""))
    client = TestClient(app)
    for provider in ("ses", "postmark", "mailgun", "sendgrid"):
        assert client.post(f"/hooks/{provider}", content=b"{}").status_code == 404


# ---- Postmark ----------------------------------------------------------------------------------

def postmark_bounce(sent: Sent, kind: str = "HardBounce", bounce_id: int = 42,
                    **extra: object) -> dict[str, object]:
    token = sent.headers.get("X-PM-Metadata-dispatch-row")
    return {"RecordType": "Bounce", "ID": bounce_id, "Type": kind, "TypeCode": 1,
            "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Email": sent.email,
            "Description": "The server was unable to deliver your message.",
            "Details": "smtp;550 5.1.1 The email account that you tried to reach does not "
                       "exist", "BouncedAt": "2026-01-05T07:10:00Z", "Inactive": True,
            "Metadata": {"dispatch-row": token} if token else {}, **extra}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()
                                                         ).decode()}


def test_postmark_events_with_our_metadata_act_once(engine, settings, rsa_key, env):
    world = make_world(engine, settings, rsa_key, relay="postmark")
    hard, complainer, stranger = world.sent[0], world.sent[1], world.sent[2]
    assert hard.headers["X-PM-Metadata-dispatch-row"].startswith("u-")
    auth = basic("postmark", POSTMARK_PASSWORD)
    answer = world.client.post("/hooks/postmark", json=postmark_bounce(hard), headers=auth)
    assert answer.status_code == 200 and "bounced 1" in answer.text, answer.text
    complaint = postmark_bounce(complainer, "SpamComplaint", 43) | {"RecordType":
                                                                    "SpamComplaint"}
    assert world.client.post("/hooks/postmark", json=complaint, headers=auth
                             ).status_code == 200
    again = world.client.post("/hooks/postmark", json=postmark_bounce(hard), headers=auth)
    assert "repeat 1" in again.text
    # No metadata (a message sent before relay_metadata was on): unmatched, nothing changed.
    bare = postmark_bounce(stranger, bounce_id=44) | {"Metadata": {}}
    assert "unmatched 1" in world.client.post("/hooks/postmark", json=bare,
                                              headers=auth).text
    # Metadata naming a row with a MAC that does not verify: unmatched too.
    token = stranger.headers["X-PM-Metadata-dispatch-row"]
    forged = postmark_bounce(stranger, bounce_id=45) | {
        "Metadata": {"dispatch-row": token[:-4] + "aaaa"}}
    assert "unmatched 1" in world.client.post("/hooks/postmark", json=forged,
                                              headers=auth).text
    # Deliveries and opens are not recorded at all.
    delivery = {"RecordType": "Delivery", "MessageID": "x", "Recipient": stranger.email}
    assert world.client.post("/hooks/postmark", json=delivery, headers=auth).status_code == 200
    assert world.status(hard.email) == "bounced"
    assert world.status(complainer.email) == "complained"
    assert world.status(stranger.email) == "active"
    counted = reports.counts(world.engine)
    assert counted[EXAMPLE_ISSUE]["bounced"] == counted[EXAMPLE_ISSUE]["complained"] == 1
    assert sum(c["unmatched"] for c in counted.values()) == 2


def test_postmark_without_the_right_credentials_changes_nothing(world):
    victim = world.sent[0]
    body = postmark_bounce(victim)
    assert world.client.post("/hooks/postmark", json=body).status_code == 401
    for headers in (basic("postmark", "guess"), basic("someone", POSTMARK_PASSWORD),
                    {"Authorization": "Bearer " + POSTMARK_PASSWORD},
                    {"Authorization": "Basic ###"}):
        assert world.client.post("/hooks/postmark", json=body, headers=headers
                                 ).status_code == 403, headers
    auth = basic("postmark", POSTMARK_PASSWORD)
    assert world.client.post("/hooks/postmark", content=b"{", headers=auth).status_code == 400
    assert set(world.statuses().values()) == {"active"}
    assert reports.counts(world.engine) == {}


def test_a_missing_secret_is_a_503_not_a_pass(world, monkeypatch):
    monkeypatch.delenv("H7_POSTMARK_PASSWORD")
    answer = world.client.post("/hooks/postmark", json=postmark_bounce(world.sent[0]),
                               headers=basic("postmark", ""))
    assert answer.status_code == 503
    assert set(world.statuses().values()) == {"active"}


# ---- Mailgun -----------------------------------------------------------------------------------

def mailgun(sent: Sent, event: str = "failed", severity: str = "permanent", *,
            key: str = MAILGUN_KEY, timestamp: int | None = None, token: str | None = None,
            code: str = "5.1.1", event_id: str | None = None) -> dict[str, object]:
    timestamp = timestamp if timestamp is not None else int(LATER.timestamp())
    token = token or secrets.token_hex(25)
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256)
    return {"signature": {"timestamp": str(timestamp), "token": token,
                          "signature": signature.hexdigest()},
            "event-data": {"event": event, "severity": severity,
                           "id": event_id or secrets.token_hex(11),
                           "timestamp": timestamp, "recipient": sent.email,
                           "reason": "bounce",
                           "delivery-status": {"code": 550, "enhanced-code": code,
                                               "message": f"{code} No such user"},
                           "message": {"headers": {"message-id": sent.message_id.strip("<>"),
                                                   "to": sent.email}},
                           "user-variables": {}}}


def test_mailgun_signed_events_act_once_and_replays_are_refused(world):
    hard, soft, complainer = world.sent[0], world.sent[1], world.sent[2]
    body = mailgun(hard, event_id="ev-hard")
    answer = world.client.post("/hooks/mailgun", json=body)
    assert answer.status_code == 200 and "bounced 1" in answer.text, answer.text
    # The very same request again is a replay: its token was used.
    assert world.client.post("/hooks/mailgun", json=body).status_code == 403
    # Mailgun retrying the event (a new signature, the same event id): nothing more happens.
    assert "repeat 1" in world.client.post("/hooks/mailgun",
                                           json=mailgun(hard, event_id="ev-hard")).text
    assert world.client.post("/hooks/mailgun", json=mailgun(
        soft, severity="temporary", code="4.2.2")).status_code == 200
    assert world.client.post("/hooks/mailgun", json=mailgun(
        complainer, "complained")).status_code == 200
    assert world.status(hard.email) == "bounced"
    assert world.status(soft.email) == "active"
    assert world.status(complainer.email) == "complained"


def test_mailgun_requests_that_do_not_verify_change_nothing(world):
    victim = world.sent[0]
    stale = int((LATER - timedelta(minutes=10)).timestamp())
    tampered = mailgun(victim)
    tampered["event-data"]["recipient"] = world.sent[1].email  # type: ignore[index]
    tampered["signature"]["token"] = "x" + tampered["signature"]["token"][1:]  # type: ignore[index]
    for why, body in {"wrong key": mailgun(victim, key="key-guess"),
                      "stale": mailgun(victim, timestamp=stale),
                      "from the future": mailgun(victim, timestamp=stale + 1800),
                      "tampered token": tampered,
                      "no signature": {"event-data": mailgun(victim)["event-data"]}}.items():
        assert world.client.post("/hooks/mailgun", json=body).status_code == 403, why
    assert world.client.post("/hooks/mailgun", content=b"{",
                             headers={"Content-Type": "application/json"}).status_code == 400
    assert world.client.post("/hooks/mailgun", data={"event": "failed"}).status_code == 400
    assert set(world.statuses().values()) == {"active"}
    assert reports.counts(world.engine) == {}


# ---- SendGrid ----------------------------------------------------------------------------------

def sendgrid_post(world: World, key: ec.EllipticCurvePrivateKey, events: list[dict[str, object]],
                  *, timestamp: int | None = None, body: bytes | None = None):
    payload = json.dumps(events).encode()
    stamp = str(timestamp if timestamp is not None else int(LATER.timestamp()))
    signature = key.sign(stamp.encode() + payload, ec.ECDSA(hashes.SHA256()))
    return world.client.post("/hooks/sendgrid", content=body if body is not None else payload,
                             headers={"Content-Type": "application/json",
                                      "X-Twilio-Email-Event-Webhook-Signature":
                                          base64.b64encode(signature).decode(),
                                      "X-Twilio-Email-Event-Webhook-Timestamp": stamp})


def sendgrid_event(sent: Sent, event: str, **extra: object) -> dict[str, object]:
    return {"email": sent.email, "timestamp": int(LATER.timestamp()), "event": event,
            "smtp-id": sent.message_id, "sg_event_id": secrets.token_hex(8),
            "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0", **extra}


def test_sendgrid_signed_batches_act_once(world, sendgrid_key):
    hard, blocked, complainer = world.sent[0], world.sent[1], world.sent[2]
    batch = [sendgrid_event(hard, "bounce", type="bounce", status="5.1.1",
                            reason="550 5.1.1 user unknown"),
             sendgrid_event(blocked, "bounce", type="blocked", status="5.7.1",
                            reason="blocked by policy"),
             sendgrid_event(complainer, "spamreport"),
             sendgrid_event(hard, "delivered"), sendgrid_event(hard, "open")]
    answer = sendgrid_post(world, sendgrid_key, batch)
    assert answer.status_code == 200, answer.text
    assert world.status(hard.email) == "bounced"
    assert world.status(blocked.email) == "active"
    assert world.status(complainer.email) == "complained"
    again = sendgrid_post(world, sendgrid_key, batch)  # SendGrid retries the whole batch
    assert "repeat 3" in again.text
    counted = reports.counts(world.engine, EXAMPLE_ISSUE)[EXAMPLE_ISSUE]
    assert (counted["bounced"], counted["soft_bounced"], counted["complained"]) == (1, 1, 1)


def test_sendgrid_requests_that_do_not_verify_change_nothing(world, sendgrid_key):
    victim = world.sent[0]
    batch = [sendgrid_event(victim, "bounce", type="bounce", status="5.1.1")]
    other = ec.generate_private_key(ec.SECP256R1())
    stale = int((LATER - timedelta(hours=1)).timestamp())
    altered = json.dumps([sendgrid_event(world.sent[1], "spamreport")]).encode()
    for why, answer in {
            "another key": sendgrid_post(world, other, batch),
            "stale": sendgrid_post(world, sendgrid_key, batch, timestamp=stale),
            "altered body": sendgrid_post(world, sendgrid_key, batch, body=altered),
            "unsigned": world.client.post("/hooks/sendgrid", json=batch)}.items():
        assert answer.status_code == 403, why
    assert sendgrid_post(world, sendgrid_key, {"not": "a list"}).status_code == 400  # type: ignore[arg-type]
    assert set(world.statuses().values()) == {"active"}
    assert reports.counts(world.engine) == {}


@pytest.mark.parametrize("relay, header", [
    ("mailgun", "X-Mailgun-Variables"), ("sendgrid", "X-SMTPAPI")])
def test_mailgun_and_sendgrid_metadata_names_the_row(engine, settings, rsa_key, env,
                                                     sendgrid_key, relay, header):
    world = make_world(engine, settings, rsa_key, relay=relay)
    target = world.sent[0]
    echoed = json.loads(target.headers[header])
    echoed = echoed.get("unique_args", echoed)
    assert echoed["dispatch-row"].startswith("u-")
    if relay == "mailgun":
        body = mailgun(target)
        body["event-data"]["message"]["headers"]["message-id"] = "other@mailgun.example"  # type: ignore[index]
        body["event-data"]["user-variables"] = echoed  # type: ignore[index]
        assert world.client.post("/hooks/mailgun", json=body).status_code == 200
    else:
        event = sendgrid_event(target, "bounce", type="bounce", status="5.1.1", **echoed)
        event["smtp-id"] = "<14c5d75ce93.dfd.64b469@ismtpd-555>"
        assert sendgrid_post(world, sendgrid_key, [event]).status_code == 200
    assert world.status(target.email) == "bounced"


# ---- Configuration -----------------------------------------------------------------------------

def test_webhook_settings_errors_are_located(project):
    from dispatch.config import parse_settings
    from dispatch.errors import ConfigError

    base = (project / "config.toml").read_text()
    cases = {
        '[inbound.webhooks.ses]\ntopic_arns = ["bounces"]\n': "inbound.webhooks.ses.topic_arns",
        "[inbound.webhooks.ses]\ntopic_arns = []\n": "inbound.webhooks.ses.topic_arns",
        '[inbound.webhooks.mailgun]\nsigning_key_env = "key-abc-123"\n':
            "inbound.webhooks.mailgun.signing_key_env",
        '[inbound.webhooks.postmark]\nusername = "a:b"\npassword_env = "P"\n':
            "inbound.webhooks.postmark.username",
        '[inbound.webhooks.sendgrid]\npublic_key = "MFkw"\n': "inbound.webhooks.sendgrid",
        '[inbound.imap]\nhost = "imap.example.org"\nusername = "u"\npassword = "p"\n':
            "inbound.imap",
    }
    for text, where in cases.items():
        doc = base.replace("[delivery]", '[delivery]\nverp_domain = "bounces.example.org"')
        with pytest.raises(ConfigError) as info:
            parse_settings(doc + "\n" + text, project / "config.toml")
        assert where in str(info.value), (text, str(info.value))
        assert "key-abc-123" not in str(info.value)
    doc = base.replace("[delivery]", '[delivery]\nrelay_metadata = "postmark"')
    with pytest.raises(ConfigError) as info:
        parse_settings(doc, project / "config.toml")
    assert "delivery.relay_metadata" in str(info.value) and "verp_domain" in str(info.value)


# ---- Unsubscribes by webhook (issue 23, bug 3) ----------------------------------------------

def relay_unsubscribe(world: World, relay: str, sent: Sent, key: ec.EllipticCurvePrivateKey,
                      form: str, *, token: bool = True):
    """What each relay posts when the reader used its unsubscribe, signed as it signs it."""
    name = form.removesuffix("-bare")
    if relay == "postmark":
        metadata = ({"dispatch-row": sent.headers["X-PM-Metadata-dispatch-row"]} if token
                    else {})
        if name == "bounce":
            body = postmark_bounce(sent, "Unsubscribe", len(form)) | {"Metadata": metadata}
        else:
            body = {"RecordType": "SubscriptionChange", "ServerID": 23, "Recipient": sent.email,
                    "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
                    "ChangedAt": f"2026-01-05T07:{len(form)}:00Z", "Origin": "Recipient",
                    "SuppressSending": True, "SuppressionReason": "ManualSuppression",
                    "MessageStream": "broadcast", "Tag": "", "Metadata": metadata}
        return world.client.post("/hooks/postmark", json=body,
                                 headers=basic("postmark", POSTMARK_PASSWORD))
    if relay == "mailgun":
        body = mailgun(sent, "unsubscribed", event_id=f"unsub-{form}")
        if token:
            body["event-data"]["user-variables"] = json.loads(  # type: ignore[index]
                sent.headers["X-Mailgun-Variables"])
        return world.client.post("/hooks/mailgun", json=body)
    echoed = json.loads(sent.headers["X-SMTPAPI"])["unique_args"] if token else {}
    event = sendgrid_event(sent, name, asm_group_id=7, **echoed)
    event["sg_event_id"] = f"unsub-{form}"
    return sendgrid_post(world, key, [event])


@pytest.mark.parametrize("relay, form", [
    ("postmark", "bounce"), ("postmark", "subscription-change"), ("mailgun", "unsubscribed"),
    ("sendgrid", "unsubscribe"), ("sendgrid", "group_unsubscribe")])
def test_a_relays_unsubscribe_is_stored_as_a_webhook_one_for_its_send_once(
        engine, settings, rsa_key, env, sendgrid_key, relay, form):
    world = make_world(engine, settings, rsa_key, relay=relay)
    reader, stranger = world.sent[0], world.sent[1]
    answer = relay_unsubscribe(world, relay, reader, sendgrid_key, form)
    assert answer.status_code == 200 and "unsubscribe 1" in answer.text, answer.text
    assert world.status(reader.email) == "unsubscribed"
    with world.engine.connect() as conn:
        stored = conn.execute(select(reports_table.c.source, reports_table.c.via,
                                     reports_table.c.issue)).all()
    assert stored == [(relay, "webhook", EXAMPLE_ISSUE)]
    counted = reports.counts(world.engine, EXAMPLE_ISSUE)[EXAMPLE_ISSUE]
    assert (counted["unsubscribed_webhook"], counted["unsubscribed_mailto"]) == (1, 0)
    found = subs.get(world.engine, reader.email)
    assert found is not None
    assert found.status_reason == f"unsubscribed by webhook ({relay}) from {EXAMPLE_ISSUE}"
    # The relay retrying the event changes nothing more.
    again = relay_unsubscribe(world, relay, reader, sendgrid_key, form)
    assert "repeat 1" in again.text, again.text
    # Without our row token (only an address and a Message-ID): nobody is unsubscribed.
    bare = relay_unsubscribe(world, relay, stranger, sendgrid_key, form + "-bare", token=False)
    assert bare.status_code == 200 and "unmatched 1" in bare.text, bare.text
    assert world.status(stranger.email) == "active"


def test_a_mailgun_signature_that_is_not_ascii_is_refused_not_a_500(world):
    victim = world.sent[0]
    for part, value in (("signature", "é" * 64), ("token", "tökén"), ("timestamp", "١٧٦٧")):
        body = mailgun(victim)
        body["signature"][part] = value  # type: ignore[index]
        answer = world.client.post("/hooks/mailgun", json=body)
        assert answer.status_code == 403, (part, answer.status_code, answer.text)
    # Bytes that are not UTF-8 at all in the signature: not JSON, a 400.
    raw = json.dumps(mailgun(victim)).encode().replace(b'"signature": "', b'"signature": "\xff', 1)
    answer = world.client.post("/hooks/mailgun", content=raw,
                               headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert set(world.statuses().values()) == {"active"}
    assert reports.counts(world.engine) == {}


# ---- The provider registry ---------------------------------------------------------------------

def test_the_providers_settings_and_metadata_choices_come_from_one_registry(project):
    from dispatch.compose.message import RELAY_METADATA
    from dispatch.config import parse_settings
    from dispatch.config.relays import METADATA_RELAYS, WEBHOOK_PROVIDERS
    from dispatch.errors import ConfigError
    from dispatch.inbound.providers import PROVIDERS

    assert tuple(PROVIDERS) == WEBHOOK_PROVIDERS == ("ses", "postmark", "mailgun", "sendgrid")
    assert tuple(n for n, p in PROVIDERS.items() if p.echoes_metadata) == METADATA_RELAYS
    assert set(RELAY_METADATA) == set(METADATA_RELAYS)  # each has its header in our messages
    base = (project / "config.toml").read_text()
    text = base.replace("[delivery]", '[delivery]\nverp_domain = "b.example.org"\n'
                                      'relay_metadata = "sparkpost"', 1)
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, project / "config.toml")
    assert "delivery.relay_metadata" in str(caught.value)
    assert "postmark, mailgun, sendgrid" in str(caught.value)
