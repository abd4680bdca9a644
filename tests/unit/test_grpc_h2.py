"""The agent's gRPC-over-HTTP/2 stream against a server made of h2 on the other end of a
socket pair: how each way a call can end reaches the agent, and the frame checks."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest

from gpuwarden.agent.grpc_h2 import GrpcStream
from gpuwarden.agent.grpc_status import StatusCode, StreamError
from gpuwarden.agent.h2_connection import Keepalive

GRPC_OK_HEADERS = [(":status", "200"), ("content-type", "application/grpc")]


class Peer:
    """The server end: h2 in server mode on a plain socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.h2.initiate_connection()
        self.flush()
        self.messages: list[bytes] = []
        self.read_request()

    def read_request(self) -> None:
        seen = False
        self.sock.settimeout(5)
        while not seen:
            for event in self.h2.receive_data(self.sock.recv(65536)):
                seen |= isinstance(event, h2.events.RequestReceived)
        self.flush()

    def flush(self) -> None:
        self.sock.sendall(self.h2.data_to_send())


@pytest.fixture
def pair() -> Iterator[tuple[GrpcStream, Peer]]:
    a, b = socket.socketpair()
    stream = GrpcStream(
        a,
        authority="collector:50051",
        path="/gpuwarden.v1.AgentService/Report",
        scheme="http",
        user_agent="test",
        keepalive=Keepalive(time_s=5, timeout_s=5),
        max_send_bytes=1 << 20,
        max_receive_bytes=1024,
        max_buffered_bytes=1 << 20,
    )
    peer = Peer(b)
    yield stream, peer
    stream.close()
    b.close()


def ending(stream: GrpcStream) -> StreamError:
    """Read until the call ends; the error it ended with."""
    for _ in range(50):
        try:
            stream.wait(None, 0.2)
        except StreamError as exc:
            return exc
    raise AssertionError("the call did not end")


def test_a_trailers_only_refusal_reaches_the_agent_with_its_code_and_decoded_message(
    pair: tuple[GrpcStream, Peer],
) -> None:
    stream, peer = pair
    peer.h2.send_headers(
        1,
        [*GRPC_OK_HEADERS, ("grpc-status", "16"), ("grpc-message", "no%20certificate%3A n1")],
        end_stream=True,
    )
    peer.flush()
    err = ending(stream)
    assert err.code == StatusCode.UNAUTHENTICATED
    assert err.details == "no certificate: n1"
    assert not err.transport


@pytest.mark.parametrize(
    ("headers", "code", "says"),
    [
        ([(":status", "503"), ("content-type", "text/html")], StatusCode.UNAVAILABLE, "503"),
        ([(":status", "200"), ("content-type", "text/html")], StatusCode.UNKNOWN, "text/html"),
    ],
)
def test_a_response_that_is_no_grpc_ends_the_call_saying_what_came(
    pair: tuple[GrpcStream, Peer], headers: list[tuple[str, str]], code: StatusCode, says: str
) -> None:
    stream, peer = pair
    peer.h2.send_headers(1, headers)
    peer.flush()
    err = ending(stream)
    assert err.code == code and says in err.details


def test_messages_that_came_before_the_status_are_returned_first(
    pair: tuple[GrpcStream, Peer],
) -> None:
    stream, peer = pair
    peer.h2.send_headers(1, GRPC_OK_HEADERS)
    peer.h2.send_data(1, struct.pack(">BI", 0, 3) + b"ack")
    peer.h2.send_headers(1, [("grpc-status", "14"), ("grpc-message", "bye")], end_stream=True)
    peer.flush()
    got: list[bytes] = []
    with pytest.raises(StreamError) as err:
        for _ in range(50):
            got += stream.wait(None, 0.2)
    assert got == [b"ack"]
    assert err.value.code == StatusCode.UNAVAILABLE and err.value.details == "bye"


