"""gRPC addresses as users write them: ``HOST:PORT``, with IPv6 hosts in brackets."""

from __future__ import annotations

WILDCARD_HOSTS = ("0.0.0.0", "[::]")


def split_host_port(text: str) -> tuple[str, int]:
    """``"gpu-mgmt:50051"`` -> ``("gpu-mgmt", 50051)``; ValueError saying what is wrong.

    Port 0 is allowed (listen on any free port).
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or (":" in host and not host.startswith("[")):
        raise ValueError(f"{text!r} is not HOST:PORT")
    if not host or host == "[]":
        raise ValueError(f"{text!r} has no host")
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(f"{text!r} is not HOST:PORT (an IPv6 host goes in brackets: [::1]:50051)")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} is not in 0-65535")
    return host, port


def connect_address(listen: str, port: int) -> str:
    """Where a client on this machine reaches a server listening on ``listen`` (which may be
    a wildcard) at its bound ``port``."""
    host, _ = split_host_port(listen)
    if host in WILDCARD_HOSTS:
        host = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
    return f"{host}:{port}"


def peer_ip(peer: str) -> str | None:
    """The IP address of a gRPC peer string (``ipv4:10.0.0.5:40123``, ``ipv6:[::1]:40123``,
    ``ipv6:%5B::1%5D:40123``), normalised; None for anything else (``unix:...``)."""
    import ipaddress
    import urllib.parse

    kind, sep, rest = urllib.parse.unquote(peer).partition(":")
    if not sep or kind not in ("ipv4", "ipv6"):
        return None
    host = rest.rpartition(":")[0].strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None
