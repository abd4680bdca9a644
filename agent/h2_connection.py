"""The HTTP/2 connection under the agent's one gRPC call, on a blocking socket.

Connecting (TCP, then TLS with ALPN ``h2`` when asked), the ``h2`` connection configured
with the agent's limits, sending what h2 queued, receiving with every frame checked as its
header arrives, keepalive PINGs and the goodbye (GOAWAY). What the bytes mean for the call
(messages, trailers, status) is ``grpc_h2``'s.

Nothing here trusts the peer: a first frame that is not SETTINGS, a frame over 16 KiB, a
header block past ``MAX_HEADER_LIST``, a frame h2 refuses, a closed or silent connection
each raise a ``StreamError`` (UNAVAILABLE, ``transport``) saying what happened.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from gpuwarden.agent.grpc_status import StreamError, transport_error
from gpuwarden.agent.grpc_tls import tls_handshake

if TYPE_CHECKING:
    import ssl

MAX_HEADER_LIST = 16 << 10  # the largest header block (headers or trailers) accepted
_RECV_BYTES = 64 << 10
_FRAME_HEADER = 9  # bytes: length (3), type, flags, stream id (4)
_SETTINGS = 0x4  # the frame type a server's connection preface begins with


@dataclass(frozen=True, slots=True)
class Keepalive:
    """A PING after ``time_s`` without a byte from the peer; the connection is dead when
    nothing arrives ``timeout_s`` after it. At most ``max_pings_without_data`` PINGs go out
    between two messages sent (a gRPC server counts more as abuse and sends GOAWAY)."""

    time_s: float = 20.0
    timeout_s: float = 10.0
    max_pings_without_data: int = 2


def text(value: bytes, limit: int = 512) -> str:
    """Bytes from the peer as text for a message: cut to ``limit``, never failing."""
    return value[:limit].decode("utf-8", "replace")


def connect(
    host: str, port: int, *, tls: ssl.SSLContext | None, timeout_s: float, keepalive: Keepalive
) -> socket.socket:
    """A connected socket to ``host:port`` (``host`` may be ``[v6]``), TLS when ``tls``;
    its reads and writes wait at most as long as the keepalive allows. StreamError
    (UNAVAILABLE, ``transport``) when the connection cannot be made."""
    bare = host[1:-1] if host.startswith("[") else host
    try:
        sock = socket.create_connection((bare, port), timeout=timeout_s)
    except OSError as exc:
        raise transport_error(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            sock = tls_handshake(sock, tls, bare)
        sock.settimeout(keepalive.timeout_s)
        return sock
    except BaseException:
        sock.close()
        raise


class Http2Connection:
    """h2's state machine on a socket: ``h2`` is the connection object (for the call's
    headers, data and flow control); every byte in and out goes through this class."""

    def __init__(self, sock: socket.socket, keepalive: Keepalive) -> None:
        self.sock = sock
        self.keepalive = keepalive
        self.goaway: str | None = None  # why the peer is closing, once it said so
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
            },
        )
        self.h2.max_inbound_frame_size = self.h2.local_settings.max_frame_size
        self.h2.decoder.max_header_list_size = MAX_HEADER_LIST  # before SETTINGS are acked too
        self._frames = _FrameCheck(self.h2.local_settings.max_frame_size)
        self._last_recv = time.monotonic()
        self._ping_sent_at: float | None = None
        self._pings_without_data = 0
        self.h2.initiate_connection()

    # -- out -----------------------------------------------------------------------------
    def flush(self) -> None:
        """Send what h2 has queued."""
        data = self.h2.data_to_send()
        if not data:
            return
        try:
            self.sock.sendall(data)
        except TimeoutError as exc:
            raise transport_error(
                f"the collector took no data for {self.keepalive.timeout_s:g} s"
            ) from exc
        except OSError as exc:
            raise transport_error(f"connection lost while sending: {exc.strerror or exc}") from exc

    def flush_quietly(self) -> None:
        with contextlib.suppress(StreamError):
            self.flush()

    def data_sent(self) -> None:
        """A message went out: PINGs may be sent again when the peer falls silent."""
        self._pings_without_data = 0

    def close(self, cancel_stream: int | None) -> None:
        """Say goodbye (GOAWAY, after cancelling ``cancel_stream``) when possible and close
        the socket."""
        try:
            if cancel_stream is not None:
                self.h2.reset_stream(cancel_stream, h2.errors.ErrorCodes.CANCEL)
            self.h2.close_connection()
            self.sock.settimeout(0.2)
            self.sock.sendall(self.h2.data_to_send())
        except (OSError, h2.exceptions.H2Error):
            pass  # closing anyway
        finally:
            self.sock.close()

    # -- in ------------------------------------------------------------------------------
    def ready(self, wake_fd: int | None, wait_s: float) -> bool:
        """Block up to ``wait_s`` for the socket (or ``wake_fd``); whether the socket is
        readable. Touches no state: safe without the lock of a caller that shares it."""
        fd = self.sock.fileno()
        ready, _, _ = select.select([fd] if wake_fd is None else [fd, wake_fd], [], [], wait_s)
        return fd in ready

    def pending_tls(self) -> bool:
        """TLS data already decrypted and buffered (``select`` does not see it)."""
        pending = getattr(self.sock, "pending", None)
        return bool(pending and pending())

    def receive(self) -> list[h2.events.Event]:
        """Read once from the socket; the HTTP/2 events it made."""
        try:
            data = self.sock.recv(_RECV_BYTES)
        except TimeoutError as exc:
            raise transport_error("the collector stopped in the middle of a TLS record") from exc
        except OSError as exc:
            raise transport_error(f"connection lost: {exc.strerror or exc}") from exc
        if not data:
            raise transport_error(self.goaway or "the collector closed the connection")
        self._last_recv = time.monotonic()
        self._ping_sent_at = None
        self._frames.check(data)
        try:
            events: list[h2.events.Event] = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.flush_quietly()  # h2 queued a GOAWAY saying why
            raise transport_error(f"the collector broke the HTTP/2 protocol: {exc}") from exc
        return events

    # -- keepalive -----------------------------------------------------------------------
    def keepalive_deadline(self) -> float:
        """When the next keepalive step is due (a PING, or giving up after one)."""
        if self._ping_sent_at is not None:
            return self._ping_sent_at + self.keepalive.timeout_s
        return self._last_recv + self.keepalive.time_s

    def keepalive_tick(self) -> None:
        """The step that is due: a PING, or the end of a connection that did not answer."""
        if self._ping_sent_at is not None:
            raise transport_error(
                f"no answer from the collector for {self.keepalive.time_s:g} s "
                f"and {self.keepalive.timeout_s:g} s after a PING"
            )
        if self._pings_without_data >= self.keepalive.max_pings_without_data:
            self._last_recv = time.monotonic()  # no PING now; wait for the next message
            return
        self._pings_without_data += 1
        self._ping_sent_at = time.monotonic()
        try:
            self.h2.ping(os.urandom(8))
        except h2.exceptions.ProtocolError as exc:
            raise transport_error(f"HTTP/2 connection unusable: {exc}") from exc
        self.flush()


class _FrameCheck:
    """Frame lengths checked as their headers arrive, before h2 buffers a frame's body (it
    waits for a whole frame, up to 16 MiB, before it looks at the length), and the
    server's preface: its first frame must be SETTINGS."""

    def __init__(self, max_frame_size: int) -> None:
        self._max = max_frame_size
        self._head = bytearray()
        self._left = 0  # bytes of the current frame's body still to come
        self._first = True

    def check(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self._left:
                took = min(self._left, end - pos)
                self._left -= took
                pos += took
                continue
            took = min(_FRAME_HEADER - len(self._head), end - pos)
            self._head += data[pos : pos + took]
            pos += took
            if len(self._head) < _FRAME_HEADER:
                return
            length, kind = int.from_bytes(self._head[:3], "big"), self._head[3]
            if self._first and kind != _SETTINGS:
                start = bytes(self._head) + data[pos : pos + 16]
                raise transport_error(
                    f"the collector does not speak HTTP/2 (it began with {start!r})"
                )
            if length > self._max:
                raise transport_error(
                    f"the collector broke the HTTP/2 protocol: a {length}-byte frame "
                    f"(over {self._max})"
                )
            self._first = False
            self._left = length
            self._head.clear()
