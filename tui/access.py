"""Which actions the dashboard offers: the role of the client's certificate (no Textual).

A plaintext collector (demo, tests) takes actions from anyone on its loopback, recorded as
``local``; on mTLS the collector checks the certificate's role itself, and the dashboard
shows action keys only when the certificate names the admin role (a reader sees none).
"""

from __future__ import annotations

from pathlib import Path

from gpuwarden.common.roles import role_from_uris
from gpuwarden.query.config import ClientConfig


def certificate_role(cert: Path) -> str | None:
    """The role a PEM certificate names (``gpuwarden:role:<role>`` SAN URI), or None."""
    try:
        from cryptography import x509
    except ImportError:  # without it, no certificate can be read: act as a reader
        return None
    try:
        parsed = x509.load_pem_x509_certificate(cert.read_bytes())
        sans = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return None
    return role_from_uris(sans.get_values_for_type(x509.UniformResourceIdentifier))


def client_role(cfg: ClientConfig) -> str:
    """``admin`` when this client may act, else ``reader``."""
    if cfg.insecure:
        return "admin"
    return "admin" if certificate_role(Path(cfg.tls_cert)) == "admin" else "reader"
