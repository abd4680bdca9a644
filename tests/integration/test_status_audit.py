"""``gpuwarden status`` and ``gpuwarden audit`` as a user runs them, against a real collector
in this process (plaintext and mTLS): the real CLI in a subprocess, real gRPC, real SQLite."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gpuwarden.agent.config import AgentConfig
from gpuwarden.agent.main import build_sampler_and_attributor
from gpuwarden.collector.audit import AuditLog
from gpuwarden.collector.enforce import AuditQuery
from gpuwarden.collector.server import Collector
from gpuwarden.collector.store import connect
from gpuwarden.common.types import (
    SLURM_NOT_CONFIGURED,
    AuditRecord,
    GpuWindow,
    JobInfo,
    NodeReport,
    ProcessInfo,
    SlurmStatus,
)
from tests.helpers import REPO, free_port, gpuwarden_cmd
from tests.pki import TestCA, server_tls

GIB = 1 << 30
USERS = ("alexandrina", "bartholomew", "constantinople", "dmitri")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        gpuwarden_cmd(*args),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
        env={**os.environ, "COLUMNS": "100", "XDG_CONFIG_HOME": "/nonexistent", **(env or {})},
    )


async def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess while this event loop keeps serving the collector."""
    return await asyncio.to_thread(run, *args, env=env)


