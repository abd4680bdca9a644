"""Streams spooled reports to the collector and removes what it acks.

One bidirectional call per connection, spoken by the agent's own gRPC-over-HTTP/2 client
(``grpc_h2``) on a blocking socket in one thread: no grpcio and no asyncio in the agent.
Everything in the spool is (re)sent in sequence order after each (re)connect; acks delete
spool files. The agent always asks for cumulative acks (one ack covers every report the
call sent up to its seq); a collector that does not give them acks report by report.

A backlog (two or more reports spooled when the connection is made) goes as
``ReportBatch``: up to 256 spooled reports per ``NodeReportBatch``, so that the collector
pays its per-message cost once per batch. Once it is drained the call is ended and a
``Report`` call takes over, one report per message, which costs the collector less than
batches of one. A collector without ``ReportBatch`` (UNIMPLEMENTED) gets the backlog on
``Report`` until that connection is lost.

Disconnects are retried with jittered exponential backoff. A report the collector rejects
as invalid (INVALID_ARGUMENT with the ``gpuwarden-rejected-seq`` trailer) is moved aside so
it cannot block the stream.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

import gpuwarden
from gpuwarden.agent.grpc_h2 import GrpcStream
from gpuwarden.agent.grpc_status import StatusCode, StreamError
from gpuwarden.agent.grpc_tls import client_tls_context
from gpuwarden.agent.h2_connection import Keepalive
from gpuwarden.agent.report_wire import BatchBuilder, report_fields
from gpuwarden.agent.spool import Spool, SpoolCorrupt
from gpuwarden.common.address import split_host_port
from gpuwarden.common.tls import TlsFiles as TlsFiles  # re-exported for the agent
from gpuwarden.common.wire import (
    ACKS_CUMULATIVE,
    ACKS_KEY,
    MAX_REPORT_BYTES,
    REJECTED_SEQ_KEY,
)
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)

REPORT_METHOD = "/gpuwarden.v1.AgentService/Report"
BATCH_METHOD = "/gpuwarden.v1.AgentService/ReportBatch"
MAX_ACK_BYTES = 64 << 10  # an Ack is a node name, a seq and a flag
# ``offer`` sends from the sampling thread only while fewer reports than this wait for an
# ack: the collector keeps up, so the socket takes the bytes without blocking sampling.
_KEEPING_UP = 4
# Refusals that retrying does not heal without a change at one end: said as errors.
_REFUSED = (StatusCode.UNAUTHENTICATED, StatusCode.PERMISSION_DENIED, StatusCode.UNIMPLEMENTED)


class ReportStreamer:
    """Sends the spool's reports from the thread that calls ``run`` until ``stop``.

    ``notify_new_report`` and ``stop`` may be called from any thread (``stop`` also from a
    signal handler): they write one byte to a pipe the streaming thread waits on.
    """

    def __init__(
        self,
        target: str,
        spool: Spool,
        *,
        tls: TlsFiles | None = None,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_in_flight: int = 1024,
        keepalive: Keepalive | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.target = target
        self.host, self.port = split_host_port(target)
        self.spool = spool
        self.tls = tls
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_in_flight = max_in_flight
        self.keepalive = keepalive or Keepalive()
        self.connect_timeout_s = connect_timeout_s
        self.connected = False
        self.connections = 0  # made (TCP, TLS and the call's headers sent)
        self.sent = 0  # reports
        self.acked = 0  # reports acked
        self.acks = 0  # acks received (a cumulative one covers many reports)
        self.batches = 0  # NodeReportBatch messages sent
        self.rejected = 0
        self._stop = threading.Event()
        self._drain_until = 0.0
        # The stream and what was sent on it, shared by the streaming thread and ``offer``.
        self._lock = threading.Lock()
        self._stream_now: GrpcStream | None = None
        self._in_flight: collections.deque[int] = collections.deque()  # sent, in seq order
        self._last_sent = 0
        self._backlog = True  # spooled reports the streaming thread has not sent yet
        self._batched = False  # the call now open is ReportBatch
        self._no_batches = False  # the collector answered ReportBatch with UNIMPLEMENTED
        self._session_acks = 0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        weakref.finalize(self, _close_fds, self._wake_r, self._wake_w)

    # -- any thread ----------------------------------------------------------------------
    def notify_new_report(self) -> None:
        with contextlib.suppress(BlockingIOError):  # already awake: one byte is enough
            os.write(self._wake_w, b"r")

    def stop(self, drain_s: float = 0.0) -> None:
        """End ``run``: first, for at most ``drain_s``, while the collector is acking,
        send what is spooled (what is left stays spooled for the next start)."""
        self._drain_until = time.monotonic() + drain_s
        self._stop.set()
        self.notify_new_report()

    # -- the streaming thread --------------------------------------------------------------
    def run(self) -> None:
        """Stream until ``stop``, reconnecting with backoff."""
        delay = self.backoff_initial_s
        while not self._stop.is_set():
            self._session_acks = 0
            handled = False
            try:
                if self._session():
                    continue  # a drained backlog: on to Report at once
            except StreamError as exc:
                handled = self._handle_error(exc)
            except Exception:
                log.exception("report stream to %s failed", self.target)
            finally:
                self.connected = False
            if self._stop.is_set():
                break
            if handled or self._session_acks:
                delay = self.backoff_initial_s
            sleep = random.uniform(0, delay)  # full jitter: agents do not reconnect in step
            log.info("reconnecting to collector %s in %.1f s", self.target, sleep)
            self._sleep(sleep)
            delay = min(self.backoff_max_s, delay * 2)

    def _sleep(self, seconds: float) -> None:
        """Wait ``seconds`` or until ``stop`` (new reports do not cut it short)."""
        import select

        until = time.monotonic() + seconds
        while not self._stop.is_set() and (left := until - time.monotonic()) > 0:
            select.select([self._wake_r], [], [], left)
            self._drain_wakeups()

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass

    def _handle_error(self, exc: StreamError) -> bool:
        """Log what ended the stream; True when the collector answered (no backoff)."""
        if exc.code == StatusCode.UNIMPLEMENTED and self._batched:
            self._no_batches = True
            log.info(
                "collector %s has no ReportBatch (%s); sending reports one by one on Report",
                self.target,
                exc.details,
            )
            return True
        if exc.transport and not self._batched:
            self._no_batches = False  # another collector may answer next: ask it again
        if exc.code == StatusCode.INVALID_ARGUMENT:
            for key, value in exc.trailers:
                if key == REJECTED_SEQ_KEY and value.isdigit():
                    seq = int(value)
                    if not self.spool.reject(seq):
                        log.warning("collector rejected report seq=%d, not in the spool", seq)
                        return True
                    self.rejected += 1
                    log.error(
                        "collector rejected report seq=%d (%s); moved to %s",
                        seq,
                        exc.details,
                        self.spool.directory / "rejected",
                    )
                    return True
        if exc.code in _REFUSED:
            log.error(
                "collector %s refused this agent: %s %s (check the node name, tls_cert and "
                "tls_key)",
                self.target,
                exc.code.name,
                exc.details,
            )
        elif exc.transport:
            log.warning("collector %s unavailable: %s", self.target, exc.details)
        else:
            log.warning("collector %s: %s %s", self.target, exc.code.name, exc.details)
        return False

    def _read_spooled(self, seq: int) -> tuple[bytes, bytes]:
        """The spooled report's bytes and node, checked to hold the seq it was spooled under."""
        data = self.spool.read(seq)
        held, node = report_fields(data)
        if held != seq:
            raise SpoolCorrupt(f"holds seq={held}, but was spooled as seq={seq}")
        return data, node

    def _tls_context(self) -> ssl.SSLContext | None:
        """Built for every connection, so renewed certificate files are picked up."""
        if self.tls is None:
            return None
        cert, key = self.tls.cert, self.tls.key
        try:
            return client_tls_context(
                str(self.tls.ca),
                None if cert is None else str(cert),
                None if key is None else str(key),
            )
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise StreamError(
                StatusCode.UNAVAILABLE,
                f"cannot load the TLS files (tls_ca, tls_cert, tls_key): {exc}",
                transport=True,
            ) from None

    def _stopping_done(self) -> bool:
        return not len(self.spool) or not self.connected or time.monotonic() >= self._drain_until

    def _session(self) -> bool:
        """One connection and call; True when it ended because a backlog sent on
        ReportBatch is drained (Report takes over at once)."""
        batched = not self._no_batches and len(self.spool) >= 2
        stream = GrpcStream.open(
            self.host,
            self.port,
            BATCH_METHOD if batched else REPORT_METHOD,
            tls=self._tls_context(),
            connect_timeout_s=self.connect_timeout_s,
            keepalive=self.keepalive,
            max_send_bytes=MAX_REPORT_BYTES,
            max_receive_bytes=MAX_ACK_BYTES,
            user_agent=f"gpuwarden-agent/{gpuwarden.__version__}",
            metadata=((ACKS_KEY, ACKS_CUMULATIVE),),
        )
        self.connections += 1
        with self._lock:
            self._in_flight.clear()
            self._last_sent = 0
            self._backlog = True
            self._batched = batched
            self._stream_now = stream
        try:
            return self._stream(stream)
        finally:
            with self._lock:
                self._stream_now = None
            stream.close()

    def offer(self, seq: int, report: bytes) -> None:
        """A report just spooled (from the sampling thread): sent at once when the stream is
        up and has nothing older to send, else woken for (the streaming thread sends it
        from the spool). Never waits for the streaming thread."""
        if not self._lock.acquire(blocking=False):
            self.notify_new_report()
            return
        try:
            stream = self._stream_now
            if (
                stream is None
                or self._batched  # the streaming thread sends the backlog in batches
                or self._backlog
                or seq <= self._last_sent
                or len(self._in_flight) >= _KEEPING_UP
                or not stream.can_send()
            ):
                self.notify_new_report()
                return
            try:
                stream.send(report)
            except StreamError:
                self.notify_new_report()  # the streaming thread finds out why and reconnects
                return
            self._in_flight.append(seq)
            self._last_sent = seq
            self.sent += 1
        finally:
            self._lock.release()

    def _send_spooled(self, stream: GrpcStream) -> None:
        """Send what is spooled and not yet sent on this call, in order (under the lock):
        one message per report on Report, NodeReportBatch messages on ReportBatch."""
        self._backlog = False
        batch: BatchBuilder | None = None
        for seq in self.spool.pending(after=self._last_sent):
            room = self.max_in_flight - len(self._in_flight) - (len(batch.seqs) if batch else 0)
            if room <= 0 or not stream.can_send():
                self._backlog = True
                break
            try:
                report, node = self._read_spooled(seq)
            except FileNotFoundError:
                continue  # acked or dropped meanwhile
            except SpoolCorrupt as exc:
                self.spool.set_aside(seq, str(exc))
                continue
            if not self._batched:
                self._sent(stream, report, (seq,))
                continue
            if batch is not None and not batch.fits(node, report):
                self._sent(stream, batch.message(), batch.seqs)
                batch = None
            if batch is None:
                batch = BatchBuilder(node)
                if not batch.fits(node, report):
                    self.spool.set_aside(seq, f"{len(report)} bytes, too large to send")
                    batch = None
                    continue
            batch.add(seq, report)
        if batch is not None:
            self._sent(stream, batch.message(), batch.seqs)

    def _sent(self, stream: GrpcStream, message: bytes, seqs: Sequence[int]) -> None:
        """Send one message carrying the reports ``seqs``; a failed write raises how the
        call itself ended, when it did (its status and trailers say more than the write)."""
        try:
            stream.send(message)
        except StreamError as exc:
            raise stream.status_after(exc) from None
        self._in_flight.extend(seqs)
        self._last_sent = seqs[-1]
        self.sent += len(seqs)
        if self._batched:
            self.batches += 1

    def _stream(self, stream: GrpcStream) -> bool:
        """Send and read acks until stopped or the call ends; True when a ReportBatch call
        has nothing left to send or wait for. The lock is held except while blocked in
        ``ready``, so ``offer`` can send from the sampling thread meanwhile."""
        while True:
            self._drain_wakeups()
            with self._lock:
                if self._stop.is_set() and self._stopping_done():
                    self._say_goodbye(stream)
                    return False
                self._send_spooled(stream)
                if self._batched and not self._backlog and not self._in_flight:
                    self._say_goodbye(stream)
                    return not self._stop.is_set()
                timeout = None
                if self._stop.is_set():
                    timeout = max(0.0, self._drain_until - time.monotonic())
                wait_s = stream.wait_time(timeout)
            readable = stream.ready(self._wake_r, wait_s)
            with self._lock:
                for payload in stream.service(readable):
                    self._on_ack(payload)
                if stream.ended:
                    stream.raise_status()
                    raise StreamError(  # OK: the collector ended the call; open a new one
                        StatusCode.UNAVAILABLE, "the collector ended the stream", transport=True
                    )

    def _on_ack(self, payload: bytes) -> None:
        try:
            ack = pb.Ack.FromString(payload)
        except DecodeError as exc:
            raise StreamError(
                StatusCode.INTERNAL, f"the collector sent no gpuwarden.v1.Ack: {exc}"
            ) from None
        self._session_acks += 1
        self.acks += 1
        self.connected = True
        in_flight, spool = self._in_flight, self.spool
        if not ack.cumulative:  # a collector that acks report by report
            if in_flight and in_flight[0] == ack.seq:
                in_flight.popleft()
            else:
                try:
                    in_flight.remove(ack.seq)
                except ValueError:  # not sent on this call: no ack can cover it
                    return
            spool.ack(ack.seq)
            self.acked += 1
            return
        while in_flight and in_flight[0] <= ack.seq:  # all the call sent up to ack.seq
            spool.ack(in_flight.popleft())
            self.acked += 1

    @staticmethod
    def _say_goodbye(stream: GrpcStream) -> None:
        """Half-close and give the collector a moment to end the call with its status."""
        with contextlib.suppress(StreamError):
            stream.half_close()
            until = time.monotonic() + 0.5
            while not stream.ended and (left := until - time.monotonic()) > 0:
                stream.wait(None, left)


def _close_fds(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
