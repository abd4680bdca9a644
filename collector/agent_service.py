"""Agents' report streams: validate each report, hand it to group commit, ack what is stored.

Two RPCs share one loop: ``Report`` (one NodeReport per message; one ack per report, or
cumulative acks when the agent asks with request metadata ``gpuwarden-acks: cumulative``)
and ``ReportBatch`` (up to :data:`MAX_BATCH_REPORTS` reports of one node per message;
always cumulative acks). A cumulative ack means every report the stream sent up to and
including its seq is stored, so one ack covers a whole transaction's worth of the stream.

Who may report for which node is checked by the Authorizer (collector/authz.py) on the
message's ``node``; a batch's reports must all be for the batch's node.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from gpuwarden.collector.validate import ReportInvalid, validate_report
from gpuwarden.common.wire import (
    ACKS_CUMULATIVE,
    ACKS_KEY,
    MAX_BATCH_REPORTS,
    REJECTED_SEQ_KEY,
)
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from gpuwarden.collector.server import Collector

log = logging.getLogger(__name__)

Ctx = grpc.aio.ServicerContext[Any, Any]


def _retrieve(fut: asyncio.Future[bool]) -> None:
    """Mark an outcome nobody waits for any more as seen (no "never retrieved" noise)."""
    if not fut.cancelled():
        fut.exception()


def wants_cumulative(context: Ctx) -> bool:
    """Whether the agent asked for cumulative acks (``Ack.cumulative``) on this stream."""
    for key, value in context.invocation_metadata() or ():
        if key == ACKS_KEY:
            text = value if isinstance(value, str) else value.decode(errors="replace")
            return text == ACKS_CUMULATIVE
    return False


class AgentServicer(pb_grpc.AgentServiceServicer):
    def __init__(self, collector: Collector) -> None:
        self.c = collector

    async def Report(self, request_iterator: AsyncIterator[pb.NodeReport], context: Ctx) -> None:
        await _Stream(self.c, context, cumulative=wants_cumulative(context)).serve(
            request_iterator, batched=False
        )

    async def ReportBatch(
        self, request_iterator: AsyncIterator[pb.NodeReportBatch], context: Ctx
    ) -> None:
        await _Stream(self.c, context, cumulative=True).serve(request_iterator, batched=True)


class _Stream:
    """One agent stream: reads and validates reports in order, acks them as they commit."""

    def __init__(self, collector: Collector, context: Ctx, *, cumulative: bool) -> None:
        self.c = collector
        self.context = context
        self.cumulative = cumulative
        # (seq, node, outcome) of each report handed to the ingestor, in the order received
        self.pending: collections.deque[tuple[int, str, asyncio.Future[bool]]] = collections.deque()
        self.more = asyncio.Event()  # set when pending grows or reading has ended
        self.reading = True
        self.node: str | None = None  # the node this stream reports for, once seen
        self.refused: tuple[int, ReportInvalid] | None = None  # by the store, after validation
        self.failed: Exception | None = None  # the store could not write

    async def serve(self, messages: AsyncIterator[Any], *, batched: bool) -> None:
        acker = asyncio.create_task(self._write_acks())
        try:
            try:
                await self._read(messages, acker, batched=batched)
            except DecodeError as exc:
                await self._undecodable(exc, batched=batched)
            self.reading = False
            self.more.set()
            await acker
            if self.refused is not None:
                await self._refuse(self.refused[0], self.node, self.refused[1])
            if self.failed is not None:
                await self.context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the collector cannot store reports now: {self.failed}; keep them and retry",
                )
        finally:
            acker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await acker
            for _seq, _node, fut in self.pending:  # never acked: the agent resends them
                fut.add_done_callback(_retrieve)
            if self.node is not None:
                self.c.stream_closed(self.node)

    async def _read(
        self, messages: AsyncIterator[Any], acker: asyncio.Task[None], *, batched: bool
    ) -> None:
        c = self.c
        limits, rate_limiter, ingestor = c.limits, c.rate_limiter, c.ingestor
        pending, more = self.pending, self.more
        async for message in messages:
            if acker.done():
                return
            reports: Sequence[pb.NodeReport] = (message,)
            if batched:
                reports = await self._batch(message)
            for msg in reports:
                try:
                    report = validate_report(msg, now=time.time(), limits=limits)
                except ReportInvalid as exc:
                    await self._refuse(msg.seq, msg.node[:64], exc)
                if batched and report.node != message.node:
                    await self._refuse(
                        report.seq,
                        report.node,
                        ReportInvalid(f"node={report.node!r} is not the batch's node"),
                    )
                wait_s = rate_limiter.delay(report.node)
                if wait_s > 0:
                    await asyncio.sleep(wait_s)  # back-pressure: this node's stream waits
                if self.node != report.node:
                    if self.node is not None:
                        c.stream_closed(self.node)
                    self.node = report.node
                    c.stream_opened(report.node, self.context.peer())
                # Stored as received, handed over parsed (the store drops unknown fields).
                pending.append((report.seq, report.node, ingestor.submit(report, msg.gpus)))
            more.set()

    async def _batch(self, batch: pb.NodeReportBatch) -> Sequence[pb.NodeReport]:
        reports = batch.reports
        if len(reports) > MAX_BATCH_REPORTS:
            await self.context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{len(reports)} reports in one batch (limit {MAX_BATCH_REPORTS}); "
                "send smaller batches",
            )
        return reports

    async def _write_acks(self) -> None:
        """Acks in the order received, as their transactions commit: one per report, or one
        per group commit on a cumulative stream. A report the store refused (or could not
        write) ends acking; every report before it is acked."""
        pending, write = self.pending, self.context.write
        while True:
            if not pending:
                if not self.reading:
                    return
                self.more.clear()
                await self.more.wait()
                continue
            with contextlib.suppress(Exception):  # read below, report by report
                await pending[0][2]
            last: tuple[int, str] | None = None
            all_duplicates = True
            while pending and pending[0][2].done():
                seq, node, fut = pending.popleft()
                try:
                    duplicate = not fut.result()
                except ReportInvalid as exc:  # valid on the wire, but the store refused it
                    self.refused = (seq, exc)
                except Exception as exc:  # the store cannot write now: resend later
                    self.failed = exc
                if self.refused is not None or self.failed is not None:
                    break
                if self.cumulative:
                    last, all_duplicates = (seq, node), all_duplicates and duplicate
                else:
                    await write(pb.Ack(node=node, seq=seq, duplicate=duplicate))
            if last is not None:
                await write(
                    pb.Ack(node=last[1], seq=last[0], duplicate=all_duplicates, cumulative=True)
                )
            if self.refused is not None or self.failed is not None:
                return

    async def _refuse(self, seq: int, node: str | None, exc: ReportInvalid) -> None:
        self.c.rejected += 1
        log.warning("rejected report seq=%d from %r: %s", seq, node, exc)
        self.context.set_trailing_metadata(((REJECTED_SEQ_KEY, str(seq)),))
        await self.context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"report seq={seq}: {exc}")

    async def _undecodable(self, exc: DecodeError, *, batched: bool) -> None:
        """Bytes that are no report end the stream with INVALID_ARGUMENT (not UNKNOWN with a
        traceback in the log for each one); a flood is one log line a minute."""
        c = self.c
        c.undecodable += 1
        now = time.monotonic()
        if now - c.undecodable_logged >= 60.0:
            c.undecodable_logged = now
            log.warning(
                "a stream sent bytes that are no NodeReport (%s); %d so far", exc, c.undecodable
            )
        kind = "NodeReportBatch" if batched else "NodeReport"
        await self.context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"message is not a gpuwarden.v1.{kind}: {exc}"
        )
