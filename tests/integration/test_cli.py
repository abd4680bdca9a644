"""The ``gpuwarden`` command as a user runs it."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import Proc, free_port, wait_for_sync
from tests.helpers import run_gpuwarden as run


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
        # the final table shows the cluster as it ran: every node connected
        assert re.search(rf"^{node}\s+yes\s+ok\s", r.stdout, re.M), r.stdout
    assert not re.search(r"^gpu\d+\s+no\s", r.stdout, re.M), r.stdout


def test_every_subcommand_has_help() -> None:
    for cmd in ("agent", "collector", "demo", "status", "audit", "replay", "certs"):
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


def test_status_and_audit_read_a_running_collector(tmp_path: Path, procs: list[Proc]) -> None:
    port = free_port()
    config = tmp_path / "collector.toml"
    config.write_text(
        '[collector]\ninsecure = true\nevaluate_interval = "0.5s"\n'
        '[policy]\nidle_window = "3s"\ngrace_period = 0\nwarnings = 1\n'
        'window = "1s"\nmax_gap = "5s"\n'
    )
    collector = Proc(
        [
            "collector",
            "--config",
            str(config),
            "--listen",
            f"127.0.0.1:{port}",
            "--state-dir",
            str(tmp_path),
        ],
        tmp_path / "collector.log",
    )
    procs.append(collector)
    wait_for_sync(lambda: "listening" in collector.output(), 30)
    agent = Proc(
        [
            "agent",
            "--insecure",
            "--sampler",
            "sim",
            "--node",
            "gpu04",
            "--spool-dir",
            str(tmp_path / "spool"),
            "--collector",
            f"127.0.0.1:{port}",
            "--report-interval",
            "1s",
        ],
        tmp_path / "agent.log",
    )
    procs.append(agent)
    # The node is listed from the moment its agent connects, its GPUs from its first stored
    # report: wait for the row this test is about, not for the first sight of the node.
    deadline = time.monotonic() + 120
    while True:
        r = run("status", "--insecure", "--collector", f"127.0.0.1:{port}", timeout=30)
        shown = re.search(r"gpu04\s+yes\s+ok", r.stdout) and "nodes 1  GPUs 4" in r.stdout
        if shown or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.returncode == 0 and re.search(r"gpu04\s+yes\s+ok", r.stdout), r.stdout + r.stderr
    assert "nodes 1  GPUs 4" in r.stdout, r.stdout
    records: list[dict[str, object]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = run("audit", "--insecure", "--collector", f"127.0.0.1:{port}", "--json", timeout=30)
        assert r.returncode == 0, r.stderr
        records = [json.loads(line) for line in r.stdout.splitlines()]
        if any(rec["kind"] == "idle" for rec in records):
            break
        time.sleep(0.2)
    idle = [rec for rec in records if rec["kind"] == "idle"]
    assert idle, records
    # gpu04 of the simulated cluster has idle jobs: warned, with the idle windows as evidence.
    first = idle[0]
    assert first["action"] == "warn" and first["actor"] == "gpuwarden-collector"
    assert first["evidence"]["windows"][0]["util_max_pct"] < 5  # type: ignore[index]
    assert (tmp_path / "audit.jsonl").read_text().count("\n") >= len(records)
    assert agent.terminate() == 0
    assert collector.terminate() == 0


def test_status_without_a_collector_is_a_clear_error() -> None:
    r = run("status", "--insecure", "--collector", f"127.0.0.1:{free_port()}", timeout=60)
    assert r.returncode == 1
    assert "gpuwarden status: collector 127.0.0.1:" in r.stderr and "UNAVAILABLE" in r.stderr


def test_misspelt_policy_section_stops_the_collector_naming_it(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[collector]\ninsecure = true\n[polcy]\nenforce = true\nidle_window = "1h"\n')
    r = run("collector", "--config", str(cfg), "--state-dir", str(tmp_path), timeout=30)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "[polcy]: unknown section, did you mean [policy]?" in r.stderr
    assert "listening" not in r.stdout


def test_demo_listens_where_it_is_told(tmp_path: Path) -> None:
    port = free_port()
    r = run(
        "demo",
        "--listen",
        f"127.0.0.1:{port}",
        "--nodes",
        "2",
        "--duration",
        "4s",
        "--report-interval",
        "1s",
        "--state-dir",
        str(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    assert f"collector on 127.0.0.1:{port}" in r.stdout
    assert re.search(r"summary: nodes 2, GPUs 8, reports produced [1-9]", r.stdout), r.stdout


def test_demo_on_a_port_in_use_says_so_and_leaves_nothing_behind(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "TMPDIR": str(tmp_path)}
        r = subprocess.run(
            [sys.executable, "-m", "gpuwarden", "demo", "--listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
    assert r.returncode == 1
    assert f"gpuwarden demo: cannot listen on 127.0.0.1:{port}: the address is in use" in (r.stderr)
    assert list(tmp_path.iterdir()) == []


def test_demo_refuses_a_listen_address_that_is_not_host_port() -> None:
    for bad, why in [
        ("localhost", "'localhost' is not HOST:PORT"),
        ("127.0.0.1:99999", "port 99999 is not in 0-65535"),
        (":50051", "':50051' has no host"),
    ]:
        r = run("demo", "--listen", bad, "--duration", "1s", timeout=30)
        assert r.returncode == 2, (bad, r.stdout)
        assert f"argument --listen: {why}" in r.stderr, r.stderr
