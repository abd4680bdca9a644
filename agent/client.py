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

from gpuwarden.agent.spool import Spool, SpoolCorrupt
from gpuwarden.common.tls import TlsFiles as TlsFiles  # re-exported for the agent
from gpuwarden.common.tls import make_channel as tls_channel
from gpuwarden.common.wire import MAX_REPORT_BYTES, REJECTED_SEQ_KEY
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb

log = logging.getLogger(__name__)

REPORT_METHOD = "/gpuwarden.v1.AgentService/Report"
_SEQ_FIELD = pb.NodeReport.DESCRIPTOR.fields_by_name["seq"].number
_SKIP_FIXED = {1: 8, 5: 4}  # wire types of fixed width: 64-bit, 32-bit


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise SpoolCorrupt("not a report: a varint runs past its end")


def report_seq(data: bytes) -> int:
    """The ``seq`` of a serialized ``NodeReport``, read from its top-level fields without
    decoding the rest (the bytes are sent as they are); SpoolCorrupt when they are not a
    well-formed message."""
    pos = 0
    seq = 0  # proto3: absent means 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        field, wire_type = tag >> 3, tag & 7
        if field == 0:
            raise SpoolCorrupt("not a report: field number 0")
        if wire_type == 0:
            value, pos = _varint(data, pos)
            if field == _SEQ_FIELD:
                seq = value
        elif wire_type == 2:
            length, pos = _varint(data, pos)
            pos += length
        elif wire_type in _SKIP_FIXED:
            pos += _SKIP_FIXED[wire_type]
        else:
            raise SpoolCorrupt(f"not a report: wire type {wire_type}")
        if pos > len(data):
            raise SpoolCorrupt("not a report: a field runs past the end")
    return seq


def _as_is(data: bytes) -> bytes:
    return data


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

    def _read_spooled(self, seq: int) -> bytes:
        """The spooled report's bytes, checked to hold the seq of its file name."""
        data = self.spool.read(seq)
        held = report_seq(data)
        if held != seq:
            raise SpoolCorrupt(f"holds seq={held}, not the seq of its file name")
        return data

    async def _session(self) -> bool:
        got_ack = False
        async with make_channel(self.target, self.tls) as channel:
            # The spooled bytes are a serialized NodeReport: sent as they are, not re-encoded.
            report_stream = channel.stream_stream(
                REPORT_METHOD, request_serializer=_as_is, response_deserializer=pb.Ack.FromString
            )
            call = report_stream(None)  # written to with call.write()
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
