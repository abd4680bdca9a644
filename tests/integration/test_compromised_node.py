"""A compromised node cannot steer enforcement.

Real parts: the local Slurm (scripts/slurm-up.sh) running the victims' jobs, a collector with
mTLS and the production executor wiring (``build_executor``: ``squeue --json`` corroboration,
Dask scheduler trust), under enforcement. The attackers hold valid node certificates of the
site CA and stream their own reports over gRPC:

- ``evil01`` reports a job that Slurm runs on another node, as idle, with facts copied from
  Slurm; the job is requeue-able, so only the corroboration stands between it and a requeue;
- the job's own node, compromised, reports another of its jobs as a Dask worker whose
  scheduler is an address the attacker listens on.

Nothing is acted on (each job still RUNNING, Restarts=0), nothing connects to the attacker's
address, and every refused attempt is in the audit log with its reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

pytest.register_assert_rewrite("slurm_fixtures")
from slurm_fixtures import SlurmCluster, job_field, submit, wait_state  # noqa: E402

from gpuwarden.collector.config import CollectorConfig  # noqa: E402
from gpuwarden.collector.enforce import attach_enforcement  # noqa: E402
from gpuwarden.collector.main import build_executor  # noqa: E402
from gpuwarden.collector.policy import Policy, PolicySet  # noqa: E402
from gpuwarden.collector.server import Collector  # noqa: E402
from gpuwarden.common.convert import report_to_pb  # noqa: E402
from gpuwarden.common.types import AuditRecord, GpuWindow, JobInfo, NodeReport, SlurmStatus  # noqa: E402
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc  # noqa: E402
from gpuwarden.slurm import CliSlurmClient, SlurmJob  # noqa: E402
from tests.fakenvml import default_gpu_uuid  # noqa: E402
from tests.integration.test_dask_untrusted import hostile_scheduler  # noqa: E402
from tests.pki import Issued, TestCA, server_tls  # noqa: E402

pytest_plugins = ("slurm_fixtures",)
pytestmark = [pytest.mark.slurm, pytest.mark.timeout(180)]

REPORT_S = 0.25
POLICY = Policy(
    idle_window=2.0,
    grace_period=0.0,
    warnings=1,
    warn_interval=1.0,
    window=REPORT_S,
    max_gap=1.5,
    action_retries=2,
    action_backoff=1.0,
    action_backoff_max=2.0,
    enforce=True,
)


def claim(job: SlurmJob, **extra: str) -> JobInfo:
    """What a node would report for ``job``: Slurm's own facts (the lie is elsewhere)."""
    return JobInfo(
        job_id=job.job_id,
        user=job.user,
        account=job.account,
        partition=job.partition,
        name=job.name,
        qos=job.qos,
        batch=job.batch,
        requeue=job.requeue,
        start_time=job.start_time or 0,
        source="cgroup",
        **extra,  # type: ignore[arg-type]
    )


