"""DKIM signing when a key is configured: the signature verifies and covers the one-click
unsubscribe headers."""

from __future__ import annotations

import base64
from collections import deque
from datetime import UTC, datetime

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dispatch.audience.tokens import Signer
from dispatch.compose.issues import load_issue
from dispatch.compose.render import render_variant
from dispatch.compose.variants import possible_variants
from dispatch.config import DkimSettings, load_settings
from dispatch.deliver.messages import Messages
from dispatch.deliver.recording import MemoryOutbox
from dispatch.errors import ConfigError
from dispatch.store.outbox import Job
from tests.helpers import EXAMPLE_ISSUE

NOW = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)


def test_messages_are_dkim_signed_and_verify(settings, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "dkim.pem").write_bytes(pem)
    settings = settings.model_copy(update=dict(dkim=DkimSettings(
        domain="example.org", selector="news", key_file=tmp_path / "dkim.pem")))
    issue = load_issue(settings.issues_dir / EXAMPLE_ISSUE, settings)
    variant = next(iter(possible_variants(issue).values()))
    rendered = render_variant(issue, variant, settings, NOW)
    outbox = MemoryOutbox(deque(), {(issue.slug, variant.id): (issue.subject, rendered.html,
                                                               rendered.text)})
    job = Job(row_id=1, issue=issue.slug, variant=variant.id, attempts=0, subscriber_id=7,
              email="ana@example.com", name="Ana Kim")
    data = Messages(outbox, settings, Signer("k")).build(job, NOW).data

    assert data.startswith(b"DKIM-Signature:")
    header = data.split(b"\r\n\r\n", 1)[0].split(b"\r\nDate:")[0]
    assert b"list-unsubscribe-post" in header.lower()
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"news._domainkey.example.org." else None

    assert dkim.verify(data, dnsfunc=dns)
    tampered = data.replace(b"Subject: ", b"Subject: Re: ", 1)
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_dkim_config_is_checked(project):
    config = project / "config.toml"
    config.write_text(config.read_text() + '\n[dkim]\ndomain = "example.org"\n'
                      'selector = "news"\nkey_file = "missing.pem"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert any("dkim.key_file: no such file" in str(p) for p in caught.value.problems)
