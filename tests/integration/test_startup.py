"""Permanent problems are found at start: the daemon exits at once and says what is wrong,
instead of running on and logging tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gpuwarden.collector.server import Collector
from tests.helpers import REPO, Proc, free_port, wait_for_sync


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpuwarden", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


async def test_second_collector_on_the_same_port_fails_to_start(tmp_path: Path) -> None:
    first = Collector(db_path=tmp_path / "a.db", listen="127.0.0.1:0")
    await first.start()
    try:
        second = Collector(db_path=tmp_path / "b.db", listen=f"127.0.0.1:{first.port}")
        with pytest.raises(OSError, match=rf"cannot listen on 127.0.0.1:{first.port}"):
            await second.start()
        await second.stop()
    finally:
        await first.stop()


def test_second_collector_command_exits_naming_the_address(
    tmp_path: Path, procs: list[Proc]
) -> None:
    port = free_port()
    args = ["collector", "--insecure", "--listen", f"127.0.0.1:{port}"]
    first = Proc([*args, "--state-dir", str(tmp_path / "a")], tmp_path / "a.log")
    procs.append(first)
    wait_for_sync(lambda: "listening" in first.output(), 30)
    r = run(*args, "--state-dir", str(tmp_path / "b"), timeout=30)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr
    assert "listening" not in r.stdout
    assert first.terminate() == 0