@pytest.mark.parametrize(
    ("prefix", "code", "says"),
    [
        (struct.pack(">BI", 1, 3), StatusCode.INTERNAL, "compressed"),
        (struct.pack(">BI", 0, 1025), StatusCode.RESOURCE_EXHAUSTED, "1025-byte message"),
    ],
)
def test_a_message_the_agent_cannot_take_ends_the_call(
    pair: tuple[GrpcStream, Peer], prefix: bytes, code: StatusCode, says: str
) -> None:
    stream, peer = pair
    peer.h2.send_headers(1, GRPC_OK_HEADERS)
    peer.h2.send_data(1, prefix + b"abc")
    peer.flush()
    err = ending(stream)
    assert err.code == code and says in err.details


def test_a_call_ended_without_a_grpc_status_is_internal(pair: tuple[GrpcStream, Peer]) -> None:
    stream, peer = pair
    peer.h2.send_headers(1, GRPC_OK_HEADERS)
    peer.h2.end_stream(1)
    peer.flush()
    assert ending(stream).code == StatusCode.INTERNAL


def test_a_reset_stream_is_cancelled(pair: tuple[GrpcStream, Peer]) -> None:
    stream, peer = pair
    peer.h2.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
    peer.flush()
    assert ending(stream).code == StatusCode.CANCELLED


def test_frames_arriving_a_byte_at_a_time_are_read_and_an_oversized_one_refused(
    pair: tuple[GrpcStream, Peer],
) -> None:
    stream, peer = pair
    peer.h2.send_headers(1, GRPC_OK_HEADERS)
    peer.h2.send_data(1, struct.pack(">BI", 0, 2) + b"ok")
    got: list[bytes] = []
    for byte in peer.h2.data_to_send():
        peer.sock.sendall(bytes([byte]))
        got += stream.wait(None, 0.5)
    assert got == [b"ok"]
    # a DATA frame header announcing 20,000 bytes (over the 16 KiB limit), split in two
    peer.sock.sendall(b"\x00\x4e")
    stream.wait(None, 0.5)
    peer.sock.sendall(b"\x20\x00\x00\x00\x00\x00\x01")
    err = ending(stream)
    assert err.transport and "a 20000-byte frame" in err.details


def test_half_close_ends_the_request_and_an_ok_status_ends_the_call_quietly(
    pair: tuple[GrpcStream, Peer],
) -> None:
    stream, peer = pair
    stream.send(b"report")
    stream.half_close()
    ended = False
    peer.sock.settimeout(5)
    while not ended:
        for event in peer.h2.receive_data(peer.sock.recv(65536)):
            if isinstance(event, h2.events.DataReceived):
                peer.messages.append(event.data)
            ended |= isinstance(event, h2.events.StreamEnded)
    assert b"".join(peer.messages) == struct.pack(">BI", 0, 6) + b"report"
    peer.h2.send_headers(1, GRPC_OK_HEADERS)
    peer.h2.send_headers(1, [("grpc-status", "0")], end_stream=True)
    peer.flush()
    for _ in range(50):
        assert stream.wait(None, 0.2) == []
        if stream.ended:
            break
    assert stream.ended
    stream.raise_status()  # OK: nothing to raise


def write_after_the_peer_hung_up(stream: GrpcStream) -> StreamError:
    with pytest.raises(StreamError) as failed:
        for _ in range(50):  # the first writes may still fit in the socket's buffer
            stream.send(b"report" * 1000)
    assert failed.value.transport
    return failed.value


def test_a_write_that_fails_after_the_call_ended_yields_the_calls_own_status(
    pair: tuple[GrpcStream, Peer],
) -> None:
    stream, peer = pair
    peer.h2.send_headers(
        1, [*GRPC_OK_HEADERS, ("grpc-status", "12"), ("grpc-message", "no ReportBatch")], True
    )
    peer.flush()
    peer.sock.close()
    status = stream.status_after(write_after_the_peer_hung_up(stream))
    assert status.code == StatusCode.UNIMPLEMENTED and status.details == "no ReportBatch"


def test_a_write_that_fails_without_a_status_stays_a_lost_connection(
    pair: tuple[GrpcStream, Peer],
) -> None:
    stream, peer = pair
    peer.sock.close()
    failed = write_after_the_peer_hung_up(stream)
    assert stream.status_after(failed) is failed
