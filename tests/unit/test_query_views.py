"""Views and plain-text formatting of the query client: exact text a user reads."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from gpuwarden.common.types import (
    SLURM_NOT_CONFIGURED,
    AuditRecord,
    ClusterSnapshot,
    GpuState,
    GpuWindow,
    JobInfo,
    NodeState,
    ProcessInfo,
    SlurmStatus,
)
from gpuwarden.query.format import (
    cluster_json,
    fit_width,
    format_audit_line,
    format_decisions,
    format_status,
    pack,
)
from gpuwarden.query.views import GpuUse, cluster_view, idle_job_ids

GIB = 1 << 30
NOW = 1_800_000_000.0
UTC = dt.UTC


def gpu(
    index: int,
    util: float | None,
    job: JobInfo | None = None,
    procs: int = 0,
    mem_gib: int = 0,
    errors: tuple[str, ...] = (),
) -> GpuState:
    return GpuState(
        window_end=NOW - 2,
        latest=GpuWindow(
            uuid=f"GPU-{index}",
            index=index,
            samples=5,
            util_max=util,
            util_mean=util,
            mem_used_max_bytes=None if util is None else mem_gib * GIB,
            mem_total_bytes=80 * GIB,
            processes=tuple(ProcessInfo(pid=100 + k) for k in range(procs)),
            errors=errors,
            job=job,
            allocated=job is not None,
        ),
    )


def snapshot() -> ClusterSnapshot:
    alice = JobInfo(job_id="1001", user="alexandrina")
    return ClusterSnapshot(
        now=NOW,
        windows_stored=1234,
        nodes=(
            NodeState(
                node="gpu01",
                last_seen=NOW - 2,
                connected=True,
                gpus=(
                    gpu(0, 97.0, alice, 1, 30),
                    gpu(1, 88.0, alice, 1, 30),
                    gpu(2, 1.0, JobInfo(job_id="1002", user="bob"), 1, 10),
                    gpu(3, 0.0, JobInfo(job_id="1003", user="charlotte-de-la-fontaine")),
                    *(gpu(i, 0.0) for i in range(4, 8)),
                ),
            ),
            NodeState(
                node="gpu02",
                last_seen=NOW - 600,
                connected=False,
                slurm=SlurmStatus(available=False, error=SLURM_NOT_CONFIGURED),
                gpus=(gpu(0, None, errors=("gpu_lost",)), gpu(1, 12.0, None, 1, 5)),
            ),
            NodeState(
                node="gpu03",
                last_seen=NOW - 1,
                connected=True,
                slurm=SlurmStatus(available=False, error="scontrol: timed out after 3 s"),
                gpus=(gpu(0, None), gpu(1, 0.0, errors=("xid:79",))),
            ),
        ),
    )


def test_each_gpu_is_classified_by_what_it_does_now() -> None:
    view = cluster_view(snapshot())
    uses = {n.node: [g.use.value for g in n.gpus] for n in view.nodes}
    assert uses == {
        "gpu01": ["busy", "busy", "idle", "empty", "free", "free", "free", "free"],
        "gpu02": ["lost", "busy"],
        "gpu03": ["unknown", "free"],
    }
    c = view.counts
    assert (c.gpus, c.busy, c.idle, c.empty, c.free, c.lost, c.unknown) == (12, 3, 1, 1, 5, 1, 1)
    gpu01 = view.nodes[0]
    assert [(j.job_id, j.user, j.gpus) for j in gpu01.jobs] == [
        ("1001", "alexandrina", (0, 1)),
        ("1002", "bob", (2,)),
        ("1003", "charlotte-de-la-fontaine", (3,)),
    ]


def test_slurm_is_ok_off_or_unavailable_never_ok_when_off() -> None:
    view = cluster_view(snapshot())
    assert [(n.slurm, n.slurm_error) for n in view.nodes] == [
        ("ok", ""),
        ("off", ""),
        ("unavailable", "scontrol: timed out after 3 s"),
    ]


def test_status_table_at_80_columns_keeps_every_name_whole() -> None:
    text = format_status(cluster_view(snapshot()), width=80, idle_jobs={"1002"})
    assert text == "\n".join(
        [
            "NODE  CONN SLURM       SEEN GPUS     UTIL MEM GiB JOBS (id user, xGPUs)",
            "gpu01 yes  ok          2s   ##~!....  23% 70/640  1001 alexandrina x2,",
            "                                                  1002 bob (idle),",
            "                                                  1003 charlotte-de-la-fontaine",
            "gpu02 no   off         10m  X#        12% 5/160   -",
            "gpu03 yes  unavailable 1s   ?.         0% 0/160   -",
            "nodes 3  GPUs 12  busy 3  idle 1  allocated-but-empty 1  free 5  lost 1",
            "unknown 1  windows stored 1234  idle allocations 1",
            "GPUS:  # busy  ~ idle (processes, no work)  ! allocated, nothing running  . free",
            "X lost  ? unknown",
            "gpu02 GPU 0: gpu_lost",
            "gpu03: slurm unavailable: scontrol: timed out after 3 s",
            "gpu03 GPU 1: xid:79",
        ]
    )


def test_eight_gpu_nodes_fit_the_width_whatever_the_jobs() -> None:
    users = ["alexandrina", "bartholomew", "constantinople", "dmitri", "e", "f", "g", "h"]
    nodes = tuple(
        NodeState(
            node=f"gpu{n:02d}",
            last_seen=NOW - 1,
            connected=True,
            gpus=tuple(
                gpu(i, 50.0, JobInfo(job_id=f"{n}{i:06d}", user=users[i]), 1, 40) for i in range(8)
            ),
        )
        for n in range(16)
    )
    view = cluster_view(ClusterSnapshot(now=NOW, nodes=nodes))
    for width in (80, 100, 120):
        text = format_status(view, width=width)
        assert max(len(line) for line in text.splitlines()) <= width, text
        for u in users:  # every user name, whole
            assert len(re.findall(rf"\d+ {u}\b", text)) == 16, (u, text)


def test_terminal_width_is_kept_between_80_and_120() -> None:
    assert (fit_width(40), fit_width(100), fit_width(300)) == (80, 100, 120)


def test_pack_keeps_items_whole_and_splits_only_what_cannot_fit() -> None:
    assert pack(["aa", "bb", "cc"], 6) == ["aa,", "bb, cc"]
    assert pack(["abcdefghij"], 4) == ["abcd", "efgh", "ij"]
    assert pack([], 10) == [""]


def test_status_json_has_every_node_gpu_and_count() -> None:
    data = json.loads(json.dumps(cluster_json(cluster_view(snapshot()))))
    assert data["counts"]["gpus"] == 12 and data["windows_stored"] == 1234
    gpu01 = data["nodes"][0]
    assert gpu01["node"] == "gpu01" and gpu01["connected"] is True and gpu01["slurm"] == "ok"
    assert gpu01["gpus"][0]["use"] == "busy" and gpu01["gpus"][0]["user"] == "alexandrina"
    assert data["nodes"][1]["slurm"] == "off"
    assert data["nodes"][1]["gpus"][0]["util_max_pct"] is None  # missing stays missing


RECORD = AuditRecord(
    ts=NOW,
    job_id="1002",
    kind="idle",
    action="warn",
    outcome="dry_run",
    dry_run=True,
    gpus=("GPU-2",),
    detail="no GPU of this allocation was active for 20 s (max utilisation below 5 %); "
    "warning 1 of 1, next: would requeue",
    actor="gpuwarden-demo",
)


def test_decisions_wrap_under_their_column_without_cutting_a_word() -> None:
    assert format_decisions([RECORD], width=80, tz=UTC) == [
        "latest decisions (newest first):",
        "  08:00:00 job 1002     idle       warn     no GPU of this allocation was active",
        "                                            for 20 s (max utilisation below 5",
        "                                            %); warning 1 of 1, next: would",
        "                                            requeue",
    ]
    assert format_decisions([], width=80) == []


def test_audit_line_holds_the_whole_record() -> None:
    assert format_audit_line(RECORD, tz=UTC) == (
        "2027-01-15 08:00:00 job 1002 idle warn [dry_run] no GPU of this allocation was "
        "active for 20 s (max utilisation below 5 %); warning 1 of 1, next: would requeue "
        "(by gpuwarden-demo)"
    )


def test_idle_jobs_are_those_the_ladder_acted_on_for_the_whole_allocation() -> None:
    partly = AuditRecord(
        ts=NOW, job_id="7", kind="idle", action="warn", outcome="dry_run", dry_run=True,
        gpus=(), detail="partly idle: 1 of 2 GPUs",
    )  # fmt: skip
    quiet = AuditRecord(
        ts=NOW, job_id="8", kind="idle", action="none", outcome="skipped", dry_run=True,
        gpus=(), detail="",
    )  # fmt: skip
    assert idle_job_ids([RECORD, partly, quiet]) == {"1002"}


@pytest.mark.parametrize(
    ("util", "procs", "job", "use"),
    [
        (5.0, 0, None, GpuUse.BUSY),  # the threshold itself counts as busy
        (4.9, 1, None, GpuUse.IDLE),
        (4.9, 0, JobInfo(job_id="1"), GpuUse.EMPTY),
        (0.0, 0, None, GpuUse.FREE),
        (None, 0, None, GpuUse.UNKNOWN),
    ],
)
def test_gpu_use_boundaries(
    util: float | None, procs: int, job: JobInfo | None, use: GpuUse
) -> None:
    node = NodeState(node="n", gpus=(gpu(0, util, job, procs),))
    (g,) = cluster_view(ClusterSnapshot(now=NOW, nodes=(node,))).nodes[0].gpus
    assert g.use is use


def test_the_query_package_imports_no_agent_collector_or_demo_code() -> None:
    import subprocess
    import sys

    code = (
        "import sys, gpuwarden.query, gpuwarden.query.commands, gpuwarden.query.format\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['gpuwarden', 'agent'], ['gpuwarden', 'collector'], ['gpuwarden', 'demo']))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_status_of_an_empty_cluster_is_the_header_and_zero_counts() -> None:
    """What a researcher with no running job (or a fresh collector) sees: no crash."""
    text = format_status(cluster_view(ClusterSnapshot(now=NOW)), width=80)
    assert text.splitlines()[0].startswith("NODE CONN SLURM SEEN GPUS")
    assert "nodes 0  GPUs 0" in text
