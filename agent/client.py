"""gRPC client: streams spooled reports to the collector and removes what it acks.

One bidirectional ``AgentService.Report`` stream per connection. Everything in the spool is
(re)sent in sequence order after each (re)connect; acks delete spool files. Disconnects are
retried with jittered exponential backoff. A report the collector rejects as invalid
(INVALID_ARGUMENT with the ``gpuwarden-rejected-seq`` trailer) is moved aside so it cannot
block the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import grpc
from google.protobuf.message import DecodeError

from gpuwarden.agent.spool import Spool, SpoolCorrupt
from gpuwarden.common.tls import TlsFiles as TlsFiles  # re-exported for the agent
from gpuwarden.common.tls import make_channel as tls_channel
from gpuwarden.common.wire import MAX_REPORT_BYTES, REJECTED_SEQ_KEY
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


def make_channel(target: str, tls: TlsFiles | None) -> grpc.aio.Channel:
    options = [
        ("grpc.max_send_message_length", MAX_REPORT_BYTES),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
    ]
    return tls_channel(target, tls, options)


class ReportStreamer:
    def __init__(
        self,
        target: str,
        spool: Spool,
        *,
        tls: TlsFiles | None = None,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_in_flight: int = 256,
    ) -> None:
        self.target = target
        self.spool = spool
        self.tls = tls
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_in_flight = max_in_flight
        self.connected = False
        self.sent = 0
        self.acked = 0
        self.rejected = 0
        self._wake = asyncio.Event()

    def notify_new_report(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Stream until cancelled, reconnecting forever."""
        delay = self.backoff_initial_s
        while True:
            try:
                got_ack = await self._session()
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                got_ack = self._handle_rpc_error(exc)
            except Exception:
                log.exception("report stream to %s failed", self.target)
                got_ack = False
            finally:
                self.connected = False
            if got_ack:
                delay = self.backoff_initial_s
            sleep = random.uniform(0, delay)  # full jitter: agents do not reconnect in step
            log.info("reconnecting to collector %s in %.1f s", self.target, sleep)
            await asyncio.sleep(sleep)
            delay = min(self.backoff_max_s, delay * 2)

    def _handle_rpc_error(self, exc: grpc.aio.AioRpcError) -> bool:
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
            trailers: tuple[tuple[str, str | bytes], ...] = tuple(
                exc.trailing_metadata() or ()  # type: ignore[arg-type]
            )
            for key, value in trailers:
                if key == REJECTED_SEQ_KEY:
                    seq = int(value)
                    self.spool.reject(seq)
                    self.rejected += 1
                    log.error(
                        "collector rejected report seq=%d (%s); moved to %s",
                        seq,
                        exc.details(),
                        self.spool.directory / "rejected",
                    )
                    return True
        log.warning("collector %s: %s %s", self.target, exc.code().name, exc.details())
        return False

    def _read_spooled(self, seq: int) -> pb.NodeReport:
        data = self.spool.read(seq)
        try:
            report = pb.NodeReport.FromString(data)
        except DecodeError as exc:
            raise SpoolCorrupt(f"not a report: {exc}") from None
        if report.seq != seq:
            raise SpoolCorrupt(f"holds seq={report.seq}, not the seq of its file name")
        return report

    async def _session(self) -> bool:
        got_ack = False
        async with make_channel(self.target, self.tls) as channel:
            stub = pb_grpc.AgentServiceStub(channel)
            call = stub.Report()
            in_flight: set[int] = set()
            ack_event = asyncio.Event()

            async def read_acks() -> None:
                nonlocal got_ack
                async for ack in call:
                    got_ack = True
                    self.connected = True
                    self.spool.ack(ack.seq)
                    in_flight.discard(ack.seq)
                    self.acked += 1
                    ack_event.set()

            reader = asyncio.create_task(read_acks())
            try:
                last_sent = 0
                while not reader.done():
                    for seq in self.spool.pending(after=last_sent):
                        if len(in_flight) >= self.max_in_flight:
                            break
                        try:
                            report = self._read_spooled(seq)
                        except FileNotFoundError:
                            continue  # acked or dropped meanwhile
                        except SpoolCorrupt as exc:
                            self.spool.set_aside(seq, str(exc))
                            continue
                        await call.write(report)
                        in_flight.add(seq)
                        last_sent = seq
                        self.sent += 1
                    self._wake.clear()
                    ack_event.clear()
                    waiters = [
                        asyncio.ensure_future(self._wake.wait()),
                        asyncio.ensure_future(ack_event.wait()),
                    ]
                    await asyncio.wait([reader, *waiters], return_when=asyncio.FIRST_COMPLETED)
                    for w in waiters:
                        w.cancel()
                await reader  # re-raises the stream's error
                return got_ack
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await reader
                call.cancel()
