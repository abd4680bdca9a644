"""Names users give on the command line and in certificates: node, person, host.

Each check returns the name or raises ValueError saying what is wrong with it.
"""

from __future__ import annotations

import ipaddress
import re

# A node name as reports carry it (the collector's validation) and as a node certificate's CN.
NODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)  # use fullmatch
PERSON_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}", re.ASCII)
_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DNS_RE = re.compile(rf"(?=.{{1,253}}$){_DNS_LABEL}(?:\.{_DNS_LABEL})*", re.ASCII)


def _full_match(name: str, rule: re.Pattern[str], what: str, allowed: str) -> str:
    if not rule.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid {what} (a letter or digit, then letters, digits, "
            f"{allowed}; at most 64 characters)"
        )
    return name


def check_node(name: str) -> str:
    """A node name as the collector accepts it in reports (and as a node's certificate CN)."""
    return _full_match(name, NODE_RE, "node name", "'.', '_' or '-'")


def check_person(name: str) -> str:
    """An admin's or reader's name (a certificate CN)."""
    return _full_match(name, PERSON_RE, "name", "'.', '_', '@' or '-'")


def check_host(host: str) -> str:
    """A host a client connects to: an IP address or a DNS name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not DNS_RE.fullmatch(host):
            raise ValueError(f"{host!r} is neither an IP address nor a DNS name") from None
    return host
