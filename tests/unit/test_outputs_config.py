"""``[sinks.NAME]`` / ``[notifiers.NAME]`` tables, the JSON-lines sink, and the alert hub."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import orjson
import pytest

from gpuwarden.collector.audit import AuditRecord
from gpuwarden.collector.outputs.config import load_outputs
from gpuwarden.collector.outputs.jsonl import JsonlSink
from gpuwarden.collector.outputs.notify import LogNotifier, NotifierHub
from gpuwarden.common.config import ConfigError
from gpuwarden.common.types import GpuWindow, JobInfo, WindowRecord
from tests.helpers import wait_for_sync


def config(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "collector.toml"
    p.write_text(text)
    return p


def test_sinks_and_notifiers_are_built_from_their_tables(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        '[sinks.archive]\ntype = "jsonl"\npath = "out/windows.jsonl"\nmax_bytes = 4096\n'
        'batch_max = 50\n\n[sinks.jsonl]\n\n[notifiers.journal]\ntype = "log"\nlevel = "info"\n',
    )
    outputs = load_outputs(path, tmp_path / "state")
    names = [s.name for s in outputs.sinks.sinks]
    assert names == ["archive", "jsonl"]
    archive = outputs.sinks.sinks[0]
    assert isinstance(archive.sink, JsonlSink)
    assert archive.sink.path == tmp_path / "state" / "out" / "windows.jsonl"
    assert archive.settings.batch_max == 50
    assert outputs.sinks.sinks[1].sink.path == tmp_path / "state" / "jsonl.jsonl"  # type: ignore[attr-defined]
    assert [n for n, _ in outputs.notifiers.notifiers] == ["journal"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[sinks.x]\ntype = "influx"\n',
            "[sinks.x] type: 'influx' is not a known sink (known: influxdb, jsonl)",
        ),
        ('[sinks.a]\ntype = "jsonl"\nmax_byte = 10\n', "[sinks.a] max_byte: unknown setting"),
        ('[sinks.a]\ntype = "jsonl"\nmax_bytes = 10\n', "[sinks.a] max_bytes: 10 is below"),
        ('[sinks.a]\ntype = "jsonl"\nbatch_max = 0\n', "[sinks.a] batch_max: 0 is below"),
        ('[sinks.a]\ntype = "jsonl"\nretry_max_backoff = "soon"\n', "[sinks.a] retry_max_backoff"),
        ("[sinks]\nx = 1\n", "[sinks.x] must be a table"),
        ('[sinks."a b"]\n', "a name is 1-64 letters"),
        (
            '[notifiers.m]\ntype = "pager"\n',
            "'pager' is not a known notifier (known: email, log, mqtt)",
        ),
        ('[notifiers.log]\nlevel = "loud"\n', "[notifiers.log] level: 'loud' is not one of"),
        ('[exporters.m]\ntype = "statsd"\n', "'statsd' is not a known exporter (known: prom"),
        ('[exporters.prometheus]\nlisten = "9445"\n', "listen: '9445' is not HOST:PORT"),
        ('[exporters.prometheus]\ntls_cert = "c.pem"\n', "tls_cert and tls_key: give both"),
        ("[exporters.prometheus]\ninstance_port = 0\n", "instance_port: 0 is below"),
        ('[exporters.prometheus]\nstale_after = "soon"\n', "[exporters.prometheus] stale_after"),
        ('[exporters.prometheus]\nbasic_auth_user = "p"\n', "give both or neither"),
    ],
)
def test_bad_output_tables_fail_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_outputs(config(tmp_path, text), tmp_path / "state")
    assert message in str(err.value)


def record(i: int) -> WindowRecord:
    return WindowRecord(
        node="gpu01",
        window_start=1000.0 + i,
        window_end=1005.0 + i,
        gpu=GpuWindow(
            uuid="GPU-a",
            index=0,
            samples=5,
            util_max=float(i),
            job=JobInfo(job_id="42", user="alice"),
            extra_mean={"sm_active_pct": 12.5},
        ),
    )


def test_jsonl_sink_writes_one_line_per_window_and_rotates_by_size(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    sink = JsonlSink(path, max_bytes=2048, keep=2)
    sink.open()
    for k in range(10):
        sink.write([record(k * 3 + j) for j in range(3)])
    sink.close()
    files = [path, path.with_name("w.jsonl.1"), path.with_name("w.jsonl.2")]
    assert all(f.exists() for f in files)
    assert not path.with_name("w.jsonl.3").exists()
    assert all(f.stat().st_size <= 2048 for f in files)
    lines = [orjson.loads(line) for f in reversed(files) for line in f.read_bytes().splitlines()]
    starts = [int(x["window_start"]) - 1000 for x in lines]
    assert starts == list(range(30 - len(starts), 30))  # newest kept, in order, none twice
    last = lines[-1]
    assert last["node"] == "gpu01" and last["gpu"]["job"]["user"] == "alice"
    assert last["gpu"]["util_mean"] is None  # missing is null, never 0
    assert last["gpu"]["extra_mean"] == {"sm_active_pct": 12.5}


def alert(outcome: str, job: str = "7") -> AuditRecord:
    return AuditRecord(
        ts=1.0,
        job_id=job,
        kind="idle",
        action="warn",
        outcome=outcome,
        dry_run=False,
        gpus=("GPU-a",),
        detail="warning 1 of 2: no GPU activity for 30 min",
    )


class _Broken:
    def send(self, record: AuditRecord) -> None:
        raise TimeoutError("smtp server did not answer")

    def close(self) -> None:
        pass


class _Slow:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.got: list[str] = []

    def send(self, record: AuditRecord) -> None:
        self.release.wait()
        self.got.append(record.job_id)

    def close(self) -> None:
        pass


def test_hub_delivers_alerts_counts_failures_and_never_blocks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    slow = _Slow()
    hub = NotifierHub([("log", LogNotifier()), ("smtp", _Broken()), ("slow", slow)], max_pending=3)
    hub.start()
    try:
        with caplog.at_level(logging.WARNING, logger="gpuwarden.alerts"):
            hub.submit(alert("dry_run"))  # not an alert: stays in the audit log
            for job in ("1", "2", "3", "4", "5", "6"):
                hub.submit(alert("warned", job))  # returns at once although "slow" hangs
            assert hub.dropped >= 1
            slow.release.set()
            wait_for_sync(lambda: len(slow.got) == 6 - hub.dropped)
        stats = {s.name: s for s in hub.stats()}
        assert stats["log"].sent == len(slow.got) and stats["log"].failed == 0
        assert (
            stats["smtp"].failed == len(slow.got) and "did not answer" in stats["smtp"].last_error
        )
        alerts = [r.getMessage() for r in caplog.records if r.name == "gpuwarden.alerts"]
        assert alerts[0] == (
            "alert: job 1 idle warning (GPUs GPU-a): warning 1 of 2: no GPU activity for 30 min"
        )
        assert not any("job 7" in a for a in alerts)
    finally:
        slow.release.set()
        hub.stop()


def test_an_exporters_table_is_an_endpoint_with_its_exporter(tmp_path: Path) -> None:
    outputs = load_outputs(
        config(tmp_path, '[exporters.prometheus]\nlisten = "127.0.0.1:0"\ninstance_port = 9100\n'),
        tmp_path / "state",
    )
    (endpoint,) = outputs.exporters
    assert endpoint.settings.host_port == ("127.0.0.1", 0)
    assert endpoint.exporter.opts.instance_port == 9100  # type: ignore[attr-defined]
