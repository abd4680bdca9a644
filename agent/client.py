"""Streams spooled reports to the collector and removes what it acks.

One bidirectional ``AgentService.Report`` stream per connection, spoken by the agent's own
gRPC-over-HTTP/2 client (``grpc_h2``) on a blocking socket in one thread: no grpcio and no
asyncio in the agent. Everything in the spool is (re)sent in sequence order after each
(re)connect; acks delete spool files. Disconnects are retried with jittered exponential
backoff. A report the collector rejects as invalid (INVALID_ARGUMENT with the
``gpuwarden-rejected-seq`` trailer) is moved aside so it cannot block the stream.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
import weakref
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

import gpuwarden
from gpuwarden.agent.grpc_h2 import GrpcStream, Keepalive
from gpuwarden.agent.grpc_status import StatusCode, StreamError
from gpuwarden.agent.grpc_tls import client_tls_context
from gpuwarden.agent.spool import Spool, SpoolCorrupt
from gpuwarden.common.address import split_host_port
from gpuwarden.common.tls import TlsFiles as TlsFiles  # re-exported for the agent
from gpuwarden.common.wire import MAX_REPORT_BYTES, REJECTED_SEQ_KEY
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)

REPORT_METHOD = "/gpuwarden.v1.AgentService/Report"
MAX_ACK_BYTES = 64 << 10  # an Ack is a node name, a seq and a flag
_SEQ_FIELD = pb.NodeReport.DESCRIPTOR.fields_by_name["seq"].number
_SKIP_FIXED = {1: 8, 5: 4}  # wire types of fixed width: 64-bit, 32-bit
# ``offer`` sends from the sampling thread only while fewer reports than this wait for an
# ack: the collector keeps up, so the socket takes the bytes without blocking sampling.
_KEEPING_UP = 4
# Refusals that retrying does not heal without a change at one end: said as errors.
_REFUSED = (StatusCode.UNAUTHENTICATED, StatusCode.PERMISSION_DENIED, StatusCode.UNIMPLEMENTED)


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
        max_in_flight: int = 256,
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
        self.sent = 0
        self.acked = 0
        self.rejected = 0
        self._stop = threading.Event()
        self._drain_until = 0.0
        # The stream and what was sent on it, shared by the streaming thread and ``offer``.
        self._lock = threading.Lock()
        self._stream_now: GrpcStream | None = None
        self._in_flight: set[int] = set()
        self._last_sent = 0
        self._backlog = True  # spooled reports the streaming thread has not sent yet
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
                self._session()
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

    def _read_spooled(self, seq: int) -> bytes:
        """The spooled report's bytes, checked to hold the seq of its file name."""
        data = self.spool.read(seq)
        held = report_seq(data)
        if held != seq:
            raise SpoolCorrupt(f"holds seq={held}, not the seq of its file name")
        return data

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

    def _session(self) -> None:
        stream = GrpcStream.open(
            self.host,
            self.port,
            REPORT_METHOD,
            tls=self._tls_context(),
            connect_timeout_s=self.connect_timeout_s,
            keepalive=self.keepalive,
            max_send_bytes=MAX_REPORT_BYTES,
            max_receive_bytes=MAX_ACK_BYTES,
            user_agent=f"gpuwarden-agent/{gpuwarden.__version__}",
        )
        self.connections += 1
        with self._lock:
            self._in_flight.clear()
            self._last_sent = 0
            self._backlog = True
            self._stream_now = stream
        try:
            self._stream(stream)
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
            self._in_flight.add(seq)
            self._last_sent = seq
            self.sent += 1
        finally:
            self._lock.release()

    def _send_spooled(self, stream: GrpcStream) -> None:
        """Send what is spooled and not yet sent on this stream, in order (under the lock)."""
        self._backlog = False
        for seq in self.spool.pending(after=self._last_sent):
            if len(self._in_flight) >= self.max_in_flight or not stream.can_send():
                self._backlog = True
                return
            try:
                report = self._read_spooled(seq)
            except FileNotFoundError:
                continue  # acked or dropped meanwhile
            except SpoolCorrupt as exc:
                self.spool.set_aside(seq, str(exc))
                continue
            stream.send(report)
            self._in_flight.add(seq)
            self._last_sent = seq
            self.sent += 1

    def _stream(self, stream: GrpcStream) -> None:
        """Send and read acks until stopped or the call ends. The lock is held except while
        blocked in ``ready``, so ``offer`` can send from the sampling thread meanwhile."""
        while True:
            self._drain_wakeups()
            with self._lock:
                if self._stop.is_set() and self._stopping_done():
                    self._say_goodbye(stream)
                    return
                self._send_spooled(stream)
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
        self.connected = True
        self.spool.ack(ack.seq)
        self._in_flight.discard(ack.seq)
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
