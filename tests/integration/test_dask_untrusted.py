"""A Dask scheduler named in a report cannot steer the collector.

Real parts: a plain asyncio TCP server speaking distributed's framing (the hostile
"scheduler"), distributed's own ``protocol.dumps`` to build its pickled payload, a real
in-process ``LocalCluster`` for the honest path.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from gpuwarden.collector.actions import retire_dask_worker
from gpuwarden.collector.corroborate import SchedulerTrust, Uncorroborated, parse_networks

pytestmark = pytest.mark.timeout(120)


class _CreatesFile:
    """Unpickling this creates ``path``: proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def _pickled_frames(path: Path) -> list[bytes]:
    from distributed.protocol.core import dumps
    from distributed.protocol.serialize import ToPickle

    msg = {
        "compression": None,
        "python": (3, 11, 0),
        "pickle-protocol": 5,
        "status": "OK",
        "workers": {"tcp://10.9.9.9:1": {"name": "someone-else"}},
        "gift": ToPickle(_CreatesFile(path)),  # type: ignore[no-untyped-call]
    }
    return [bytes(f) for f in dumps(msg)]


def _framed(frames: list[bytes]) -> bytes:
    prelude = struct.pack(f"Q{len(frames)}Q", len(frames), *map(len, frames))
    body = prelude + b"".join(frames)
    return struct.pack("Q", len(body)) + body


@contextmanager
def hostile_scheduler(host: str, payload: bytes) -> Iterator[tuple[int, list[str]]]:
    """A TCP server on ``host`` that answers every message with ``payload``; yields its
    port and the peers that connected."""
    peers: list[str] = []
    ready = threading.Event()
    port: list[int] = []
    loop = asyncio.new_event_loop()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(str(writer.get_extra_info("peername")))
        try:
            while True:
                (n,) = struct.unpack("Q", await reader.readexactly(8))
                await reader.readexactly(n)
                writer.write(payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def serve() -> asyncio.Server:
        server = await asyncio.start_server(handle, host, 0)
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        return server

    server_box: list[asyncio.Server] = []
    thread = threading.Thread(
        target=lambda: (server_box.append(loop.run_until_complete(serve())), loop.run_forever()),
        daemon=True,
    )
    thread.start()
    ready.wait(10)
    try:
        yield port[0], peers
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_the_payload_would_run_code_through_distributeds_own_loads(tmp_path: Path) -> None:
    """The control: distributed's deserializer runs the payload even with deserialize=False,
    so a test that shows the file absent below shows something."""
    from distributed.protocol.core import loads

    target = tmp_path / "control"
    loads(_pickled_frames(target), deserialize=False)
    assert target.exists()


def test_a_scheduler_that_sends_a_pickle_cannot_run_code_in_the_collector(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    with hostile_scheduler("127.0.0.1", _framed(_pickled_frames(target))) as (port, peers):
        outcome = retire_dask_worker(f"tcp://127.0.0.1:{port}", "w", timeout_s=5.0)
    assert peers, "the client never connected: the test proves nothing"
    assert not target.exists(), "the scheduler's pickle was unpickled in the collector"
    assert not outcome.ok
    assert outcome.detail == f"no worker named 'w' is connected to tcp://127.0.0.1:{port}"


def test_an_untrusted_scheduler_address_is_never_contacted(tmp_path: Path) -> None:
    trust = SchedulerTrust(
        networks=parse_networks(["10.20.0.0/16"]), node_address=lambda node: "127.0.0.1"
    )
    with (
        hostile_scheduler("127.0.0.2", _framed(_pickled_frames(tmp_path / "x"))) as (
            port,
            peers,
        ),
        pytest.raises(Uncorroborated) as err,
    ):
        trust.vet(f"tcp://127.0.0.2:{port}", ["gpu01"])
    assert peers == []
    assert "is not in dask_trusted_networks and not the reporting node's address" in str(err.value)
    # the reporting node's own address, and the site's networks, are trusted
    assert trust.vet("tcp://127.0.0.1:8786", ["gpu01"]) == ("127.0.0.1", 8786)
    assert trust.vet("tcp://10.20.3.4:8786", ["gpu01"]) == ("10.20.3.4", 8786)
    with pytest.raises(Uncorroborated, match="only tcp:// schedulers"):
        trust.vet("inproc://10.20.3.4/1/2", ["gpu01"])
    with pytest.raises(ValueError, match="dask_trusted_networks: 'ten' is not a network"):
        parse_networks(["ten"])


def test_an_honest_scheduler_retires_the_named_worker() -> None:
    from distributed import LocalCluster

    with LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=2,
        processes=False,
        threads_per_worker=1,
        dashboard_address=None,
        protocol="tcp://",
        host="127.0.0.1",
    ) as cluster:
        workers = dict(cluster.scheduler.workers)
        victim = next(iter(workers.values()))
        outcome = retire_dask_worker(cluster.scheduler_address, str(victim.name), timeout_s=20.0)
        assert outcome.ok, outcome.detail
        assert victim.address not in cluster.scheduler.workers
        assert len(cluster.scheduler.workers) == 1
