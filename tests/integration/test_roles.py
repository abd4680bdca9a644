"""Who may call what: every RPC x every kind of caller, against a real collector with mTLS,
a MUNGE port and the real munged of the test setup (scripts/slurm-up.sh starts it).

Each cell asserts what comes back: the status code, and for a researcher the data itself
(only their own jobs). The researcher is ``nobody``: the credential is made by running
``munge`` as that user, so the collector's UID -> name mapping is the real one.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from gpuwarden.collector.audit import AuditLog
from gpuwarden.collector.enforce import AuditQuery
from gpuwarden.collector.munge import MungeVerifier
from gpuwarden.collector.policy import Policy, PolicySet
from gpuwarden.collector.server import Collector
from gpuwarden.collector.store import connect
from gpuwarden.common.convert import report_to_pb
from gpuwarden.common.types import AuditRecord, GpuWindow, JobInfo, NodeReport
from gpuwarden.common.wire import MUNGE_KEY
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc
from tests.helpers import REPO, gpuwarden_cmd
from tests.pki import Issued, TestCA, server_tls

RESEARCHER = "nobody"  # a real account: munge runs as it
MINE, THEIRS, ROOTS = "5001", "5002", "5003"  # jobs of nobody, alice and root
OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def munged_up() -> bool:
    try:
        cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10, check=False)
        out = subprocess.run(
            ["unmunge"], input=cred.stdout, capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return cred.returncode == 0 and out.returncode == 0


@pytest.fixture(scope="module")
def munged(request: pytest.FixtureRequest) -> None:
    """munged answers; when it does not, the session Slurm fixture starts it."""
    if munged_up():
        return
    if os.environ.get("GPUWARDEN_SLURM_STATE") is None:
        pytest.fail("munged is not running: start it with scripts/slurm-up.sh", pytrace=False)
    from tests.integration.slurm_fixtures import slurm_cluster  # noqa: F401

    request.getfixturevalue("slurm_cluster")
    assert munged_up(), "munged still does not answer after scripts/slurm-up.sh"


def credential(user: str = RESEARCHER, payload: str = "gpuwarden-query") -> str:
    """A fresh MUNGE credential made by ``user`` (as a login node would)."""
    out = subprocess.run(
        ["munge", f"--string={payload}"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
        stdin=subprocess.DEVNULL,
        user=user,
    )
    return out.stdout.strip()


def gpu(i: int, job_id: str, user: str) -> GpuWindow:
    return GpuWindow(
        uuid=f"GPU-n1-{i}",
        index=i,
        samples=5,
        util_max=50.0,
        job=JobInfo(job_id=job_id, user=user, account="proj"),
        allocated=True,
    )


def n1_report(seq: int) -> NodeReport:
    now = time.time()
    gpus = (gpu(0, MINE, RESEARCHER), gpu(1, THEIRS, "alice"), gpu(2, ROOTS, "root"))
    return NodeReport(node="n1", seq=seq, window_start=now - 5, window_end=now, gpus=gpus)


def job_record(job_id: str) -> AuditRecord:
    return AuditRecord(
        ts=time.time(),
        job_id=job_id,
        kind="idle",
        action="warn",
        outcome="dry_run",
        dry_run=True,
        gpus=(),
        detail=f"job {job_id} idle",
    )


@dataclass
class Site:
    collector: Collector
    ca: TestCA
    certs: dict[str, Issued]
    tmp: Path

    @property
    def mtls(self) -> str:
        return f"127.0.0.1:{self.collector.port}"

    @property
    def munge(self) -> str:
        return f"127.0.0.1:{self.collector.munge_port}"


@pytest.fixture
async def site(munged: None, tmp_path: Path) -> AsyncIterator[Site]:
    ca = TestCA(tmp_path / "pki")
    certs = {
        "node n1": ca.issue("n1", role="node"),
        "node n2": ca.issue("n2", role="node"),
        "reader": ca.issue("reader-rita", role="reader"),
        "admin": ca.issue("admin-alice", role="admin"),
        "collector": ca.issue("collector-2", role="collector"),
        "no role": ca.issue("legacy-tool"),
        "mapped": ca.issue("legacy-ops"),
        "foreign CA": TestCA(tmp_path / "foreign").issue("admin-alice", role="admin"),
    }
    c = Collector(
        db_path=tmp_path / "db",
        listen="127.0.0.1:0",
        tls=server_tls(ca),
        roles={"legacy-ops": "reader"},
        munge=MungeVerifier(),
        munge_listen="127.0.0.1:0",
        audit_jsonl=tmp_path / "audit.jsonl",
    )
    c.policy_source = lambda: PolicySet(default=Policy(idle_window=1234.0))
    await c.start()
    try:
        await c.ingestor.submit(n1_report(1))
        log = AuditLog(conn=connect(c.store.path))
        for job in (MINE, THEIRS, ROOTS):
            log.append(job_record(job))
        log.close()
        c.audit = AuditQuery(c.store.path)
        yield Site(c, ca, certs, tmp_path)
    finally:
        await c.stop()


def channel(site: Site, who: str) -> grpc.aio.Channel:
    """A channel as ``who``: a certificate holder on the mTLS port, or a client without a
    certificate (researcher, nobody) on the MUNGE port or the mTLS port."""
    ca = site.ca.ca.read_bytes()
    if who in site.certs:
        cert = site.certs[who]
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=cert.key.read_bytes(),
            certificate_chain=cert.cert.read_bytes(),
        )
        return grpc.aio.secure_channel(site.mtls, creds)
    target = site.mtls if who == "no certificate (mTLS port)" else site.munge
    return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=ca))


Call = Callable[[grpc.aio.Channel, tuple[tuple[str, str], ...]], Awaitable[Any]]
_seq = iter(range(100, 10_000))


async def report_n1(ch: grpc.aio.Channel, md: tuple[tuple[str, str], ...]) -> Any:
    call = pb_grpc.AgentServiceStub(ch).Report(metadata=md, timeout=10)
    await call.write(report_to_pb(n1_report(next(_seq))))
    ack = await call.read()
    await call.done_writing()
    return ack


async def watch(ch: grpc.aio.Channel, md: tuple[tuple[str, str], ...]) -> Any:
    call = pb_grpc.QueryServiceStub(ch).Watch(
        pb.WatchRequest(include_snapshot=True), metadata=md, timeout=10
    )
    first = await call.read()
    call.cancel()
    return first


def q(name: str, request: Any) -> Call:
    async def go(ch: grpc.aio.Channel, md: tuple[tuple[str, str], ...]) -> Any:
        return await getattr(pb_grpc.QueryServiceStub(ch), name)(request, metadata=md, timeout=10)

    return go


async def get_policy(ch: grpc.aio.Channel, md: tuple[tuple[str, str], ...]) -> Any:
    return await pb_grpc.AdminServiceStub(ch).GetPolicy(pb.PolicyRequest(), metadata=md, timeout=10)


async def request_action(ch: grpc.aio.Channel, md: tuple[tuple[str, str], ...]) -> Any:
    request = pb.ActionRequest(job_id=MINE, action="warn")
    return await pb_grpc.AdminServiceStub(ch).RequestAction(request, metadata=md, timeout=10)


RPCS: dict[str, Call] = {
    "Report": report_n1,
    "GetSnapshot": q("GetSnapshot", pb.SnapshotRequest()),
    "Watch": watch,
    "GetHistory": q("GetHistory", pb.HistoryRequest(node="n1")),
    "GetAudit": q("GetAudit", pb.AuditRequest()),
    "Whoami": q("Whoami", pb.WhoamiRequest()),
    "GetPolicy": get_policy,
    "RequestAction": request_action,  # this site's collector takes no actions: see below
}

# Only an admin gets past authorization to RequestAction; this site attaches no admin actions,
# so the admin's call is then refused by the collector itself (test_admin_actions.py acts).
NO_ACTIONS = grpc.StatusCode.FAILED_PRECONDITION

# caller -> expected status per RPC, in RPCS' order
MATRIX = {
    "node n1": (OK, DENIED, DENIED, DENIED, DENIED, OK, DENIED, DENIED),
    "node n2": (DENIED, DENIED, DENIED, DENIED, DENIED, OK, DENIED, DENIED),  # reports n1's node
    "reader": (DENIED, OK, OK, OK, OK, OK, DENIED, DENIED),
    "admin": (DENIED, OK, OK, OK, OK, OK, OK, NO_ACTIONS),
    "researcher (MUNGE)": (DENIED, OK, OK, OK, OK, OK, DENIED, DENIED),
    "collector": (DENIED,) * 8,  # the collector's own kind of certificate reads nothing
    "no role": (DENIED,) * 8,
    "mapped": (DENIED, OK, OK, OK, OK, OK, DENIED, DENIED),  # roles_file: legacy-ops = reader
    "no certificate, no MUNGE": (UNAUTH,) * 8,
    "no certificate (mTLS port)": (UNAVAILABLE,) * 8,
    "foreign CA": (UNAVAILABLE,) * 8,
}


async def call_as(site: Site, who: str, rpc: str) -> tuple[grpc.StatusCode, Any]:
    md = ((MUNGE_KEY, await asyncio.to_thread(credential)),) if "MUNGE)" in who else ()
    async with channel(site, who) as ch:
        try:
            return OK, await RPCS[rpc](ch, md)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details()


async def test_role_matrix_every_rpc_by_every_kind_of_caller(site: Site) -> None:
    got: dict[str, tuple[grpc.StatusCode, ...]] = {}
    results: dict[tuple[str, str], Any] = {}
    for who in MATRIX:
        codes = []
        for rpc in RPCS:
            code, result = await call_as(site, who, rpc)
            codes.append(code)
            results[who, rpc] = result
        got[who] = tuple(codes)
    assert got == MATRIX
    # What came back, where it was allowed.
    assert results["node n1", "Report"].seq > 0
    assert "'n1'" in results["node n2", "Report"]  # "report for node 'n1' on ... 'n2'"
    assert "no gpuwarden role" in results["no role", "GetSnapshot"]
    assert (
        "no client certificate and no MUNGE credential"
        in results["no certificate, no MUNGE", "GetSnapshot"]
    )
    assert (results["admin", "Whoami"].name, results["admin", "Whoami"].role) == (
        "admin-alice",
        "admin",
    )
    whoami = results["researcher (MUNGE)", "Whoami"]
    assert (whoami.name, whoami.role, whoami.via) == (RESEARCHER, "researcher", "munge")
    assert json.loads(results["admin", "GetPolicy"].policy_json)["default"]["idle_window"] == 1234

    def jobs_in_snapshot(snap: pb.ClusterSnapshot) -> set[str]:
        return {g.latest.job.job_id for n in snap.nodes for g in n.gpus}

    assert jobs_in_snapshot(results["reader", "GetSnapshot"]) == {MINE, THEIRS, ROOTS}
    assert jobs_in_snapshot(results["researcher (MUNGE)", "GetSnapshot"]) == {MINE}
    assert [g.latest.job.job_id for g in results["researcher (MUNGE)", "Watch"].node.gpus] == [MINE]
    assert len(results["reader", "Watch"].node.gpus) == 3
    history = results["researcher (MUNGE)", "GetHistory"].windows
    assert history and {w.gpu.job.job_id for w in history} == {MINE}
    assert {w.gpu.job.job_id for w in results["reader", "GetHistory"].windows} == {
        MINE,
        THEIRS,
        ROOTS,
    }
    assert [r.job_id for r in results["researcher (MUNGE)", "GetAudit"].records] == [MINE]
    assert {r.job_id for r in results["admin", "GetAudit"].records} >= {MINE, THEIRS, ROOTS}
    # Every admin call is audited with who made it; refused calls did not run.
    admin_calls = [r for r in site.collector.audit.query("", 0, 100) if r.kind == "admin"]  # type: ignore[union-attr]
    assert [(r.action, r.actor, r.outcome) for r in admin_calls] == [  # newest first
        ("RequestAction", "admin-alice", "failed"),
        ("GetPolicy", "admin-alice", "done"),
    ]
    lines = [json.loads(x) for x in (site.tmp / "audit.jsonl").read_text().splitlines()]
    assert [(x["action"], x["actor"]) for x in lines] == [
        ("GetPolicy", "admin-alice"),
        ("RequestAction", "admin-alice"),
    ]
    # Only the authorized report was stored (the one of the fixture, and node n1's own).
    assert site.collector.store.count_reports() == 2


async def test_a_researcher_reads_one_job_only_if_it_is_theirs(site: Site) -> None:
    async with channel(site, "researcher (MUNGE)") as ch:
        stub = pb_grpc.QueryServiceStub(ch)

        async def md() -> tuple[tuple[str, str], ...]:
            return ((MUNGE_KEY, await asyncio.to_thread(credential)),)

        mine = await stub.GetHistory(pb.HistoryRequest(job_id=MINE), metadata=await md())
        theirs = await stub.GetHistory(pb.HistoryRequest(job_id=THEIRS), metadata=await md())
        audit = await stub.GetAudit(pb.AuditRequest(job_id=THEIRS), metadata=await md())
    assert len(mine.windows) == 1 and not theirs.windows and not audit.records


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: "MUNGE:not-a-credential:", "MUNGE credential refused"),
        (lambda: "rm -rf /", "is not a MUNGE credential"),
        (lambda: credential(payload="sshd-login"), "made for another purpose"),
    ],
)
async def test_a_bad_munge_credential_is_unauthenticated(
    site: Site, make: Callable[[], str], message: str
) -> None:
    cred = await asyncio.to_thread(make)
    async with channel(site, "researcher (MUNGE)") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await pb_grpc.QueryServiceStub(ch).GetSnapshot(
                pb.SnapshotRequest(), metadata=((MUNGE_KEY, cred),), timeout=10
            )
    assert err.value.code() == UNAUTH and message in (err.value.details() or "")


async def test_a_replayed_munge_credential_is_refused(site: Site) -> None:
    cred = await asyncio.to_thread(credential)
    async with channel(site, "researcher (MUNGE)") as ch:
        stub = pb_grpc.QueryServiceStub(ch)
        first = await stub.Whoami(pb.WhoamiRequest(), metadata=((MUNGE_KEY, cred),))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Whoami(pb.WhoamiRequest(), metadata=((MUNGE_KEY, cred),))
    assert first.name == RESEARCHER
    assert err.value.code() == UNAUTH and "Replayed credential" in (err.value.details() or "")


async def test_status_and_audit_work_for_a_researcher_with_munge(site: Site) -> None:
    """The real CLI as root on a "login node": no certificate, so it sends MUNGE by itself."""
    env = {**os.environ, "XDG_CONFIG_HOME": "/nonexistent", "COLUMNS": "100"}
    flags = ("--collector", site.munge, "--tls-ca", str(site.ca.ca))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            gpuwarden_cmd(*args),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env=env,
            check=False,
        )

    status = await asyncio.to_thread(run, "status", "--json", *flags)
    assert status.returncode == 0, status.stderr
    gpus = [g for n in json.loads(status.stdout)["nodes"] for g in n["gpus"]]
    assert [(g["job_id"], g["user"]) for g in gpus] == [(ROOTS, "root")]
    audit = await asyncio.to_thread(run, "audit", "--json", *flags)
    assert audit.returncode == 0, audit.stderr
    assert [json.loads(x)["job_id"] for x in audit.stdout.splitlines()] == [ROOTS]
    other = await asyncio.to_thread(run, "audit", "--job", THEIRS, *flags)
    assert other.returncode == 1 and "no audit records for job 5002" in other.stderr
