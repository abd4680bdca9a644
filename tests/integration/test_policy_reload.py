"""SIGHUP reloads the policy of a running ``gpuwarden collector``: the new one shows in
GetPolicy at once; a bad one is refused with a log line naming the key, and the old one is
kept. Real collector subprocess, real gRPC."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import grpc

from gpuwarden.proto.v1 import gpuwarden_pb2 as pb
from gpuwarden.proto.v1 import gpuwarden_pb2_grpc as pb_grpc
from tests.helpers import Proc, free_port, wait_for_sync

CONFIG = """
[collector]
insecure = true
listen = "127.0.0.1:{port}"
state_dir = "{state}"

[policy]
idle_window = "{idle}"
warnings = 3

[policy.partition.debug]
warnings = 1
"""


def write(path: Path, port: int, idle: str) -> None:
    path.write_text(CONFIG.format(port=port, state=path.parent / "state", idle=idle))


def policy(port: int) -> dict[str, Any]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        resp = pb_grpc.AdminServiceStub(ch).GetPolicy(pb.PolicyRequest(), timeout=10)
    return dict(json.loads(resp.policy_json))


def test_sighup_reloads_the_policy_and_refuses_a_bad_one(tmp_path: Path, procs: list[Proc]) -> None:
    port = free_port()
    cfg = tmp_path / "collector.toml"
    write(cfg, port, "30m")
    proc = Proc(["collector", "--config", str(cfg)], tmp_path / "collector.log")
    procs.append(proc)
    wait_for_sync(lambda: "listening" in proc.output(), 30)
    assert policy(port)["default"]["idle_window"] == 1800.0

    write(cfg, port, "45m")
    proc.p.send_signal(signal.SIGHUP)
    wait_for_sync(lambda: policy(port)["default"]["idle_window"] == 2700.0, 20)
    now = policy(port)
    assert now["partitions"]["debug"]["idle_window"] == 2700.0  # partitions follow
    assert now["partitions"]["debug"]["warnings"] == 1
    assert "policy reloaded" in proc.output()

    cfg.write_text(cfg.read_text().replace("warnings = 3", "warnings = -4"))
    proc.p.send_signal(signal.SIGHUP)
    wait_for_sync(lambda: "policy reload refused" in proc.output(), 20)
    line = next(ln for ln in proc.output().splitlines() if "policy reload refused" in ln)
    assert "[policy] warnings" in line, line
    time.sleep(0.5)
    assert proc.p.poll() is None, "the collector died on SIGHUP"
    assert policy(port)["default"]["idle_window"] == 2700.0  # the old one is kept
    assert policy(port)["default"]["warnings"] == 3
    assert proc.terminate() == 0
