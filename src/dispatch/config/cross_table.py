"""The rules that read more than one table of config.toml: defaults taken from another key,
and references from one table to another."""

from __future__ import annotations

from email.utils import parseaddr
from typing import Any

from dispatch.clock import is_zone
from dispatch.config.dkim import aligned
from dispatch.config.fields import TOPIC_KEY, Loc
from dispatch.config.suggest import did_you_mean
from dispatch.config.topics import unknown_topics


def derived_defaults(data: dict[str, Any], default_zone: str) -> dict[str, Any]:
    """The defaults that depend on other keys: newsletter.timezone for [schedule] and each
    [[schedules]], a numbered name for each [[schedules]]."""
    newsletter = data.get("newsletter")
    zone = newsletter.get("timezone") if isinstance(newsletter, dict) else None
    if not (isinstance(zone, str) and is_zone(zone.strip())):
        # A bad zone is reported at newsletter.timezone, not again wherever it is inherited.
        zone = default_zone
    zone = zone.strip()
    data = dict(data)
    schedule = data.get("schedule", {})
    if isinstance(schedule, dict):
        data["schedule"] = {"default_timezone": zone, **schedule}
    entries = data.get("schedules")
    if isinstance(entries, list):
        data["schedules"] = [{"name": f"digest-{i + 1}", "timezone": zone, **entry}
                             if isinstance(entry, dict) else entry
                             for i, entry in enumerate(entries)]
    return data


def references(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    """Segments name declared topics; schedules have names of their own. Read from the file's
    own values, so that another mistake in the same table does not hide these."""
    topics, segments = data.get("topics"), data.get("segments")
    known = topics if isinstance(topics, dict) else {}
    declared = ", ".join(known) or "none"
    problems: list[tuple[Loc, str]] = [
        (("segments", name, part),
         f"unknown topic {topic!r}{did_you_mean(topic, known)} (declared: {declared})")
        for name, entry in (segments.items() if isinstance(segments, dict) else ())
        for part in ("topics", "exclude")
        for topic in unknown_topics(_strings(entry, part), known)]
    entries = data.get("schedules")
    names = [entry.get("name") if isinstance(entry, dict) else None
             for entry in (entries if isinstance(entries, list) else ())]
    problems += [(("schedules", i, "name"), f"another schedule is already named {name!r}")
                 for i, name in enumerate(names)
                 if isinstance(name, str) and TOPIC_KEY.match(name) and name in names[:i]]
    return problems + _dkim_alignment(data)


def _dkim_alignment(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    """A d= that is not aligned with From fails DMARC however well the signature verifies."""
    dkim, newsletter = data.get("dkim"), data.get("newsletter")
    if not (isinstance(dkim, dict) and isinstance(newsletter, dict)):
        return []
    domain, sender = dkim.get("domain"), newsletter.get("from")
    if not (isinstance(domain, str) and isinstance(sender, str)):
        return []
    from_domain = parseaddr(sender)[1].rpartition("@")[2]
    if not from_domain or aligned(domain.strip(), from_domain):
        return []
    return [(("dkim", "domain"),
             f"{domain.strip()!r} is not aligned with the From address's domain "
             f"{from_domain!r}: DMARC requires the signing domain to be From's domain, a "
             "parent or a subdomain of it")]


def _strings(entry: Any, key: str) -> list[str]:
    """entry[key] when it is a list Strings accepts, trimmed; else nothing to check."""
    value = entry.get(key) if isinstance(entry, dict) else None
    if isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value):
        return [v.strip() for v in value]
    return []
