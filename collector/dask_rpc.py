"""A Dask scheduler client that can never run code the scheduler sends.

``distributed``'s own comms unpickle every ``{"__Pickled__": n}`` reference of an incoming
message whatever ``deserialize`` says (``distributed.protocol.core.loads``), and its handshake
already reads such a message: connecting with ``distributed.Client`` or ``rpc`` to a scheduler
whose address came from a report would let whoever answers there run code in the collector.
This module speaks the same wire protocol (TCP framing, the comm handshake, msgpack
messages with ``op``/``reply``) with plain msgpack only: a serialized or pickled sub-object is
kept as an :class:`Opaque` placeholder and never decoded, enums are never imported, and
every size and wait is bounded.

Wire format, as ``distributed.comm.tcp`` writes it: an 8-byte count of the bytes that follow
in one piece, then ``pack_frames``' prelude (frame count, each frame's length) and the frames;
buffers not counted in the first piece follow it. Frame 0 is the msgpack message.
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["DaskRpc", "DaskRpcError", "Opaque"]

_Q = struct.Struct("Q")  # distributed packs lengths as native unsigned 64-bit integers
MAX_MESSAGE_BYTES = 16 << 20
MAX_FRAMES = 1024


class DaskRpcError(Exception):
    """The scheduler broke the protocol, refused the call or answered with an error."""


@dataclass(frozen=True, slots=True)
class Opaque:
    """A sub-object the scheduler sent that would need a deserializer (``serialized``) or
    pickle (``pickled``) to read: kept as it is, never decoded."""

    kind: str


def _object_hook(obj: dict[Any, Any]) -> Any:
    if "__Pickled__" in obj:
        return Opaque("pickled")
    if "__Serialized__" in obj:
        return Opaque("serialized")
    if "__Enum__" in obj:  # distributed would import a module named by the peer
        return Opaque("enum")
    if "__Set__" in obj:
        items = obj.get("as-list")
        return tuple(items) if isinstance(items, list | tuple) else Opaque("set")
    return obj


def decode(frames: list[bytes]) -> Any:
    """The message of ``frames``, with msgpack alone (see the module docstring)."""
    import msgpack

    if not frames:
        raise DaskRpcError("empty message")
    try:
        return msgpack.unpackb(
            frames[0],
            object_hook=_object_hook,
            raw=False,
            strict_map_key=False,
            use_list=False,
        )
    except (ValueError, msgpack.UnpackException) as exc:
        raise DaskRpcError(f"unreadable message: {exc}") from None


def encode(msg: dict[str, Any]) -> bytes:
    """``msg`` as one framed message (one msgpack frame)."""
    import msgpack

    frame: bytes = msgpack.packb(msg, use_bin_type=True)
    prelude = _Q.pack(1) + _Q.pack(len(frame))
    return _Q.pack(len(prelude) + len(frame)) + prelude + frame


class DaskRpc:
    """One connection to a scheduler at ``host``:``port`` (an address already vetted by the
    caller: this class resolves nothing). Every read and write waits at most ``timeout_s``
    (``TimeoutError`` beyond); a message larger than ``MAX_MESSAGE_BYTES`` is refused."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.opaque_seen = 0
        self._sock = socket.create_connection((host, port), timeout=timeout_s)
        try:
            self._send(
                {
                    "compression": None,
                    "python": tuple(sys.version_info)[:3],
                    "pickle-protocol": 5,
                }
            )
            self._recv()  # the scheduler's handshake; nothing of it is used
        except BaseException:
            self._sock.close()
            raise

    def __enter__(self) -> DaskRpc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def call(self, op: str, **kwargs: Any) -> Any:
        """Send ``op`` with ``kwargs`` and return the reply; an error reply raises
        :class:`DaskRpcError` with the scheduler's text."""
        self._send({"op": op, "reply": True, **kwargs})
        reply = self._recv()
        if isinstance(reply, dict) and reply.get("status") in ("error", "uncaught-error"):
            text = reply.get("text")
            raise DaskRpcError(f"{op}: {text if isinstance(text, str) else 'error'}")
        return reply

    # -- framing -------------------------------------------------------------------------
    def _send(self, msg: dict[str, Any]) -> None:
        self._sock.sendall(encode(msg))

    def _exact(self, n: int, deadline: float) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out")
            self._sock.settimeout(left)
            chunk = self._sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise DaskRpcError("the scheduler closed the connection")
            buf += chunk
        return bytes(buf)

    def _recv(self) -> Any:
        deadline = time.monotonic() + self.timeout_s
        (nosplit,) = _Q.unpack(self._exact(_Q.size, deadline))
        if not _Q.size <= nosplit <= MAX_MESSAGE_BYTES:
            raise DaskRpcError(f"message of {nosplit} bytes refused")
        data = self._exact(nosplit, deadline)
        (count,) = _Q.unpack_from(data)
        if not 1 <= count <= MAX_FRAMES or _Q.size * (1 + count) > nosplit:
            raise DaskRpcError(f"message with {count} frames refused")
        lengths = struct.unpack_from(f"{count}Q", data, _Q.size)
        if sum(lengths) + _Q.size * (1 + count) > MAX_MESSAGE_BYTES:
            raise DaskRpcError("message too large")
        frames: list[bytes] = []
        pos = _Q.size * (1 + count)
        for length in lengths:
            if pos + length <= nosplit:
                frames.append(data[pos : pos + length])
                pos += length
            elif pos == nosplit:  # a buffer sent after the first piece
                frames.append(self._exact(length, deadline))
            else:
                raise DaskRpcError("a frame runs past the end of its message")
        if count > 1:
            self.opaque_seen += 1
        return decode(frames)
