"""Real servers for the export tests: Debian's ``victoria-metrics`` (line protocol in,
PromQL and export out) and ``prometheus``, each started on 127.0.0.1 on a free port in the
test's folder and stopped afterwards. ``scripts/exports-install.sh`` installs them when
missing."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, free_port


def ensure_installed(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        subprocess.run([str(REPO / "scripts" / "exports-install.sh")], check=True)
        path = shutil.which(binary)
    assert path is not None, f"{binary} is not installed (scripts/exports-install.sh)"
    return path


def http(url: str, data: bytes | None = None, timeout_s: float = 10.0) -> bytes:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return bytes(resp.read())


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url}: server exited:\n{log.read_text()[-3000:]}")
        try:
            http(url, timeout_s=1.0)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
    raise AssertionError(f"{url} not ready in {timeout_s} s:\n{log.read_text()[-3000:]}")


class Server:
    """One server process; ``stop`` and ``start`` again on the same port and data."""

    def __init__(self, name: str, args: list[str], ready_path: str, port: int, log: Path):
        self.name = name
        self.args = args
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        fh = self.log.open("ab")
        self.proc = subprocess.Popen(self.args, stdout=fh, stderr=subprocess.STDOUT)
        fh.close()
        wait_http(self.url + self.ready_path, self.proc, self.log)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant PromQL query; the result vector."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        body = json.loads(http(f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"))
        assert body["status"] == "success", body
        return list(body["data"]["result"])


class VictoriaMetrics(Server):
    def force_flush(self) -> None:
        http(f"{self.url}/internal/force_flush")

    def export(self, match: str) -> list[dict[str, Any]]:
        """Every raw sample of the series matching ``match`` (one dict per series)."""
        self.force_flush()
        q = urllib.parse.urlencode({"match[]": match})
        raw = http(f"{self.url}/api/v1/export?{q}")
        return [json.loads(line) for line in raw.splitlines() if line.strip()]


@pytest.fixture
def victoria_metrics(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    binary = ensure_installed("victoria-metrics")
    port = free_port()
    vm = VictoriaMetrics(
        "victoria-metrics",
        [
            binary,
            f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={tmp_path / 'vm-data'}",
            "-search.latencyOffset=0s",
            "-retentionPeriod=100y",
        ],
        "/health",
        port,
        tmp_path / "victoria-metrics.log",
    )
    vm.start()
    try:
        yield vm
    finally:
        vm.stop()


def start_prometheus(tmp_path: Path, config: str) -> Server:
    binary = ensure_installed("prometheus")
    port = free_port()
    conf = tmp_path / "prometheus.yml"
    conf.write_text(config)
    prom = Server(
        "prometheus",
        [
            binary,
            f"--config.file={conf}",
            f"--storage.tsdb.path={tmp_path / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ],
        "/-/ready",
        port,
        tmp_path / "prometheus.log",
    )
    prom.start()
    return prom
