"""TLS for the agent's stream: the client context (the collector's CA and name checked,
the node's certificate presented, ALPN ``h2``) and the handshake with its clear errors.
``ssl`` is imported only when TLS is used: a plaintext agent does not load OpenSSL."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from gpuwarden.agent.grpc_status import transport_error

if TYPE_CHECKING:
    import ssl


def tls_handshake(sock: socket.socket, context: ssl.SSLContext, host: str) -> socket.socket:
    """``sock`` wrapped in TLS with the collector at ``host`` (the name its certificate must
    hold); StreamError (UNAVAILABLE, transport) saying why when that fails."""
    import ssl

    try:
        tls = context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        why = exc.verify_message
        raise transport_error(f"the collector's certificate is not trusted: {why}") from exc
    except (ssl.SSLError, OSError) as exc:
        raise transport_error(f"TLS handshake with the collector failed: {exc}") from exc
    if tls.selected_alpn_protocol() != "h2":
        tls.close()
        raise transport_error("the collector did not agree to HTTP/2 (ALPN h2) over TLS")
    return tls


def client_tls_context(ca: bytes | str, cert: str | None, key: str | None) -> ssl.SSLContext:
    """TLS 1.2+ that checks the collector's certificate and name against ``ca`` (a path),
    presents ``cert``/``key`` when given, and offers HTTP/2 (ALPN ``h2``)."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=ca)
    if cert is not None and key is not None:
        context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2"])
    return context
