"""The ``gpuwarden`` command as a user runs it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpuwarden", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


def test_demo_runs_a_simulated_cluster_over_grpc_and_ends_with_a_summary() -> None:
    r = run("demo", "--nodes", "3", "--duration", "6s", "--report-interval", "1s")
    assert r.returncode == 0, r.stderr
    m = re.search(
        r"summary: nodes (\d+), GPUs (\d+), reports produced (\d+), reports stored (\d+), "
        r"windows stored (\d+), unacknowledged (\d+)",
        r.stdout,
    )
    assert m, r.stdout
    nodes, gpus, produced, stored, windows, unacked = map(int, m.groups())
    assert (nodes, gpus) == (3, 12)
    assert produced >= 3 * 4  # about one report per node per second
    assert stored == produced and unacked == 0
    assert windows == 4 * stored
    for node in ("gpu01", "gpu02", "gpu03"):
        assert node in r.stdout


def test_every_subcommand_has_help() -> None:
    for cmd in ("agent", "collector", "demo", "status", "replay"):
        r = run(cmd, "--help")
        assert r.returncode == 0 and f"usage: gpuwarden {cmd}" in r.stdout, (cmd, r.stderr)


def test_bad_arguments_are_named() -> None:
    r = run("demo", "--nodes", "0")
    assert r.returncode == 2 and "--nodes: '0' must be at least 1" in r.stderr
    r = run("demo", "--duration", "ten")
    assert r.returncode == 2 and "'ten' is not a duration" in r.stderr
    r = run("frobnicate")
    assert r.returncode == 2 and "invalid choice: 'frobnicate'" in r.stderr


def test_bad_config_stops_the_daemon_at_start_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[collector]\ninsecure = true\nretention = "a while"\n')
    r = run("collector", "--config", str(cfg), timeout=30)
    assert r.returncode == 2
    assert "configuration error: [collector] retention: 'a while' is not a duration" in r.stderr
    r = run("agent", "--config", str(tmp_path / "missing.toml"), timeout=30)
    assert r.returncode == 2 and "missing.toml does not exist" in r.stderr


def test_agent_without_nvml_driver_says_so(tmp_path: Path) -> None:
    r = run(
        "agent",
        "--insecure",
        "--sampler",
        "nvml",
        "--slurm",
        "off",
        "--spool-dir",
        str(tmp_path / "s"),
        "--nvml-library",
        str(tmp_path / "nope.so"),
        timeout=30,
    )
    assert r.returncode == 1
    assert "gpuwarden agent:" in r.stderr and "nope.so" in r.stderr
