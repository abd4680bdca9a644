"""The agent's own gRPC-over-HTTP/2 client against the real grpcio collector, and against
servers that misbehave: what is stored, what is logged, and that the agent keeps going."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from gpuwarden.agent.client import ReportStreamer, TlsFiles
from gpuwarden.agent.h2_connection import Keepalive
from gpuwarden.agent.spool import Spool
from gpuwarden.collector.server import Collector
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from tests.helpers import free_port, spool_reports, streaming, wait_for
from tests.pki import TestCA, server_tls

QUICK = Keepalive(time_s=0.3, timeout_s=0.5)


async def test_reports_keep_flowing_across_a_collector_restart_each_stored_once(
    tmp_path: Path,
) -> None:
    port = free_port()
    db = tmp_path / "db.sqlite"
    first = Collector(db_path=db, listen=f"127.0.0.1:{port}")
    await first.start()
    spool = Spool(tmp_path / "spool")
    streamer = ReportStreamer(f"127.0.0.1:{port}", spool, backoff_initial_s=0.05)
    streamer.backoff_max_s = 0.2
    spool_reports(spool, 50)
    async with streaming(streamer):
        await wait_for(lambda: len(spool) == 0)
        await first.stop()  # GOAWAY, then the stream ends
        spool_reports(spool, 50)  # while no collector listens
        second = Collector(db_path=db, listen=f"127.0.0.1:{port}")
        await second.start()
        try:
            await wait_for(lambda: len(spool) == 0)
            stored = second.store.count_reports()
        finally:
            await second.stop()
    assert stored == 100
    assert streamer.connections >= 2


async def test_idle_stream_keepalive_pings_do_not_make_the_collector_hang_up(
    collector: Collector, tmp_path: Path
) -> None:
    """A gRPC server sends GOAWAY to a client that PINGs too often without data; the
    agent PINGs when the collector is silent, at most twice between two reports."""
    spool = Spool(tmp_path / "spool")
    streamer = ReportStreamer(
        f"127.0.0.1:{collector.port}", spool, keepalive=Keepalive(time_s=0.2, timeout_s=2.0)
    )
    async with streaming(streamer):
        spool_reports(spool, 1)
        streamer.notify_new_report()
        await wait_for(lambda: len(spool) == 0)
        await asyncio.sleep(2.5)  # idle: nothing but keepalive PINGs for 12 keepalive times
        spool_reports(spool, 1)
        streamer.notify_new_report()
        await wait_for(lambda: len(spool) == 0)
    assert collector.store.count_reports() == 2
    assert streamer.connections == 1


# -- TLS -----------------------------------------------------------------------------


async def over_tls(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    server: tuple[bytes, bytes, bytes],
    site: TestCA,
    expect: str,
    node: str = "n1",
) -> tuple[int, int]:
    """A streamer with node n1's certificate from ``site`` and one report for ``node``,
    against a collector with the TLS files ``server``, until ``expect`` is logged:
    (reports stored, reports still spooled)."""
    c = Collector(db_path=tmp_path / "db", listen="127.0.0.1:0", tls=server)
    await c.start()
    try:
        n1 = site.issue("n1", role="node")
        spool = Spool(tmp_path / "spool")
        spool_reports(spool, 1, node=node)
        tls = TlsFiles(site.ca, n1.cert, n1.key)
        streamer = ReportStreamer(f"127.0.0.1:{c.port}", spool, tls=tls)
        with caplog.at_level(logging.WARNING, logger="gpuwarden.agent.client"):
            async with streaming(streamer):
                await wait_for(lambda: expect in caplog.text)
        return c.store.count_reports(), len(spool)
    finally:
        await c.stop()


async def test_a_collector_certificate_from_another_ca_is_refused_with_a_clear_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    site, other = TestCA(tmp_path / "site"), TestCA(tmp_path / "other")
    stored, spooled = await over_tls(
        tmp_path, caplog, server_tls(other), site, "certificate is not trusted"
    )
    assert (stored, spooled) == (0, 1)


async def test_a_collector_certificate_for_another_name_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = TestCA(tmp_path / "pki")
    elsewhere = ca.issue("elsewhere.example", role="collector")  # no 127.0.0.1 in it
    server = (ca.ca.read_bytes(), elsewhere.cert.read_bytes(), elsewhere.key.read_bytes())
    stored, spooled = await over_tls(tmp_path, caplog, server, ca, "certificate is not trusted")
    assert "127.0.0.1" in caplog.text  # the name it was checked against
    assert (stored, spooled) == (0, 1)


async def test_a_report_for_another_node_is_refused_with_a_clear_error_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = TestCA(tmp_path / "pki")
    expect = "refused this agent: PERMISSION_DENIED"
    stored, spooled = await over_tls(tmp_path, caplog, server_tls(ca), ca, expect, node="n2")
    assert "authenticated as 'n1'" in caplog.text
    assert (stored, spooled) == (0, 1)  # kept: a fixed certificate or node name delivers it


# -- servers that misbehave ----------------------------------------------------------


class HostileServer:
    """A TCP (or TLS) listener on 127.0.0.1 whose every connection is handed to
    ``behave``, in a thread; counts the connections."""

    def __init__(
        self, behave: Callable[[socket.socket], None], tls: ssl.SSLContext | None = None
    ) -> None:
        self.behave = behave
        self.tls = tls
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.settimeout(5)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            self.behave(conn)

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.listener.close()


@contextlib.contextmanager
def hostile(
    behave: Callable[[socket.socket], None], tls: ssl.SSLContext | None = None
) -> Iterator[HostileServer]:
    server = HostileServer(behave, tls)
    try:
        yield server
    finally:
        server.close()


def h2_server(conn: socket.socket) -> h2.connection.H2Connection:
    """Answer the client's preface and read its request headers (a real server's start)."""
    h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    h2c.initiate_connection()
    conn.sendall(h2c.data_to_send())
    got_headers = False
    while not got_headers:
        data = conn.recv(65536)
        if not data:
            raise OSError("client went away")
        for event in h2c.receive_data(data):
            got_headers |= isinstance(event, h2.events.RequestReceived)
    conn.sendall(h2c.data_to_send())
    return h2c


def grpc_headers() -> list[tuple[str, str]]:
    return [(":status", "200"), ("content-type", "application/grpc")]


def hold(conn: socket.socket, seconds: float = 3.0) -> None:
    """Keep the connection open (reading what comes) for a while."""
    deadline = time.monotonic() + seconds
    with contextlib.suppress(OSError):
        while time.monotonic() < deadline:
            conn.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if not conn.recv(65536):
                    return
            except TimeoutError:
                return


async def streams_against(
    server: HostileServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    expect: str,
    tls: TlsFiles | None = None,
) -> tuple[ReportStreamer, Spool]:
    """Run a streamer against ``server`` until ``expect`` is logged and it has reconnected;
    it must stop promptly after, with its reports still spooled."""
    spool = Spool(tmp_path / "spool")
    spool_reports(spool, 3)
    streamer = ReportStreamer(
        f"127.0.0.1:{server.port}", spool, tls=tls, backoff_initial_s=0.05, keepalive=QUICK
    )
    streamer.backoff_max_s = 0.1
    with caplog.at_level(logging.INFO, logger="gpuwarden.agent.client"):
        async with streaming(streamer):
            await wait_for(lambda: expect in caplog.text, timeout_s=15)
            await wait_for(lambda: server.connections >= 2, timeout_s=15)
    assert len(spool) == 3  # nothing acked, nothing lost
    return streamer, spool


async def test_garbage_instead_of_http2_is_a_clear_error_and_a_reconnect(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def garbage(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" + bytes(range(256)) * 4)
        hold(conn, 1)

    with hostile(garbage) as server:
        await streams_against(server, tmp_path, caplog, "does not speak HTTP/2")


async def test_a_tls_server_that_speaks_garbage_is_a_clear_error_and_a_reconnect(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = TestCA(tmp_path / "pki")
    server_cert = ca.issue("collector", server=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(server_cert.cert, server_cert.key)
    ctx.set_alpn_protocols(["h2"])

    def garbage(conn: socket.socket) -> None:
        conn.sendall(b"\x00\x00\x04\x09\xff" + b"not http/2 at all " * 200)
        hold(conn, 1)

    n1 = ca.issue("n1", role="node")
    with hostile(garbage, tls=ctx) as server:
        tls = TlsFiles(ca.ca, n1.cert, n1.key)
        await streams_against(server, tmp_path, caplog, "does not speak HTTP/2", tls)


async def test_a_tls_server_without_http2_alpn_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = TestCA(tmp_path / "pki")
    server_cert = ca.issue("collector", server=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(server_cert.cert, server_cert.key)
    n1 = ca.issue("n1", role="node")
    with hostile(hold, tls=ctx) as server:
        spool = Spool(tmp_path / "spool")
        streamer = ReportStreamer(
            f"127.0.0.1:{server.port}", spool, tls=TlsFiles(ca.ca, n1.cert, n1.key)
        )
        with caplog.at_level(logging.INFO, logger="gpuwarden.agent.client"):
            async with streaming(streamer):
                await wait_for(lambda: "did not agree to HTTP/2" in caplog.text, 15)


async def test_a_header_block_past_the_limit_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def huge_headers(conn: socket.socket) -> None:
        h2c = h2_server(conn)
        h2c.send_headers(1, [*grpc_headers(), ("x-flood", "a" * 60_000)])
        conn.sendall(h2c.data_to_send())
        hold(conn, 1)

    with hostile(huge_headers) as server:
        await streams_against(server, tmp_path, caplog, "broke the HTTP/2 protocol")


async def test_a_frame_over_the_size_limit_is_refused_before_it_is_buffered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def oversized_frame(conn: socket.socket) -> None:
        h2_server(conn)
        conn.sendall(b"\xff\xff\xff\x00\x00\x00\x00\x00\x01" + b"x" * 100_000)
        hold(conn, 1)

    with hostile(oversized_frame) as server:
        await streams_against(server, tmp_path, caplog, "a 16777215-byte frame")


async def test_a_message_longer_than_any_ack_ends_the_stream_before_it_is_buffered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def endless(conn: socket.socket) -> None:
        h2c = h2_server(conn)
        h2c.send_headers(1, grpc_headers())
        h2c.send_data(1, struct.pack(">BI", 0, 0xFFFFFFFF) + b"x" * 1000)
        conn.sendall(h2c.data_to_send())
        with contextlib.suppress(Exception):
            while True:  # a stream that never ends, as long as the window lets it
                h2c.send_data(1, b"x" * min(16384, h2c.local_flow_control_window(1)))
                conn.sendall(h2c.data_to_send())

    with hostile(endless) as server:
        await streams_against(server, tmp_path, caplog, "4294967295-byte message")


async def test_a_collector_that_closes_in_the_middle_of_a_frame_is_a_reconnect(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def half_a_frame(conn: socket.socket) -> None:
        h2c = h2_server(conn)
        h2c.send_headers(1, grpc_headers())
        data = h2c.data_to_send()
        conn.sendall(data[: len(data) // 2])

    with hostile(half_a_frame) as server:
        await streams_against(server, tmp_path, caplog, "the collector closed the connection")


async def test_a_silent_collector_is_dropped_after_the_keepalive(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def silent(conn: socket.socket) -> None:
        hold(conn, 10)  # reads the preface and PINGs, answers nothing

    with hostile(silent) as server:
        await streams_against(server, tmp_path, caplog, "after a PING")


async def test_acks_split_across_many_frames_and_trailers_with_huffman_and_dynamic_table(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server (h2's encoder: Huffman-coded strings, dynamic table) sends one ack a byte
    per DATA frame, then refuses the next report with the rejected-seq trailer."""
    spool = Spool(tmp_path / "spool")
    first, second = spool_reports(spool, 2)

    def server(conn: socket.socket) -> None:
        h2c = h2_server(conn)
        if srv.connections > 1:  # the script plays once
            hold(conn, 5)
            return
        h2c.send_headers(1, [*grpc_headers(), ("x-note", "same value")])
        ack = pb.Ack(node="n1", seq=first).SerializeToString()
        for byte in struct.pack(">BI", 0, len(ack)) + ack:
            h2c.send_data(1, bytes([byte]))
        conn.sendall(h2c.data_to_send())
        h2c.send_headers(
            1,
            [
                ("grpc-status", "3"),
                ("grpc-message", f"report seq={second}: util 150%25 out of range"),
                ("gpuwarden-rejected-seq", str(second)),
                ("x-note", "same value"),  # from the dynamic table this time
            ],
            end_stream=True,
        )
        conn.sendall(h2c.data_to_send())
        hold(conn, 1)

    with hostile(server) as srv:
        streamer = ReportStreamer(f"127.0.0.1:{srv.port}", spool, keepalive=QUICK)
        with caplog.at_level(logging.INFO, logger="gpuwarden.agent.client"):
            async with streaming(streamer):
                await wait_for(lambda: len(spool) == 0, 15)
    assert streamer.acked == 1 and streamer.rejected == 1
    assert (spool.directory / "rejected" / f"{second:020d}.pb").exists()
    assert "util 150% out of range" in caplog.text


async def test_an_ack_for_a_report_not_yet_sent_on_the_call_deletes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One report in flight at a time: the server acks the second, which the agent has not
    sent, then ends the call. Both stay spooled: an ack covers only what the call sent."""
    spool = Spool(tmp_path / "spool")
    _first, second = spool_reports(spool, 2)

    def server(conn: socket.socket) -> None:
        h2c = h2_server(conn)
        if srv.connections > 1:
            hold(conn, 5)
            return
        h2c.send_headers(1, grpc_headers())
        ack = pb.Ack(node="n1", seq=second).SerializeToString()
        h2c.send_data(1, struct.pack(">BI", 0, len(ack)) + ack)
        h2c.send_headers(1, [("grpc-status", "14"), ("grpc-message", "bye now")], end_stream=True)
        conn.sendall(h2c.data_to_send())
        hold(conn, 1)

    with hostile(server) as srv:
        streamer = ReportStreamer(f"127.0.0.1:{srv.port}", spool, keepalive=QUICK, max_in_flight=1)
        with caplog.at_level(logging.INFO, logger="gpuwarden.agent.client"):
            async with streaming(streamer):
                await wait_for(lambda: "bye now" in caplog.text, 15)
    assert len(spool) == 2 and streamer.acked == 0
