"""TLS files for a gRPC client (agent or reader) and the channel built from them.

grpc is imported only where a channel is built: the agent, which speaks its own HTTP/2,
uses ``TlsFiles`` without loading grpcio."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gpuwarden.common.config import ConfigError

if TYPE_CHECKING:
    import grpc


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The CA to check the collector with; ``cert``/``key`` None: no client certificate
    (a researcher on the collector's MUNGE port)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None


def channel_credentials(tls: TlsFiles) -> grpc.ChannelCredentials:
    """mTLS credentials: the collector's CA and this client's certificate and key (TLS
    that checks only the collector when there is no client certificate)."""
    import grpc

    if tls.cert is None or tls.key is None:
        return grpc.ssl_channel_credentials(root_certificates=_read(tls.ca, "tls_ca"))
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca, "tls_ca"),
        private_key=_read(tls.key, "tls_key"),
        certificate_chain=_read(tls.cert, "tls_cert"),
    )


def make_channel(
    target: str, tls: TlsFiles | None, options: Sequence[tuple[str, int]] = ()
) -> grpc.aio.Channel:
    """A plaintext channel when ``tls`` is None, else an mTLS one."""
    import grpc

    if tls is None:
        return grpc.aio.insecure_channel(target, options=list(options))
    return grpc.aio.secure_channel(target, channel_credentials(tls), options=list(options))
