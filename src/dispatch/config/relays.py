"""The relays' names, in the lowest layer that needs them: config.toml's
delivery.relay_metadata choices and the [inbound.webhooks.<provider>] tables. Each name has
its provider in dispatch.inbound.providers, whose registry asserts the two lists agree."""

from __future__ import annotations

from typing import Literal, get_args

# Relays that hand back our metadata header in their webhooks (dispatch.compose.message
# writes it; SES echoes the message's headers and needs none).
MetadataRelay = Literal["postmark", "mailgun", "sendgrid"]
METADATA_RELAYS: tuple[str, ...] = get_args(MetadataRelay)
WEBHOOK_PROVIDERS: tuple[str, ...] = ("ses", *METADATA_RELAYS)
