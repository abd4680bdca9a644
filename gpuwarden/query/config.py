"""Client config: where the collector is and how to reach it (TLS CA, certificate, key,
or MUNGE for researchers).

Sources, each later one winning: ``/etc/gpuwarden/client.toml``, the user's
``$XDG_CONFIG_HOME/gpuwarden/client.toml`` (``~/.config`` by default), a file given with
``--client-config``, ``GPUWARDEN_CLIENT_*`` variables, then command-line flags. Every file
holds one ``[client]`` table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from gpuwarden.common.config import ConfigError, build_section, duration_field, read_toml
from gpuwarden.common.tls import TlsFiles
from gpuwarden.query.munge import munge_available

SECTION = "client"
SYSTEM_CONFIG = Path("/etc/gpuwarden/client.toml")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    collector: str = "127.0.0.1:50051"
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    insecure: bool = False
    timeout: float = duration_field(10.0, minimum=0.1)
    # attach a MUNGE credential to every call (a researcher, on the collector's MUNGE port);
    # unset: on when no client certificate is configured and `munge` is installed
    munge: bool | None = None
    munge_socket: str = ""

    def __post_init__(self) -> None:
        host, sep, port = self.collector.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"collector: {self.collector!r} is not HOST:PORT")
        if self.insecure:
            return  # plaintext: the TLS files, wherever they were set, are not used
        if not self.tls_ca:
            raise ValueError(
                "tls_ca: not set: give the collector's CA and a client certificate "
                "(tls_ca, tls_cert, tls_key in client.toml, GPUWARDEN_CLIENT_TLS_*, or "
                "--tls-ca/--tls-cert/--tls-key), or --insecure for a plaintext collector"
            )
        names: tuple[str, ...] = ("tls_ca", "tls_cert", "tls_key")
        if not (self.tls_cert or self.tls_key) and self.use_munge:
            names = ("tls_ca",)  # a researcher: TLS checks the collector, MUNGE says who
        for name in names:
            if not getattr(self, name):
                raise ValueError(
                    f"{name}: not set (mTLS needs tls_ca, tls_cert and tls_key; a researcher "
                    "gives tls_ca and munge = true, with the collector's MUNGE port)"
                )
        for name in names:
            value = getattr(self, name)
            if not Path(value).is_file():
                raise ValueError(f"{name}: {value} does not exist or is not a file")

    @property
    def use_munge(self) -> bool:
        """Send a MUNGE credential: asked for, or no client certificate and munge here."""
        if self.munge is not None:
            return self.munge
        return not self.insecure and not (self.tls_cert or self.tls_key) and munge_available()

    @property
    def tls_files(self) -> TlsFiles | None:
        if self.insecure:
            return None
        if not (self.tls_cert and self.tls_key):
            return TlsFiles(ca=Path(self.tls_ca))
        return TlsFiles(ca=Path(self.tls_ca), cert=Path(self.tls_cert), key=Path(self.tls_key))


def user_config_path(environ: Mapping[str, str]) -> Path | None:
    """``$XDG_CONFIG_HOME/gpuwarden/client.toml``, else ``~/.config/gpuwarden/client.toml``."""
    base = environ.get("XDG_CONFIG_HOME", "")
    if base and Path(base).is_absolute():
        return Path(base) / "gpuwarden" / "client.toml"
    home = environ.get("HOME", "")
    return Path(home) / ".config" / "gpuwarden" / "client.toml" if home else None


def _client_table(path: Path) -> dict[str, Any]:
    """The ``[client]`` table of one file, each key checked, naming the file when wrong."""
    data = read_toml(path)
    for key, value in data.items():
        if key != SECTION or not isinstance(value, dict):
            raise ConfigError(
                f"{path}: {key!r}: unknown section or key (a client file holds one [client] table)"
            )
    table: dict[str, Any] = data.get(SECTION, {})
    known = {f.name for f in fields(ClientConfig)}
    for key in table:
        if key not in known:
            raise ConfigError(
                f"{path}: [{SECTION}] {key}: unknown setting (known: {', '.join(sorted(known))})"
            )
    return table


def load_client_config(
    config_file: Path | None = None,
    flags: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    system_config: Path | None = SYSTEM_CONFIG,
) -> ClientConfig:
    """Merge the files (missing default files are skipped; ``config_file`` must exist), the
    environment and ``flags`` (None values are not given). Raise :class:`ConfigError`."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    for path in (system_config, user_config_path(env)):
        if path is not None and path.exists():
            data.update(_client_table(path))
    if config_file is not None:
        data.update(_client_table(config_file))
    return build_section(ClientConfig, SECTION, data, env, flags)
