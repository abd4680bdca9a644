"""The query client's config: files, environment and flags, and when each one wins."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from gpuwarden.common.config import ConfigError
from gpuwarden.query.config import load_client_config, user_config_path
from gpuwarden.query.since import parse_since


def pems(tmp_path: Path) -> tuple[Path, Path, Path]:
    out = []
    for name in ("ca.pem", "reader.pem", "reader.key"):
        (tmp_path / name).write_text("x")
        out.append(tmp_path / name)
    return out[0], out[1], out[2]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_each_source_wins_over_the_one_before(tmp_path: Path) -> None:
    ca, cert, key = pems(tmp_path)
    system = write(
        tmp_path / "etc.toml",
        f'[client]\ncollector = "sys:1"\ntls_ca = "{ca}"\ntls_cert = "{cert}"\n'
        f'tls_key = "{key}"\ntimeout = "20s"\n',
    )
    write(tmp_path / "xdg/gpuwarden/client.toml", '[client]\ncollector = "user:2"\n')
    given = write(tmp_path / "given.toml", '[client]\ncollector = "given:3"\n')
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}

    def load(flags: dict[str, object] | None = None, **extra_env: str) -> str:
        cfg = load_client_config(
            given if "given" in extra_env else None,
            flags,
            environ={**env, **{k: v for k, v in extra_env.items() if k != "given"}},
            system_config=system,
        )
        return cfg.collector

    assert load() == "user:2"  # the user's file over /etc
    assert load(given="1") == "given:3"  # --client-config over both
    assert load(given="1", GPUWARDEN_CLIENT_COLLECTOR="env:4") == "env:4"
    assert load({"collector": "flag:5"}, GPUWARDEN_CLIENT_COLLECTOR="env:4") == "flag:5"
    cfg = load_client_config(None, None, environ=env, system_config=system)
    assert cfg.timeout == 20.0 and cfg.tls_files is not None and cfg.tls_files.ca == ca


def test_home_config_is_used_without_xdg(tmp_path: Path) -> None:
    assert user_config_path({"HOME": "/home/ann"}) == Path(
        "/home/ann/.config/gpuwarden/client.toml"
    )
    assert user_config_path({"HOME": "/h", "XDG_CONFIG_HOME": "/x"}) == Path(
        "/x/gpuwarden/client.toml"
    )
    assert user_config_path({}) is None


def test_insecure_flag_wins_over_tls_files_from_a_file(tmp_path: Path) -> None:
    ca, cert, key = pems(tmp_path)
    system = write(
        tmp_path / "etc.toml",
        f'[client]\ntls_ca = "{ca}"\ntls_cert = "{cert}"\ntls_key = "{key}"\n',
    )
    cfg = load_client_config(None, {"insecure": True}, environ={}, system_config=system)
    assert cfg.tls_files is None


@pytest.mark.parametrize(
    ("text", "flags", "env", "message"),
    [
        ("", {}, {}, "[client] tls_ca: not set"),
        ("", {"insecure": True, "collector": "nohost"}, {}, "collector: 'nohost' is not HOST:PORT"),
        ("", {"insecure": True, "collector": "h:99999"}, {}, "is not HOST:PORT"),
        ("", {"tls_ca": "/nonexistent/ca.pem", "munge": False}, {}, "tls_cert: not set"),
        ("", {"tls_ca": "/nonexistent/ca.pem", "munge": True}, {}, "tls_ca: /nonexistent"),
        ("", {}, {"GPUWARDEN_CLIENT_MUNGE": "maybe"}, "GPUWARDEN_CLIENT_MUNGE: expected"),
        ("", {}, {"GPUWARDEN_CLIENT_INSECURE": "maybe"}, "GPUWARDEN_CLIENT_INSECURE: expected"),
        ("", {"insecure": True}, {"GPUWARDEN_CLIENT_TIMEOUT": "soon"}, "GPUWARDEN_CLIENT_TIMEOUT"),
        ('[client]\ncolector = "a:1"\n', {}, {}, "[client] colector: unknown setting"),
        ('[agent]\nnode = "x"\n', {}, {}, "'agent': unknown section or key"),
        ("[client\n", {}, {}, "is not valid TOML"),
    ],
)
def test_bad_values_are_named(
    tmp_path: Path, text: str, flags: dict[str, object], env: dict[str, str], message: str
) -> None:
    path = write(tmp_path / "c.toml", text) if text else None
    with pytest.raises(ConfigError) as err:
        load_client_config(path, flags, environ=env, system_config=None)
    assert message in str(err.value)
    if path is not None and "TOML" not in message:
        assert str(path) in str(err.value)  # the file is named


def test_a_researcher_needs_only_the_ca_and_sends_munge(tmp_path: Path) -> None:
    ca, _, _ = pems(tmp_path)
    cfg = load_client_config(
        None, {"tls_ca": str(ca), "munge": True}, environ={}, system_config=None
    )
    assert cfg.use_munge
    assert cfg.tls_files is not None and cfg.tls_files.cert is None and cfg.tls_files.key is None
    env = {"GPUWARDEN_CLIENT_MUNGE": "false"}
    with pytest.raises(ConfigError, match="tls_cert: not set"):
        load_client_config(None, {"tls_ca": str(ca)}, environ=env, system_config=None)


def test_missing_tls_file_is_named(tmp_path: Path) -> None:
    ca, cert, _ = pems(tmp_path)
    flags = {"tls_ca": str(ca), "tls_cert": str(cert), "tls_key": str(tmp_path / "gone.key")}
    with pytest.raises(ConfigError, match=r"tls_key: .*gone\.key does not exist"):
        load_client_config(None, flags, environ={}, system_config=None)


def test_a_given_client_config_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml does not exist"):
        load_client_config(tmp_path / "nope.toml", {}, environ={}, system_config=None)


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h", NOW - 3600),
        ("2d", NOW - 2 * 86400),
        ("90s", NOW - 90),
        ("1700000000", 1_700_000_000.0),
        ("1700000000.5", 1_700_000_000.5),
        ("2026-11-28T09:00:00Z", dt.datetime(2026, 11, 28, 9, tzinfo=dt.UTC).timestamp()),
        ("2026-11-28T09:00+01:00", dt.datetime(2026, 11, 28, 8, tzinfo=dt.UTC).timestamp()),
        ("2026-11-28", dt.datetime(2026, 11, 28).timestamp()),  # local midnight
    ],
)
def test_since_accepts_ago_iso_and_unix_seconds(text: str, expected: float) -> None:
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "", "1y", "-5m", "2026-13-01", "1h ago"])
def test_since_refuses_anything_else_saying_what_it_accepts(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a time .*ISO-8601.*Unix seconds"):
        parse_since(text, now=NOW)