async def stream(target: str, ca: bytes, cert: Issued, node: str, gpu: int, job: JobInfo) -> None:
    """Report ``job`` idle on GPU ``gpu`` of ``node`` (the node's other three GPUs busy
    without a job) every REPORT_S until cancelled."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=cert.key.read_bytes(),
        certificate_chain=cert.cert.read_bytes(),
    )

    async def reports() -> AsyncIterator[object]:
        seq = 0
        while True:
            seq += 1
            end = time.time()
            windows = tuple(  # every GPU of the node, as an agent reports them
                GpuWindow(
                    uuid=default_gpu_uuid(i),
                    index=i,
                    minor_number=i,
                    samples=5,
                    util_max=0.0 if i == gpu else 90.0,
                    util_mean=0.0 if i == gpu else 90.0,
                    job=job if i == gpu else None,
                    allocated=i == gpu,
                )
                for i in range(4)
            )
            yield report_to_pb(NodeReport(node, seq, end - REPORT_S, end, windows, SlurmStatus()))
            await asyncio.sleep(REPORT_S)

    async with grpc.aio.secure_channel(target, creds) as ch:
        async for _ack in pb_grpc.AgentServiceStub(ch).Report(reports()):
            pass


def refusals(records: list[AuditRecord]) -> list[AuditRecord]:
    return [r for r in records if r.outcome == "failed" and "not corroborated" in r.detail]


async def test_a_compromised_node_cannot_get_jobs_acted_on(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    node = slurm_cluster.node
    victim = submit("sleep 600", "-J", "gw-compromised-a", "--gres=gpu:1", "--requeue")
    worker = submit("sleep 600", "-J", "gw-compromised-b", "--gres=gpu:1", "--no-requeue")
    slurm = CliSlurmClient(timeout_s=30)
    wait_state(victim, "RUNNING")
    wait_state(worker, "RUNNING")
    jobs = {j: slurm.job(j) for j in (victim, worker)}
    assert all(j is not None for j in jobs.values())
    a, b = jobs[victim], jobs[worker]
    assert a is not None and b is not None
    assert a.requeue and not b.requeue

    ca = TestCA(tmp_path / "pki")
    evil = ca.issue("evil01", role="node")
    owner = ca.issue(node, role="node")
    collector = Collector(db_path=tmp_path / "c.db", listen="127.0.0.1:0", tls=server_tls(ca))
    await collector.start()
    tasks: list[asyncio.Task[None]] = []
    with hostile_scheduler("127.0.0.2", b"") as (port, peers):
        try:
            cfg = CollectorConfig(insecure=True, slurm_backend="cli", dask_timeout=5.0)
            enforcer = attach_enforcement(
                collector,
                policies=PolicySet(default=POLICY),
                executor=build_executor(cfg, collector),
                audit_jsonl=None,
                evaluate_interval_s=REPORT_S,
            )
            target = f"127.0.0.1:{collector.port}"
            ca_pem = ca.ca.read_bytes()
            scheduler = f"tcp://127.0.0.2:{port}"
            tasks = [
                asyncio.create_task(
                    stream(target, ca_pem, evil, "evil01", a.gpu_indices(node)[0], claim(a))
                ),
                asyncio.create_task(
                    stream(
                        target,
                        ca_pem,
                        owner,
                        node,
                        b.gpu_indices(node)[0],
                        claim(b, dask_scheduler=scheduler, dask_worker="SLURMCluster-7"),
                    )
                ),
            ]

            def audit(job_id: str) -> list[AuditRecord]:
                assert collector.audit is not None
                return collector.audit.query(job_id, 0.0, 100)

            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if all(len(refusals(audit(j))) >= POLICY.action_retries for j in jobs):
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(2.0)  # the ladder's fallback has run too
            enforcer.evaluate()
            got = {j: audit(j) for j in jobs}
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await collector.stop()

    # Nothing was acted on: Slurm's view of both jobs is unchanged.
    for job_id in (victim, worker):
        assert job_field(job_id, "JobState") == "RUNNING", job_id
        assert job_field(job_id, "Restarts") == "0", job_id
    assert peers == [], "the collector connected to the attacker's scheduler address"

    # Each attempt is audited with why it was refused, and no action was done.
    assert all(r.outcome != "done" for records in got.values() for r in records)
    a_refused = refusals(got[victim])
    assert len(a_refused) >= POLICY.action_retries, got[victim]
    assert {r.action for r in a_refused} == {"requeue"}
    assert f"node evil01 reported it, but Slurm runs it on {node}" in a_refused[0].detail
    b_refused = refusals(got[worker])
    assert len(b_refused) >= POLICY.action_retries, got[worker]
    assert {r.action for r in b_refused} == {"release_dask_worker"}
    assert f"dask scheduler {scheduler} (127.0.0.2) is not in dask_trusted_networks" in (
        b_refused[0].detail
    )
    assert "not the reporting node's address (127.0.0.1)" in b_refused[0].detail
