"""Who a client certificate speaks for, as ``gpuwarden certs`` writes it.

Every certificate the command issues names its role twice: as a URI in the subject
alternative name, ``gpuwarden:role:<role>`` (gRPC hands it to the server as the peer's
``x509_subject_alternative_name`` / ``peer_uri``), and as the subject's organisational unit
(``OU=<role>``, for people reading ``openssl x509 -subject``). The URI is the one to trust:
a site CA may already put other OUs in its certificates.
"""

from __future__ import annotations

from collections.abc import Iterable

ROLES = ("collector", "node", "admin", "reader")
ROLE_URI_PREFIX = "gpuwarden:role:"


def role_uri(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (known: {', '.join(ROLES)})")
    return ROLE_URI_PREFIX + role


def role_from_uris(uris: Iterable[str | bytes]) -> str | None:
    """The role named by a certificate's SAN URIs; None when it names none or several."""
    found = set()
    for uri in uris:
        text = uri.decode(errors="replace") if isinstance(uri, bytes) else uri
        if text.startswith(ROLE_URI_PREFIX) and text[len(ROLE_URI_PREFIX) :] in ROLES:
            found.add(text[len(ROLE_URI_PREFIX) :])
    return found.pop() if len(found) == 1 else None
