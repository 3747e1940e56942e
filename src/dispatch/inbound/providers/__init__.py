"""The relays' webhook providers, one module each (ses, postmark, mailgun, sendgrid), each a
`Provider` with `verify` and `events` (base.py). A fifth provider is one new module here,
registered in PROVIDERS, with its name in dispatch.config.relays and its settings table in
[inbound.webhooks]; the import-time checks below say what is missing."""

from __future__ import annotations

from dispatch.config import WebhookSettings
from dispatch.config.relays import METADATA_RELAYS, WEBHOOK_PROVIDERS
from dispatch.inbound.providers.base import Provider
from dispatch.inbound.providers.mailgun import Mailgun
from dispatch.inbound.providers.postmark import Postmark
from dispatch.inbound.providers.sendgrid import Sendgrid
from dispatch.inbound.providers.ses import Ses

PROVIDERS: dict[str, type[Provider]] = {p.name: p for p in (Ses, Postmark, Mailgun, Sendgrid)}

# Config sits below this layer and names the providers itself: hold the lists together.
assert tuple(PROVIDERS) == WEBHOOK_PROVIDERS, (tuple(PROVIDERS), WEBHOOK_PROVIDERS)
assert tuple(n for n, p in PROVIDERS.items() if p.echoes_metadata) == METADATA_RELAYS
assert set(WEBHOOK_PROVIDERS) <= set(WebhookSettings.model_fields), "a provider without a table"
