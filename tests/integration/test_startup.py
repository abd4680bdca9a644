"""Permanent problems are found at start: the daemon exits at once and says what is wrong,
instead of running on and logging tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuwarden.collector.server import Collector
from tests.helpers import Proc, free_port, wait_for_sync
from tests.helpers import run_gpuwarden as run


async def test_second_collector_on_the_same_port_fails_to_start(tmp_path: Path) -> None:
    first = Collector(db_path=tmp_path / "a.db", listen="127.0.0.1:0")
    await first.start()
    try:
        second = Collector(db_path=tmp_path / "b.db", listen=f"127.0.0.1:{first.port}")
        with pytest.raises(OSError, match=rf"cannot listen on 127.0.0.1:{first.port}"):
            await second.start()
        await second.stop()
    finally:
        await first.stop()


def test_second_collector_command_exits_naming_the_address(
    tmp_path: Path, procs: list[Proc]
) -> None:
    port = free_port()
    args = ["collector", "--insecure", "--listen", f"127.0.0.1:{port}"]
    first = Proc([*args, "--state-dir", str(tmp_path / "a")], tmp_path / "a.log")
    procs.append(first)
    wait_for_sync(lambda: "listening" in first.output(), 30)
    r = run(*args, "--state-dir", str(tmp_path / "b"), timeout=30)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr
    assert "listening" not in r.stdout
    assert first.terminate() == 0


def agent_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "agent",
        "--sampler",
        "sim",
        "--slurm",
        "off",
        "--spool-dir",
        str(tmp_path / "spool"),
        "--collector",
        f"127.0.0.1:{free_port()}",
        *extra,
    ]


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gpuwarden.toml"
    path.write_text(text)
    return str(path)


def test_agent_with_missing_tls_files_exits_2_naming_the_key(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    cfg = write_config(
        tmp_path,
        f'[agent]\ntls_ca = "{pki}/ca.pem"\ntls_cert = "{pki}/n1.pem"\ntls_key = "{pki}/n1.key"\n',
    )
    r = run(*agent_args(tmp_path, "--config", cfg), timeout=30)
    assert r.returncode == 2, r.stderr
    assert f"configuration error: [agent] tls_ca: cannot read {pki}/ca.pem: No such file" in (
        r.stderr
    )
    assert "Traceback" not in r.stderr


def test_agent_with_a_certificate_that_is_not_pem_exits_2(tmp_path: Path) -> None:
    for name in ("ca.pem", "n1.pem", "n1.key"):
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "n1.pem").write_text("not a certificate")
    cfg = write_config(
        tmp_path,
        f'[agent]\ntls_ca = "{tmp_path}/ca.pem"\ntls_cert = "{tmp_path}/n1.pem"\n'
        f'tls_key = "{tmp_path}/n1.key"\n',
    )
    r = run(*agent_args(tmp_path, "--config", cfg), timeout=30)
    assert r.returncode == 2, r.stderr
    assert f"[agent] tls_cert: {tmp_path}/n1.pem is not a PEM file" in r.stderr


@pytest.mark.parametrize("node", ["gpu 01", "gpu01;rm", "-gpu", "x" * 65, "gpü01"])
def test_agent_with_an_invalid_node_name_exits_2(tmp_path: Path, node: str) -> None:
    r = run(*agent_args(tmp_path, "--insecure", f"--node={node}"), timeout=30)
    assert r.returncode == 2, r.stderr
    assert f"configuration error: [agent] node: {node!r} is not a valid node name" in r.stderr


def test_agent_with_an_unwritable_spool_exits_2(tmp_path: Path) -> None:
    r = run(*agent_args(tmp_path, "--insecure", "--spool-dir", "/sys/kernel"), timeout=30)
    assert r.returncode == 2, r.stderr
    assert "configuration error: [agent] spool_dir: cannot write in /sys/kernel" in r.stderr


@pytest.mark.parametrize(
    ("state_dir", "message"),
    [
        ("/sys/kernel", "[collector] state_dir: cannot write in /sys/kernel: Permission denied"),
        ("/sys/gpuwarden", "[collector] state_dir: cannot create folder /sys/gpuwarden"),
        ("FILE", "[collector] state_dir: FILE exists and is not a folder"),
    ],
)
def test_collector_on_an_unwritable_state_dir_exits_2(
    tmp_path: Path, state_dir: str, message: str
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    state_dir = state_dir.replace("FILE", str(a_file))
    message = message.replace("FILE", str(a_file))
    r = run("collector", "--insecure", "--listen", "127.0.0.1:0", "--state-dir", state_dir)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"gpuwarden collector: configuration error: {message}" in r.stderr
    assert "listening" not in r.stdout


def test_collector_with_missing_tls_files_exits_2_naming_the_key(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        f'[collector]\ntls_ca = "{tmp_path}/ca.pem"\ntls_cert = "{tmp_path}/c.pem"\n'
        f'tls_key = "{tmp_path}/c.key"\nstate_dir = "{tmp_path}/state"\nlisten = "127.0.0.1:0"\n',
    )
    r = run("collector", "--config", cfg, timeout=30)
    assert r.returncode == 2, r.stderr
    assert f"[collector] tls_ca: cannot read {tmp_path}/ca.pem: No such file" in r.stderr
