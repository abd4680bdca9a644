"""Live cluster state (newest window of every GPU) and the watch stream's fan-out.

Watchers get events through small bounded queues. A slow watcher never slows ingestion:
updates for the same node replace each other (bursts collapse), and a watcher that still
falls behind is told to resync from a snapshot.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from gpuwarden.common.types import AuditRecord, GpuState, NodeReport, NodeState

# An event is a node's new state or a new audit record.
Event = NodeState | AuditRecord


class Watcher:
    """One subscriber's queue. ``get`` returns the next event, or None: resync needed."""

    def __init__(self, max_pending: int) -> None:
        self._nodes: dict[str, NodeState] = {}
        self._others: list[AuditRecord] = []
        self._max_pending = max_pending
        self._event = asyncio.Event()
        self.overflowed = False

    def push(self, event: Event) -> None:
        if isinstance(event, NodeState):
            self._nodes.pop(event.node, None)
            self._nodes[event.node] = event  # newest state replaces the pending one
        else:
            self._others.append(event)
        if len(self._nodes) + len(self._others) > self._max_pending:
            self.overflowed = True
            self._nodes.clear()
            self._others.clear()
        self._event.set()

    async def get(self) -> list[Event] | None:
        await self._event.wait()
        self._event.clear()
        if self.overflowed:
            self.overflowed = False
            return None
        events: list[Event] = [*self._others, *self._nodes.values()]
        self._others.clear()
        self._nodes.clear()
        return events


class ClusterState:
    def __init__(self, *, max_watcher_pending: int = 4096) -> None:
        self._nodes: dict[str, NodeState] = {}
        self._watchers: set[Watcher] = set()
        self._max_pending = max_watcher_pending
        self.started = time.time()

    def nodes(self) -> list[NodeState]:
        return sorted(self._nodes.values(), key=lambda n: n.node)

    def node(self, name: str) -> NodeState | None:
        return self._nodes.get(name)

    def apply(self, report: NodeReport) -> NodeState:
        old = self._nodes.get(report.node)
        if old is not None and report.window_end <= old.last_seen:
            # A replayed, older window: history has it, live state is newer. Ordered by time,
            # not by seq: a huge seq (or a spool that restarted at 1) must not freeze a node.
            return old
        gpus = tuple(GpuState(window_end=report.window_end, latest=g) for g in report.gpus)
        new = NodeState(
            node=report.node,
            last_seen=report.window_end,
            last_seq=report.seq,
            connected=old.connected if old else True,
            slurm=report.slurm,
            gpus=gpus,
        )
        self._nodes[report.node] = new
        self.publish(new)
        return new

    def set_connected(self, node: str, connected: bool) -> None:
        old = self._nodes.get(node) or NodeState(node=node)
        if old.connected == connected:
            return
        new = replace(old, connected=connected)
        self._nodes[node] = new
        self.publish(new)

    def forget_silent(self, before: float) -> list[str]:
        """Forget the disconnected nodes last seen before ``before`` (a node taken out of
        service); returns their names. Their history is the store's."""
        gone = [n for n, s in self._nodes.items() if not s.connected and s.last_seen < before]
        for n in gone:
            del self._nodes[n]
        return gone

    def publish(self, event: Event) -> None:
        for w in self._watchers:
            w.push(event)

    def subscribe(self) -> Watcher:
        w = Watcher(self._max_pending)
        self._watchers.add(w)
        return w

    def unsubscribe(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)
