"""DKIM settings that need more than a type: the private key file (RSA or Ed25519, RFC 8463)
and the alignment of the signing domain with From (DMARC, RFC 7489 §3.1.1)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

_ED25519_PKCS8 = bytes.fromhex("302e020100300506032b657004220420")  # RFC 8410 prefix, then seed


@dataclass(frozen=True)
class DkimKey:
    algorithm: bytes  # b"rsa-sha256" or b"ed25519-sha256" (RFC 8463)
    key: bytes  # what dkimpy takes: the PEM for RSA, the base64 seed for Ed25519


def dkim_key(data: bytes) -> DkimKey:
    """A DKIM private key file: an RSA key in PEM, an Ed25519 key in PEM (PKCS#8, as
    `openssl genpkey -algorithm ed25519` writes it) or the base64 seed dkimpy's `dknewkey`
    writes. ValueError when it is none of these."""
    text = data.decode("ascii", "replace").strip()
    pem = re.search(r"-----BEGIN PRIVATE KEY-----(.*?)-----END PRIVATE KEY-----", text, re.S)
    if pem:
        der = base64.b64decode("".join(pem[1].split()))
        if len(der) == 48 and der.startswith(_ED25519_PKCS8):
            return DkimKey(b"ed25519-sha256", base64.b64encode(der[16:]))
    if "-----BEGIN" in text:
        import dkim.crypto  # only when signing is configured

        try:
            dkim.crypto.parse_pem_private_key(data)
        except dkim.crypto.UnparsableKeyError as exc:
            raise ValueError(f"not an RSA or Ed25519 private key: {exc}") from None
        return DkimKey(b"rsa-sha256", data)
    try:
        seed = base64.b64decode(text, validate=True)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise ValueError("not a PEM private key (RSA or Ed25519) nor a base64 Ed25519 seed")
    return DkimKey(b"ed25519-sha256", text.encode("ascii"))




def aligned(dkim_domain: str, from_domain: str) -> bool:
    """Relaxed DMARC alignment as far as it can be decided without the Public Suffix List:
    the signing domain and From's domain are the same, or one is a subdomain of the other
    (d=example.org for news.example.org, or d=mail.example.org for example.org: both have the
    organizational domain example.org). Sibling subdomains (a.example.org, b.example.org) may
    be aligned too, but only the list knows whether example.org is an organizational domain or
    a public suffix like co.uk, so they are refused; a bare top-level domain never aligns."""
    d, f = (x.lower().rstrip(".") for x in (dkim_domain, from_domain))
    shorter, longer = sorted((d, f), key=len)
    return "." in shorter and (longer == shorter or longer.endswith("." + shorter))