def eight_gpu_report(node: str, seq: int, slurm: SlurmStatus) -> NodeReport:
    now = time.time()
    gpus = []
    for i in range(8):
        job = JobInfo(job_id=f"{4242000 + i // 2}", user=USERS[i // 2], account="proj")
        gpus.append(
            GpuWindow(
                uuid=f"GPU-{node}-{i}",
                index=i,
                samples=5,
                util_max=90.0 if i % 2 == 0 else 0.0,
                util_mean=80.0 if i % 2 == 0 else 0.0,
                mem_used_max_bytes=20 * GIB,
                mem_total_bytes=80 * GIB,
                processes=(ProcessInfo(pid=1000 + i),) if i % 2 == 0 else (),
                job=job,
                allocated=True,
            )
        )
    return NodeReport(
        node=node, seq=seq, window_start=now - 5, window_end=now, gpus=tuple(gpus), slurm=slurm
    )


def audit_record(job_id: str, ts: float, detail: str) -> AuditRecord:
    return AuditRecord(
        ts=ts,
        job_id=job_id,
        kind="idle",
        action="warn",
        outcome="dry_run",
        dry_run=True,
        gpus=("GPU-a",),
        detail=detail,
        evidence={"finding": {"kind": "idle"}},
        actor="gpuwarden-collector",
    )


async def fill(c: Collector) -> None:
    """Three nodes (Slurm ok, off, unavailable) with 8 GPUs each, and three audit records."""
    for node, slurm in (
        ("gpu01", SlurmStatus(available=True)),
        ("gpu02", SlurmStatus(available=False, error=SLURM_NOT_CONFIGURED)),
        ("gpu03", SlurmStatus(available=False, error="scontrol: timed out")),
    ):
        await c.ingestor.submit(eight_gpu_report(node, 1, slurm))
    log = AuditLog(conn=connect(c.store.path))
    now = time.time()
    log.append(audit_record("4242000", now - 3 * 3600, "three hours ago"))
    log.append(audit_record("4242001", now - 1800, "half an hour ago"))
    log.append(audit_record("4242001", now - 60, "a minute ago"))
    log.close()
    c.audit = AuditQuery(c.store.path)


@pytest.fixture
async def filled(collector: Collector) -> Collector:
    await fill(collector)
    return collector


async def test_status_shows_every_user_whole_within_the_terminal_and_slurm_honestly(
    filled: Collector,
) -> None:
    r = await cli("status", "--insecure", "--collector", f"127.0.0.1:{filled.port}")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100, r.stdout  # COLUMNS=100
    assert re.search(r"^gpu01\s+yes\s+ok\s", r.stdout, re.M), r.stdout
    assert re.search(r"^gpu02\s+yes\s+off\s", r.stdout, re.M), r.stdout
    assert re.search(r"^gpu03\s+yes\s+unavailable\s", r.stdout, re.M), r.stdout
    assert "gpu03: slurm unavailable: scontrol: timed out" in r.stdout
    for user in USERS:
        assert len(re.findall(rf"\b\d+ {user} x2\b", r.stdout)) == 3, r.stdout
    assert "#!#!#!#!" in r.stdout  # one character per GPU: busy, allocated but empty, ...
    assert "nodes 3  GPUs 24  busy 12  idle 0  allocated-but-empty 12" in r.stdout


async def test_status_json_is_one_object_with_nodes_gpus_and_counts(filled: Collector) -> None:
    r = await cli("status", "--json", "--insecure", "--collector", f"127.0.0.1:{filled.port}")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert [n["node"] for n in data["nodes"]] == ["gpu01", "gpu02", "gpu03"]
    assert [n["slurm"] for n in data["nodes"]] == ["ok", "off", "unavailable"]
    assert data["counts"]["gpus"] == 24 and data["counts"]["busy"] == 12
    gpu = data["nodes"][0]["gpus"][1]
    assert (gpu["use"], gpu["job_id"], gpu["user"]) == ("empty", "4242000", "alexandrina")


async def test_status_watch_refreshes_until_ctrl_c(filled: Collector) -> None:
    proc = await asyncio.create_subprocess_exec(
        *gpuwarden_cmd("status", "--watch", "0.2", "--insecure", "--collector",
                       f"127.0.0.1:{filled.port}"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "XDG_CONFIG_HOME": "/nonexistent"},
    )  # fmt: skip
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + 30
    while seen.count("nodes 3  GPUs 24") < 3 and time.monotonic() < deadline:
        seen += (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    await filled.ingestor.submit(eight_gpu_report("gpu04", 1, SlurmStatus()))
    while "nodes 4  GPUs 32" not in seen and time.monotonic() < deadline:
        seen += (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    assert seen.count("nodes 3  GPUs 24") >= 3 and "nodes 4  GPUs 32" in seen, seen
    assert b"Traceback" not in err


async def test_audit_since_accepts_ago_iso_and_unix_seconds(filled: Collector) -> None:
    target = ("--insecure", "--collector", f"127.0.0.1:{filled.port}")
    r = await cli("audit", *target)
    assert r.returncode == 0, r.stderr
    assert [line.split(" job ")[1].split(" idle")[0] for line in r.stdout.splitlines()] == [
        "4242000",
        "4242001",
        "4242001",
    ]  # oldest first
    an_hour_ago = time.time() - 3600
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(an_hour_ago))
    for since in ("1h", iso, f"{an_hour_ago:.0f}"):
        r = await cli("audit", "--since", since, *target)
        assert r.returncode == 0, r.stderr
        assert "half an hour ago" in r.stdout and "a minute ago" in r.stdout, (since, r.stdout)
        assert "three hours ago" not in r.stdout, since
    r = await cli("audit", "--since", "2d", *target)
    assert r.stdout.count("\n") == 3
    r = await cli("audit", "--since", "yesterday", *target)
    assert r.returncode == 2 and "--since: 'yesterday' is not a time" in r.stderr


async def test_audit_job_json_and_a_job_without_records(filled: Collector) -> None:
    target = ("--insecure", "--collector", f"127.0.0.1:{filled.port}")
    r = await cli("audit", "--job", "4242001", "--json", *target)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["detail"] for row in rows] == ["half an hour ago", "a minute ago"]
    assert rows[0]["evidence"] == {"finding": {"kind": "idle"}} and rows[0]["dry_run"] is True
    r = await cli("audit", "--job", "nosuchjob", *target)
    assert r.returncode == 1 and r.stdout == ""
    assert "no audit records for job nosuchjob" in r.stderr
    assert "the collector has no windows of this job either" in r.stderr
    r = await cli("audit", "--job", "4242003", *target)  # a job the collector knows, no records
    assert r.returncode == 1 and r.stderr.strip().endswith("no audit records for job 4242003")


@pytest.fixture
async def mtls(tmp_path: Path) -> AsyncIterator[tuple[Collector, TestCA]]:
    ca = TestCA(tmp_path / "pki")
    c = Collector(db_path=tmp_path / "db", listen="127.0.0.1:0", tls=server_tls(ca))
    await c.start()
    try:
        await fill(c)
        yield c, ca
    finally:
        await c.stop()


async def test_status_and_audit_work_against_an_mtls_collector(
    mtls: tuple[Collector, TestCA], tmp_path: Path
) -> None:
    c, ca = mtls
    reader = ca.issue("reader", role="reader")
    target = f"127.0.0.1:{c.port}"
    flags = ("--tls-ca", str(ca.ca), "--tls-cert", str(reader.cert), "--tls-key", str(reader.key))
    r = await cli("status", "--collector", target, *flags)
    assert r.returncode == 0 and re.search(r"^gpu01\s+yes\s+ok", r.stdout, re.M), r.stderr
    r = await cli("audit", "--job", "4242001", "--collector", target, *flags)
    assert r.returncode == 0 and "a minute ago" in r.stdout, r.stderr
    # The same from the user's client config, and from the environment.
    conf = tmp_path / "xdg" / "gpuwarden" / "client.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text(
        f'[client]\ncollector = "{target}"\ntls_ca = "{ca.ca}"\n'
        f'tls_cert = "{reader.cert}"\ntls_key = "{reader.key}"\n'
    )
    r = await cli("status", "--json", env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert r.returncode == 0 and len(json.loads(r.stdout)["nodes"]) == 3, r.stderr
    env = {
        "GPUWARDEN_CLIENT_COLLECTOR": target,
        "GPUWARDEN_CLIENT_TLS_CA": str(ca.ca),
        "GPUWARDEN_CLIENT_TLS_CERT": str(reader.cert),
        "GPUWARDEN_CLIENT_TLS_KEY": str(reader.key),
    }
    r = await cli("audit", "--json", env=env)
    assert r.returncode == 0 and r.stdout.count("\n") == 3, r.stderr
    # Plaintext to an mTLS collector: one clear line, no traceback.
    r = await cli("status", "--insecure", "--collector", target)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and f"gpuwarden status: collector {target}: UNAVAILABLE" in (
        r.stderr
    )
    # A certificate from another CA is refused just as clearly.
    other = TestCA(tmp_path / "other").issue("intruder")
    r = await cli(
        "status", "--collector", target, "--tls-ca", str(ca.ca), "--tls-cert", str(other.cert),
        "--tls-key", str(other.key),
    )  # fmt: skip
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


async def test_unreachable_collector_and_bad_settings_are_one_line_errors() -> None:
    target = f"127.0.0.1:{free_port()}"
    r = await cli("status", "--insecure", "--collector", target)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert f"gpuwarden status: collector {target}: UNAVAILABLE" in r.stderr
    r = await cli("audit", "--insecure", "--collector", "nohost")
    assert r.returncode == 2
    assert "configuration error: [client] collector: 'nohost' is not HOST:PORT" in r.stderr
    r = await cli("status", "--collector", target)  # neither TLS files nor --insecure
    assert r.returncode == 2 and "[client] tls_ca: not set" in r.stderr
    r = await cli("status", "--insecure", "--watch", "0")
    assert r.returncode == 2 and "--watch: '0' is shorter than 0.1 s" in r.stderr
    # --watch keeps trying, one line each time, until Ctrl-C
    proc = await asyncio.create_subprocess_exec(
        *gpuwarden_cmd("status", "--watch", "0.2", "--insecure", "--collector", target),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    assert proc.stderr is not None
    for _ in range(2):
        line = await asyncio.wait_for(proc.stderr.readline(), 30)
        assert b"UNAVAILABLE" in line and line.endswith(b"retrying every 0.2 s\n"), line
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0 and out == b"" and b"Traceback" not in err


def test_an_agent_with_slurm_off_reports_slurm_off_even_when_simulated(tmp_path: Path) -> None:
    cfg = AgentConfig(sampler="sim", slurm="off", insecure=True, spool_dir=tmp_path)
    sampler, attributor = build_sampler_and_attributor(cfg)
    sampler.open()
    try:
        attribution = attributor.attribute(sampler.sample(time.time()))
    finally:
        sampler.close()
    assert attribution.slurm.state == "off"
    assert all(a.job is None for a in attribution.gpus.values())
