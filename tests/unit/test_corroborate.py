"""What Slurm must confirm before the collector acts on a report (collector/corroborate.py).

Slurm's answer here is a fixed ``SlurmJob`` (the parsers that make it are tested on real
``squeue --json`` captures); the real-Slurm path is in tests/integration/test_compromised_node.py.
"""

from __future__ import annotations

import dataclasses

import pytest

from gpuwarden.collector.actions import ClusterExecutor
from gpuwarden.collector.corroborate import Corroborator, Uncorroborated
from gpuwarden.collector.findings import Allocation, Finding, FindingKind, GpuRef
from gpuwarden.collector.ladder import Action, Decision
from gpuwarden.common.types import JobInfo, SlurmStatus
from gpuwarden.slurm import ActionResult, Outcome, SlurmJob

JOB = SlurmJob(
    job_id="42",
    state="RUNNING",
    user="alice",
    account="a1",
    partition="gpu",
    name="train",
    qos="normal",
    batch=True,
    requeue=True,
    start_time=1_700_000_000,
    nodes=("gpu01",),
    gpus_by_node={"gpu01": (1, 2)},
)
CLAIM = JobInfo(
    job_id="42",
    user="alice",
    account="a1",
    partition="gpu",
    name="train",
    qos="normal",
    batch=True,
    requeue=True,
    start_time=1_700_000_000,
)


class FixedSlurm:
    """Slurm's answer for one job, and a record of what was done to it."""

    def __init__(self, job: SlurmJob | None) -> None:
        self._job = job
        self.done: list[str] = []

    def job(self, job_id: str) -> SlurmJob | None:
        return self._job if self._job is not None and self._job.job_id == job_id else None

    def jobs(self) -> list[SlurmJob]:
        return [self._job] if self._job else []

    def requeue(self, job_id: str, hold: bool = False) -> ActionResult:
        self.done.append(f"requeue {job_id}")
        return ActionResult(job_id, "requeue", Outcome.DONE, "done")

    def cancel(self, job_id: str) -> ActionResult:
        self.done.append(f"cancel {job_id}")
        return ActionResult(job_id, "cancel", Outcome.DONE, "done")

    def ping(self) -> SlurmStatus:
        return SlurmStatus()


def decision(claim: JobInfo = CLAIM, *gpus: GpuRef) -> Decision:
    gpus = gpus or (GpuRef("gpu01", "GPU-b", 1),)
    alloc = Allocation(job=claim, gpus=gpus)
    finding = Finding(FindingKind.IDLE, claim.job_id, gpus, 0.0, "idle")
    return Decision(1.0, alloc, finding, Action.REQUEUE)


def test_a_report_matching_slurm_is_corroborated_and_acted_on() -> None:
    slurm = FixedSlurm(JOB)
    outcome = ClusterExecutor(slurm).execute(decision())
    assert outcome.ok and slurm.done == ["requeue 42"]


@pytest.mark.parametrize(
    ("claim", "gpus", "why"),
    [
        (
            CLAIM,
            (GpuRef("gpu07", "GPU-x", 1),),
            "node gpu07 reported it, but Slurm runs it on gpu01",
        ),
        (CLAIM, (GpuRef("gpu01", "GPU-a", 0),), "GPU GPU-a (index 0, GRES index 0) on gpu01"),
        (dataclasses.replace(CLAIM, user="bob"), (), "user reported 'bob', Slurm says 'alice'"),
        (dataclasses.replace(CLAIM, account="x"), (), "account reported 'x', Slurm says 'a1'"),
        (dataclasses.replace(CLAIM, user=""), (), "user reported '', Slurm says 'alice'"),
        (dataclasses.replace(CLAIM, start_time=5), (), "start time reported 5"),
        (dataclasses.replace(CLAIM, job_id="43"), (), "job 43 is unknown to Slurm"),
    ],
)
def test_a_claim_slurm_does_not_confirm_is_refused(
    claim: JobInfo, gpus: tuple[GpuRef, ...], why: str
) -> None:
    slurm = FixedSlurm(JOB)
    outcome = ClusterExecutor(slurm).execute(decision(claim, *gpus))
    assert not outcome.ok and slurm.done == []
    assert outcome.detail.startswith("not corroborated: ")
    assert why in outcome.detail


def test_a_job_that_is_not_running_is_refused() -> None:
    with pytest.raises(Uncorroborated, match="job 42 is PENDING, not RUNNING"):
        Corroborator(FixedSlurm(dataclasses.replace(JOB, state="PENDING"))).check(decision())


def test_gpus_are_compared_in_slurms_numbering_by_minor_number() -> None:
    # NVML index 0 is /dev/nvidia2 here: Slurm's GRES index 2 (held), NVML 1 is GRES 0 (not)
    layout = [(0, 2), (1, 0), (2, 1), (3, 3)]
    check = Corroborator(FixedSlurm(JOB), lambda node: layout).check
    check(decision(CLAIM, GpuRef("gpu01", "GPU-a", 0)))
    with pytest.raises(Uncorroborated, match="index 1, GRES index 0"):
        check(decision(CLAIM, GpuRef("gpu01", "GPU-b", 1)))
