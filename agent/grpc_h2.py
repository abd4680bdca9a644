"""gRPC's wire protocol for one bidirectional call, spoken over HTTP/2 on a blocking socket.

The agent sends reports on one long call (``Report`` or ``ReportBatch``) and reads acks; grpcio
(its C core, its threads and asyncio) would be most of the agent's memory and CPU for that.
This module speaks what the collector's grpcio server expects (the gRPC over HTTP/2
protocol): a POST with ``content-type: application/grpc`` and ``te: trailers``, messages
with a 5-byte prefix (compressed flag, big-endian length), and the call's status in the
trailers (``grpc-status``, percent-encoded ``grpc-message`` and trailing metadata), or in a
trailers-only response. HTTP/2 itself (framing, HPACK with Huffman and the dynamic table,
flow control both ways, SETTINGS and PING answers, GOAWAY) is the ``h2`` package; the
connection under the call (connecting, TLS, frame checks, keepalive) is ``h2_connection``.

Nothing here trusts the peer: a message over ``max_receive_bytes``, a compressed message, a
non-gRPC response or a call that ends without a status end the stream with a
``StreamError`` that says what happened (as the connection's own checks do); memory stays
bounded by the flow-control window and those limits.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import h2.events
import h2.exceptions

from gpuwarden.agent.grpc_status import (
    HTTP_TO_GRPC,
    RESET_TO_GRPC,
    StatusCode,
    StreamError,
    transport_error,
)
from gpuwarden.agent.h2_connection import Http2Connection, Keepalive, connect, text

if TYPE_CHECKING:
    import ssl

_PREFIX = struct.Struct(">BI")  # compressed flag, message length
_STREAM_ID = 1  # the connection's one stream


@dataclass(slots=True)
class _Outcome:
    trailers: list[tuple[str, str]] = field(default_factory=list)
    ended: bool = False
    error: StreamError | None = None


class GrpcStream:
    """One gRPC bidirectional-streaming call on its own HTTP/2 connection.

    ``open()`` connects (TCP, TLS when ``tls`` is given) and sends the request headers;
    ``send(message)`` queues a serialized message, sent as the peer's flow-control window
    allows; ``wait(...)`` blocks until the peer sends something, ``wake_fd`` is readable or
    the timeout passes, and returns the messages received. Not thread-safe: threads that
    share a stream hold one lock around every call but ``ready``.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        authority: str,
        path: str,
        scheme: str,
        user_agent: str,
        keepalive: Keepalive,
        max_send_bytes: int,
        max_receive_bytes: int,
        max_buffered_bytes: int,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._conn = Http2Connection(sock, keepalive)
        self._h2 = self._conn.h2
        self._max_send = max_send_bytes
        self._max_receive = max_receive_bytes
        self._max_buffered = max_buffered_bytes
        self._outbox = bytearray()  # message bytes waiting for flow-control window
        self._inbox = bytearray()  # DATA received, not yet a whole message
        self._outcome = _Outcome()
        self._half_closed = False
        self._end_sent = False
        self._h2.send_headers(
            _STREAM_ID,
            [
                (b":method", b"POST"),
                (b":scheme", scheme.encode()),
                (b":path", path.encode()),
                (b":authority", authority.encode()),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
                (b"user-agent", user_agent.encode()),
                *((k.encode(), v.encode()) for k, v in metadata),
            ],
        )
        self._conn.flush()

    # -- opening -----------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        host: str,
        port: int,
        path: str,
        *,
        tls: ssl.SSLContext | None = None,
        connect_timeout_s: float = 10.0,
        keepalive: Keepalive | None = None,
        max_send_bytes: int = 4 << 20,
        max_receive_bytes: int = 64 << 10,
        max_buffered_bytes: int = 1 << 20,
        user_agent: str = "gpuwarden-agent",
        metadata: Sequence[tuple[str, str]] = (),
    ) -> GrpcStream:
        """Connect to ``host:port`` (``host`` may be ``[v6]``) and start the call ``path``.
        StreamError (UNAVAILABLE, ``transport``) when the connection cannot be made."""
        keepalive = keepalive or Keepalive()
        sock = connect(host, port, tls=tls, timeout_s=connect_timeout_s, keepalive=keepalive)
        try:
            return cls(
                sock,
                authority=f"{host}:{port}",
                path=path,
                scheme="https" if tls is not None else "http",
                user_agent=user_agent,
                keepalive=keepalive,
                max_send_bytes=max_send_bytes,
                max_receive_bytes=max_receive_bytes,
                max_buffered_bytes=max_buffered_bytes,
                metadata=metadata,
            )
        except BaseException:
            sock.close()
            raise

    # -- sending -----------------------------------------------------------------------
    def can_send(self) -> bool:
        """Whether another message may be queued (the unsent bytes are below the bound)."""
        return (
            len(self._outbox) < self._max_buffered
            and not self._half_closed
            and not self._outcome.ended
        )

    def send(self, message: bytes) -> None:
        """Queue one serialized message; it leaves as the peer's window allows."""
        if len(message) > self._max_send:
            raise ValueError(f"a {len(message)}-byte message is over {self._max_send} bytes")
        self._outbox += _PREFIX.pack(0, len(message))
        self._outbox += message
        self._conn.data_sent()
        self._pump()

    def half_close(self) -> None:
        """No more messages from this side (END_STREAM once the queued ones are out)."""
        self._half_closed = True
        self._pump()

    def close(self) -> None:
        """Say goodbye (GOAWAY, the call cancelled unless it ended) and close the socket."""
        self._conn.close(None if self._outcome.ended else _STREAM_ID)

    @property
    def ended(self) -> bool:
        """The peer ended the call (its status is what ``wait`` raised or returned after)."""
        return self._outcome.ended

    def _pump(self) -> None:
        """Move queued bytes into DATA frames as far as the flow-control window allows."""
        h2c = self._h2
        try:
            while self._outbox:
                window = min(h2c.local_flow_control_window(_STREAM_ID), h2c.max_outbound_frame_size)
                if window <= 0:
                    break
                chunk = bytes(self._outbox[:window])
                del self._outbox[:window]
                h2c.send_data(_STREAM_ID, chunk)
            if self._half_closed and not self._outbox and not self._end_sent:
                self._end_sent = True
                h2c.end_stream(_STREAM_ID)
        except h2.exceptions.StreamClosedError:
            pass  # the peer ended the call; ``wait`` reports how
        except h2.exceptions.ProtocolError as exc:
            raise transport_error(f"HTTP/2 connection unusable: {exc}") from exc
        self._conn.flush()

    # -- receiving ---------------------------------------------------------------------
    def wait(self, wake_fd: int | None, timeout_s: float | None) -> list[bytes]:
        """Block until the peer sends something, ``wake_fd`` is readable or ``timeout_s``
        passes (None: only the keepalive bounds it); the whole messages received.
        Once the call has ended, ``ended`` is True and every call raises its StreamError
        (when the status was not OK, or the connection failed), after the messages that
        came before the end were returned.

        ``wait`` is ``wait_time``, ``ready`` and ``service`` in a row; a caller that shares
        the stream between threads holds its lock for the first and the last only."""
        wait_s = self.wait_time(timeout_s)
        return self.service(self.ready(wake_fd, wait_s))

    def wait_time(self, timeout_s: float | None) -> float:
        """How long ``ready`` may block: ``timeout_s`` or less, to the next keepalive step;
        0 when data is already buffered or the call has ended."""
        if self._outcome.ended or self._conn.pending_tls():
            return 0.0
        wait_s = self._conn.keepalive_deadline() - time.monotonic()
        if timeout_s is not None:
            wait_s = min(wait_s, timeout_s)
        return max(0.0, wait_s)

    def ready(self, wake_fd: int | None, wait_s: float) -> bool:
        """Block up to ``wait_s`` for the socket (or ``wake_fd``); whether the socket is
        readable. Touches no state of the stream: safe without the caller's lock."""
        return self._conn.ready(wake_fd, wait_s)

    def service(self, readable: bool) -> list[bytes]:
        """Read what the peer sent (``readable``, or TLS data already buffered), or take the
        keepalive step that is due; the whole messages received (see ``wait``)."""
        if self._outcome.ended:
            self.raise_status()
            return []
        if readable or self._conn.pending_tls():
            self._receive()
        elif time.monotonic() >= self._conn.keepalive_deadline():
            self._conn.keepalive_tick()
        messages = self._messages()
        if not messages:
            self.raise_status()
        return messages

    def status_after(self, error: StreamError, wait_s: float = 0.5) -> StreamError:
        """How the call itself ended, when a write failed with ``error``: a peer that ended
        the call and closed the connection makes the write fail first, and its status
        (say UNIMPLEMENTED, or a refused report's seq in the trailers) is what matters.
        Reads what is left for at most ``wait_s``; ``error`` when no status came."""
        until = time.monotonic() + wait_s
        with contextlib.suppress(StreamError):
            while not self._outcome.ended and (left := until - time.monotonic()) > 0:
                if not self.ready(None, left):
                    break
                self._receive()
        return self._outcome.error or error

    def raise_status(self) -> None:
        """Raise how the call ended, if it ended with anything but OK."""
        if self._outcome.error is not None:
            raise self._outcome.error

    def _receive(self) -> None:
        for event in self._conn.receive():
            self._on_event(event)
        self._pump()  # window updates, PING and SETTINGS answers, acknowledged data

    def _on_event(self, event: h2.events.Event) -> None:
        out = self._outcome
        if isinstance(event, h2.events.ResponseReceived):
            self._on_response_headers(event.headers)
        elif isinstance(event, h2.events.TrailersReceived):
            out.trailers = _decode_headers(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            if event.stream_id == _STREAM_ID:
                self._inbox += event.data
                self._h2.acknowledge_received_data(event.flow_controlled_length, _STREAM_ID)
        elif isinstance(event, h2.events.StreamEnded):
            out.ended = True
            self._finish_with_status()
        elif isinstance(event, h2.events.StreamReset):
            out.ended = True
            code = RESET_TO_GRPC.get(event.error_code, StatusCode.INTERNAL)  # type: ignore[call-overload]
            self._fail(StreamError(code, f"stream reset by the collector ({event.error_code!r})"))
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._on_goaway(event)

    def _on_response_headers(self, raw: object) -> None:
        headers = _decode_headers(raw)
        values = dict(headers)
        status = values.get(":status", "")
        if status != "200":
            code = HTTP_TO_GRPC.get(int(status) if status.isdigit() else 0, StatusCode.UNKNOWN)
            self._fail(StreamError(code, f"HTTP status {status[:16]!r} from the collector"))
        elif not values.get("content-type", "").startswith("application/grpc"):
            ctype = values.get("content-type", "")[:64]
            self._fail(StreamError(StatusCode.UNKNOWN, f"not a gRPC response ({ctype!r})"))
        elif "grpc-status" in values:  # trailers-only: the status came with the headers
            self._outcome.trailers = headers

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        """The connection is done (h2 sends nothing more on it, even on a stream the peer
        would still serve): what is in flight is sent again on the next connection and
        the collector, which de-duplicates by (node, seq), acks it again."""
        why = f"the collector is closing the connection (GOAWAY {event.error_code!r}"
        extra = text(event.additional_data or b"", 128)
        self._conn.goaway = f"{why}{': ' + extra if extra else ''})"
        self._fail(transport_error(self._conn.goaway))

    def _finish_with_status(self) -> None:
        if self._outcome.error is not None:
            return
        values = dict(self._outcome.trailers)
        status = values.get("grpc-status")
        if status is None:
            self._fail(StreamError(StatusCode.INTERNAL, "the call ended without a grpc-status"))
            return
        code = StatusCode(int(status)) if status.isdigit() and int(status) <= 16 else None
        if code is None:
            self._fail(StreamError(StatusCode.UNKNOWN, f"grpc-status {status[:16]!r}"))
        elif code != StatusCode.OK:
            details = urllib.parse.unquote(values.get("grpc-message", ""))
            metadata = [(k, v) for k, v in self._outcome.trailers if not k.startswith(":")]
            self._fail(StreamError(code, details, metadata))

    def _fail(self, error: StreamError) -> None:
        self._outcome.ended = True
        if self._outcome.error is None:
            self._outcome.error = error

    def _messages(self) -> list[bytes]:
        """Whole messages from the DATA received so far (the rest waits for more)."""
        out: list[bytes] = []
        inbox = self._inbox
        while len(inbox) >= _PREFIX.size:
            compressed, length = _PREFIX.unpack_from(inbox)
            if compressed:
                raise StreamError(StatusCode.INTERNAL, "a compressed message (none was asked for)")
            if length > self._max_receive:
                raise StreamError(
                    StatusCode.RESOURCE_EXHAUSTED,
                    f"a {length}-byte message from the collector, over {self._max_receive}",
                )
            end = _PREFIX.size + length
            if len(inbox) < end:
                break
            out.append(bytes(inbox[_PREFIX.size : end]))
            del inbox[:end]
        return out


def _decode_headers(raw: object) -> list[tuple[str, str]]:
    out = []
    for name, value in raw:  # type: ignore[attr-defined]
        n = name if isinstance(name, str) else text(name, 256)
        v = value if isinstance(value, str) else text(value, 4096)
        out.append((n, v))
    return out
