"""``gpuwarden certs``: a site CA and the certificates gpuwarden's mTLS needs.

- ``ca.pem`` / ``ca.key``: the site CA (made once, reused by later runs to add nodes);
- ``collector.pem``: server certificate, the collector's host names and IPs as SANs;
- ``node-<name>.pem``: one per GPU node, CN = node name (reports only for that node);
- ``admin-<name>.pem``, ``reader-<name>.pem``: people and tools reading the query API.

Every certificate names its role as a SAN URI ``gpuwarden:role:<role>`` and as ``OU=<role>``
(see :mod:`gpuwarden.common.roles`). Keys are ECDSA P-256, written with mode 0600.
Needs the ``cryptography`` package (``pip install 'gpuwarden[certs]'``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gpuwarden.common.roles import role_uri

CLOCK_SKEW = dt.timedelta(minutes=5)  # valid a little before now: nodes' clocks differ


class CertsError(Exception):
    """A certificate cannot be made as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class Issued:
    role: str
    name: str
    cert: Path
    key: Path


def _write_private(path: Path, data: bytes, *, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if force else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # also when --force rewrites a file that had looser modes
        os.write(fd, data)
    finally:
        os.close(fd)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs only; a TLS end entity (ECDSA) signs handshakes only."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _subject(org: str, role: str, cn: str) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)]
    if role:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


class SiteCA:
    """The site CA in ``directory`` (``ca.pem``, ``ca.key``)."""

    def __init__(self, directory: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey):
        self.directory = directory
        self.cert = cert
        self.key = key

    @classmethod
    def open_or_create(
        cls, directory: Path, *, org: str, name: str, days: int
    ) -> tuple[SiteCA, bool]:
        """The CA in ``directory``, made first if there is none; True when made now."""
        cert_path, key_path = directory / "ca.pem", directory / "ca.key"
        if cert_path.exists() or key_path.exists():
            return cls._load(directory, cert_path, key_path), False
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = _subject(org, "", name)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_private(key_path, _key_pem(key), force=False)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(directory, cert, key), True

    @classmethod
    def _load(cls, directory: Path, cert_path: Path, key_path: Path) -> SiteCA:
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except OSError as exc:
            raise CertsError(f"cannot read the site CA in {directory}: {exc}") from None
        except ValueError as exc:
            raise CertsError(f"the site CA in {directory} cannot be loaded: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != (
            cert.public_key()
        ):
            raise CertsError(f"{key_path} is not the key of {cert_path}")
        return cls(directory, cert, key)

    def issue(
        self,
        role: str,
        name: str,
        *,
        hosts: Sequence[str] = (),
        days: int,
        force: bool = False,
    ) -> Issued:
        """Write ``<stem>.pem`` and ``<stem>.key`` for ``name`` in ``role``."""
        stem = "collector" if role == "collector" else f"{role}-{name}"
        out = Issued(role, name, self.directory / f"{stem}.pem", self.directory / f"{stem}.key")
        if not force:
            for path in (out.cert, out.key):
                if path.exists():
                    raise CertsError(f"{path} exists; not overwritten (remove it, or use --force)")
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        org = self.cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        server = role == "collector"
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(role_uri(role))]
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(_subject(str(org[0].value) if org else "gpuwarden", role, name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(min(now + dt.timedelta(days=days), self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        _write_private(out.key, _key_pem(key), force=force)
        out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return out
