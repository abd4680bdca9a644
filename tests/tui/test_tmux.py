"""The dashboard in a real terminal: ``gpuwarden demo`` under tmux, read back with
``capture-pane`` as a sysadmin would see it, then quit with ``q``."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def tmux(*args: str) -> str:
    out = subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=30, check=True)
    return out.stdout


@pytest.fixture
def session(tmp_path: Path) -> Iterator[str]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is needed (scripts/test.sh installs it)")
    name = f"gw-top-{time.monotonic_ns()}"
    yield name
    subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True, check=False)


def screen_with(session: str, text: str, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", session)
        if text in screen:
            return screen
        time.sleep(0.5)
    raise AssertionError(f"{text!r} never appeared; last screen:\n{screen}")


def test_demo_opens_the_dashboard_in_a_terminal_and_q_prints_the_summary(
    session: str, tmp_path: Path
) -> None:
    log = tmp_path / "demo.out"
    command = (
        f"cd {shlex.quote(str(REPO))} && {shlex.quote(sys.executable)} -m gpuwarden demo "
        f"--nodes 4 --gpus 4; "
        f"echo demo-exit=$? > {shlex.quote(str(log))}; sleep 30"
    )
    tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "30", "bash", "-c", command)
    screen = screen_with(session, "nodes 4/4")
    # The header, the node x GPU grid and the key bar, as the sysadmin sees them.
    assert "GPUs 16" in screen and "connected" in screen
    for node in ("gpu01", "gpu02", "gpu03", "gpu04"):
        assert node in screen
    assert "? help" in screen and "q quit" in screen
    # The demo's 20 s idle window: within a minute the first dry-run decisions arrive and
    # the header knows the enforcement mode from them.
    screen_with(session, "enforcement dry-run", timeout_s=120)
    tmux("send-keys", "-t", session, "?")
    assert "the cluster as the collector sees it" in screen_with(session, "gpuwarden top:")
    tmux("send-keys", "-t", session, "Escape")
    deadline = time.monotonic() + 30  # the help screen closes (Escape alone, not Alt+q)
    while "gpuwarden top:" in tmux("capture-pane", "-p", "-t", session):
        assert time.monotonic() < deadline, "the help screen did not close"
        time.sleep(0.5)
    tmux("send-keys", "-t", session, "q")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not log.exists():
        time.sleep(0.5)
    assert log.exists(), tmux("capture-pane", "-p", "-t", session)
    assert log.read_text().strip() == "demo-exit=0"
    assert "summary: nodes 4, GPUs 16" in tmux("capture-pane", "-p", "-S", "-200", "-t", session)
