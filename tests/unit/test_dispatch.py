"""Off the evaluation path: the action worker's bounds and the event fan-out."""

from __future__ import annotations

import threading
import time

from gpuwarden.collector.dispatch import ActionWorker, Fanout
from gpuwarden.collector.ladder import Action, ActionOutcome, Decision
from gpuwarden.collector.rules import Allocation, Finding, FindingKind, GpuRef
from gpuwarden.common.types import JobInfo

GPU = GpuRef("n1", "GPU-0", 0)


def decision(job_id: str) -> Decision:
    alloc = Allocation(JobInfo(job_id=job_id, requeue=True), (GPU,))
    finding = Finding(FindingKind.IDLE, job_id, (GPU,), 0.0, "idle")
    return Decision(100.0, alloc, finding, Action.REQUEUE, attempt=1)


class Gate:
    """An executor that holds every action until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.done: list[str] = []

    def execute(self, d: Decision) -> ActionOutcome:
        self.release.wait(10)
        self.done.append(d.job_id)
        return ActionOutcome(True, "ok")


def wait(predicate: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError("condition not met")


def test_worker_takes_one_action_per_job_and_refuses_past_its_queue_bound() -> None:
    gate = Gate()
    worker = ActionWorker(gate, lambda d: True, workers=2, queue_max=3)
    try:
        assert worker.submit(decision("1")) is None
        refused = worker.submit(decision("1"))
        assert refused is not None and "still being carried out" in refused
        assert worker.submit(decision("2")) is None
        assert worker.submit(decision("3")) is None
        full = worker.submit(decision("4"))
        assert full is not None and "already waiting or running" in full
        assert worker.results() == []  # nothing finished: submit never waited
        gate.release.set()
        wait(lambda: worker.in_flight() == 0)
        got = sorted((d.job_id, o is not None and o.ok) for d, o in worker.results())
        assert got == [("1", True), ("2", True), ("3", True)]
    finally:
        gate.release.set()
        worker.close()


def test_worker_does_not_act_when_the_last_check_finds_the_gpus_in_use() -> None:
    gate = Gate()
    gate.release.set()
    worker = ActionWorker(gate, lambda d: False)
    try:
        assert worker.submit(decision("5")) is None
        wait(lambda: worker.in_flight() == 0)
        assert [(d.job_id, o) for d, o in worker.results()] == [("5", None)]
        assert gate.done == []
    finally:
        worker.close()


def test_fanout_never_blocks_the_publisher_counts_drops_and_survives_a_failing_subscriber() -> None:
    release = threading.Event()
    seen: list[int] = []

    def slow(item: int) -> None:
        release.wait(10)
        seen.append(item)

    def broken(item: int) -> None:
        raise RuntimeError("subscriber bug")

    fanout: Fanout[int] = Fanout([broken, slow], queue_max=2)
    started = time.monotonic()
    for i in range(10):
        fanout.publish(i)
    assert time.monotonic() - started < 1.0
    assert fanout.dropped >= 6  # one in the subscriber's hands, two queued, the rest dropped
    release.set()
    fanout.close()
    assert seen == sorted(seen) and len(seen) == 10 - fanout.dropped
