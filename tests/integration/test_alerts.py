"""Researcher alerts through real services on 127.0.0.1: MQTT through Debian's mosquitto with
a password file and the shipped %u ACL, e-mail through an aiosmtpd server; a durable outbox
that outlives outages and a collector restart, delivering each alert once."""

from __future__ import annotations

import asyncio
import json
from email.message import Message
from pathlib import Path

import pytest

pytest.register_assert_rewrite("alert_services")
from alert_services import (  # noqa: E402
    COLLECTOR_USER,
    PASSWORDS,
    Broker,
    SmtpServer,
    broker,
    mosquitto,
    smtp_server,
    subscribed,
)

from gpuwarden.collector.outputs.config import load_notifiers  # noqa: E402
from gpuwarden.collector.outputs.delivery import DurableNotifier  # noqa: E402
from gpuwarden.collector.outputs.notify import NotifierHub  # noqa: E402
from gpuwarden.collector.server import Collector  # noqa: E402
from gpuwarden.common.config import read_toml  # noqa: E402
from tests.alert_records import T0, idle_warnings  # noqa: E402
from tests.helpers import Proc, procs, wait_for  # noqa: E402

__all__ = ["broker", "mosquitto", "procs", "smtp_server"]  # fixtures used by name


def config(
    tmp_path: Path,
    *,
    mqtt_port: int | None = None,
    smtp_port: int | None = None,
    extra: str = "",
) -> Path:
    text = ""
    if mqtt_port is not None:
        (tmp_path / "mqtt-password").write_text(PASSWORDS[COLLECTOR_USER] + "\n")
        text += (
            f'[notifiers.mqtt]\nport = {mqtt_port}\nusername = "{COLLECTOR_USER}"\n'
            'password_file = "mqtt-password"\nretry_initial = "0.2s"\n'
            'retry_max_backoff = "0.5s"\n\n'
        )
    if smtp_port is not None:
        text += (
            f'[notifiers.email]\nport = {smtp_port}\naddress = "{{user}}@example.org"\n'
            'site = "Example HPC"\nretry_initial = "0.2s"\nretry_max_backoff = "0.5s"\n'
            f"{extra}\n"
        )
    path = tmp_path / "collector.toml"
    path.write_text(text)
    return path


def hub_from(path: Path, state_dir: Path) -> NotifierHub:
    return load_notifiers(read_toml(path), state_dir)


def durable(hub: NotifierHub, name: str) -> DurableNotifier:
    n = dict(hub.notifiers)[name]
    assert isinstance(n, DurableNotifier)
    return n


def part(msg: Message, content_type: str) -> str:
    for p in msg.walk():
        if p.get_content_type() == content_type:
            return str(p.get_payload(decode=True), "utf-8")
    raise AssertionError(f"no {content_type} part")


def text_part(msg: Message) -> str:
    return part(msg, "text/plain")


async def test_alice_receives_her_alert_and_bob_subscribed_to_her_topic_receives_nothing(
    mosquitto: Broker, tmp_path: Path
) -> None:
    hub = hub_from(config(tmp_path, mqtt_port=mosquitto.port), tmp_path)
    hub.start()
    try:
        async with (
            subscribed(mosquitto, "alice", "gpuwarden/alerts/alice/#") as alice,
            subscribed(mosquitto, "bob", "gpuwarden/alerts/alice/#", "gpuwarden/alerts/#") as bob,
        ):
            (to_alice,) = idle_warnings("4242", "alice")
            (to_bob,) = idle_warnings("5151", "bob", account="chem")
            hub.submit(to_alice)
            hub.submit(to_bob)
            await wait_for(lambda: alice.messages and bob.messages)
            await wait_for(lambda: durable(hub, "mqtt").stats().delivered == 2)
            await asyncio.sleep(0.5)  # anything else on its way arrives now
    finally:
        await asyncio.to_thread(hub.stop)
    ((topic, payload),) = alice.messages
    assert topic == "gpuwarden/alerts/alice/4242"
    assert payload["schema"] == "gpuwarden.alert" and payload["version"] == 1
    assert (payload["job_id"], payload["user"], payload["account"]) == ("4242", "alice", "physics")
    assert payload["nodes"] == ["gpu01"] and payload["partition"] == "gpu"
    assert [g["util_max_pct"] for g in payload["gpus"]] == [3.0, 0.0]
    assert payload["gpus"][0]["mem_used_max_bytes"] == 12 * 2**30
    assert payload["next"] == {
        "action": "warn",
        "at_ts": T0 + 2400 + 900,
        "reason": "another warning",
    }
    assert payload["jobstats"] == "gpuwarden jobstats 4242"
    assert "exemption" in payload["exemption"]
    # bob, subscribed to alice's topic and to everything, got only his own alert
    assert [(t, p["user"]) for t, p in bob.messages] == [("gpuwarden/alerts/bob/5151", "bob")]


async def test_the_email_reaches_the_smtp_server_with_the_job_user_and_numbers(
    smtp_server: SmtpServer, tmp_path: Path
) -> None:
    hub = hub_from(
        config(tmp_path, smtp_port=smtp_server.port, extra='skip_accounts = ["chem"]'), tmp_path
    )
    hub.start()
    try:
        (to_alice,) = idle_warnings("4242", "alice")
        (to_bob,) = idle_warnings("5151", "bob", account="chem")  # his account opted out
        hub.submit(to_alice)
        hub.submit(to_bob)
        await wait_for(lambda: durable(hub, "email").stats().delivered == 1)
        await asyncio.sleep(0.3)
        stats = durable(hub, "email").stats()
    finally:
        await asyncio.to_thread(hub.stop)
    ((rcpts, msg),) = smtp_server.received
    assert rcpts == ["alice@example.org"]
    assert msg["To"] == "alice@example.org"
    assert msg["Subject"] == "[Example HPC] job 4242: its GPUs have been idle (warning 1 of 2)"
    text = text_part(msg).replace("\r\n", "\n")
    flat = " ".join(text.split())  # paragraphs are wrapped
    assert text.startswith("Hello alice,")
    assert "Your job 4242 holds 2 GPUs on gpu01 that have not been used for 32 min" in flat
    assert "gpu01  0         3%        0%  12.0 of 80.0 GiB  32 min" in text
    assert "gpu01  1         0%        0%   0.0 of 80.0 GiB  32 min" in text
    assert "you will get another warning" in flat
    assert "\n    gpuwarden jobstats 4242\n" in text
    assert "exemption" in flat
    html = part(msg, "text/html")
    assert "<table" in html and "<td" in html and "12.0 of 80.0 GiB" in html
    assert stats.skipped == 1 and stats.pending == 0


async def test_the_same_finding_is_not_sent_twice_within_the_warn_interval(
    smtp_server: SmtpServer, tmp_path: Path
) -> None:
    hub = hub_from(config(tmp_path, smtp_port=smtp_server.port), tmp_path)
    hub.start()
    try:
        first, second = idle_warnings("4242", "alice", times=(2400.0, 3300.0))
        again = idle_warnings("4242", "alice", times=(2700.0,))[0]  # e.g. after a restart
        for record in (first, again, second):
            hub.submit(record)
        await wait_for(lambda: durable(hub, "email").stats().delivered == 2)
        await asyncio.sleep(0.3)
        stats = durable(hub, "email").stats()
    finally:
        await asyncio.to_thread(hub.stop)
    subjects = [m["Subject"] for _, m in smtp_server.received]
    assert subjects == [
        "[Example HPC] job 4242: its GPUs have been idle (warning 1 of 2)",
        "[Example HPC] job 4242: its GPUs have been idle (warning 2 of 2)",
    ]
    assert stats.suppressed == 1
    assert "your job will be requeued" in " ".join(text_part(smtp_server.received[1][1]).split())


async def test_alerts_wait_out_outages_and_a_collector_restart_none_lost_none_duplicated(
    broker: Broker, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    path = config(tmp_path, mqtt_port=broker.port, smtp_port=smtp_server.port)
    records = [r for i in range(3) for r in idle_warnings(f"70{i}", "alice")]
    smtp_server.refuse(True)  # and the broker is not started

    first = Collector(db_path=tmp_path / "c.db", notifiers=hub_from(path, tmp_path))
    await first.start()
    for r in records:
        first.notifiers.submit(r)
    mqtt, email = durable(first.notifiers, "mqtt"), durable(first.notifiers, "email")
    await wait_for(lambda: mqtt.stats().failures >= 3 and email.stats().failures >= 3)
    assert smtp_server.received == []
    assert "451" in email.stats().last_error
    await first.stop()

    broker.start()
    smtp_server.refuse(False)
    async with subscribed(broker, "alice", "gpuwarden/alerts/alice/#") as alice:
        second = Collector(db_path=tmp_path / "c.db", notifiers=hub_from(path, tmp_path))
        await second.start()  # nothing new is submitted: the outbox is what was left
        try:
            mqtt, email = durable(second.notifiers, "mqtt"), durable(second.notifiers, "email")
            await wait_for(lambda: mqtt.stats().pending == 0 and email.stats().pending == 0)
            await wait_for(lambda: len(alice.messages) >= 3 and len(smtp_server.received) >= 3)
            await asyncio.sleep(1.0)  # a duplicate would arrive now
            stats = mqtt.stats(), email.stats()
        finally:
            await second.stop()
    assert sorted(p["job_id"] for _, p in alice.messages) == ["700", "701", "702"]
    assert sorted(m["X-Gpuwarden-Job"] for _, m in smtp_server.received) == ["700", "701", "702"]
    assert len({m["Message-ID"] for _, m in smtp_server.received}) == 3
    for s in stats:
        assert (s.queued, s.delivered, s.pending, s.given_up, s.dropped) == (3, 3, 0, 0, 0)


async def test_gpuwarden_alerts_follows_ones_own_alerts(
    mosquitto: Broker, tmp_path: Path, procs: list[Proc]
) -> None:
    pw = tmp_path / "alice-pw"
    pw.write_text(PASSWORDS["alice"])
    broker_addr = f"127.0.0.1:{mosquitto.port}"
    text = Proc(
        ["alerts", "--broker", broker_addr, "--user", "alice", "--password-file", str(pw),
         "--count", "1"],
        tmp_path / "text.log",
    )  # fmt: skip
    as_json = Proc(
        ["alerts", "--broker", broker_addr, "--user", "alice", "--password-file", str(pw),
         "--count", "1", "--json"],
        tmp_path / "json.log",
    )  # fmt: skip
    procs.extend([text, as_json])
    await wait_for(lambda: "following" in text.output() and "following" in as_json.output())
    hub = hub_from(config(tmp_path, mqtt_port=mosquitto.port), tmp_path)
    hub.start()
    try:
        hub.submit(idle_warnings("5151", "bob", account="chem")[0])  # not alice's
        hub.submit(idle_warnings("4242", "alice")[0])
        await wait_for(lambda: text.p.poll() is not None and as_json.p.poll() is not None)
    finally:
        await asyncio.to_thread(hub.stop)
    assert text.terminate() == 0 and as_json.terminate() == 0
    out = text.output()
    assert "job 4242: its GPUs have been idle (warning 1 of 2)" in out
    assert "gpu01 GPU 0: max 3% mean 0%, 12.0 of 80.0 GiB memory, idle 32 min" in out
    assert "details: gpuwarden jobstats 4242" in out
    assert "5151" not in out
    line = next(x for x in as_json.output().splitlines() if x.startswith("{"))
    assert json.loads(line)["job_id"] == "4242"


async def test_gpuwarden_alerts_with_a_wrong_password_says_so(
    mosquitto: Broker, tmp_path: Path
) -> None:
    from tests.helpers import run_gpuwarden

    pw = tmp_path / "pw"
    pw.write_text("wrong")
    r = await asyncio.to_thread(
        run_gpuwarden,
        "alerts", "--broker", f"127.0.0.1:{mosquitto.port}", "--user", "alice",
        "--password-file", str(pw),
    )  # fmt: skip
    assert r.returncode == 1
    assert f"gpuwarden alerts: broker 127.0.0.1:{mosquitto.port}:" in r.stderr


async def test_a_live_collector_warns_the_researcher_of_an_idle_job_by_email(
    smtp_server: SmtpServer, tmp_path: Path
) -> None:
    """Ladder events of the real collector reach the e-mail notifier: reports of a job idle
    from its start go in, the researcher's warnings come out at the mail server."""
    from gpuwarden.collector.enforce import attach_enforcement
    from gpuwarden.collector.policy import Policy, PolicySet
    from gpuwarden.collector.replay import RecordingExecutor
    from tests.live_feed import trace_reports

    trace = Path(__file__).parents[1] / "fixtures" / "traces" / "idle_from_start.jsonl"
    lines = trace.read_bytes().splitlines()
    policies = PolicySet(default=Policy())  # dry run: warnings, then "would requeue"
    hub = hub_from(config(tmp_path, smtp_port=smtp_server.port), tmp_path)
    collector = Collector(db_path=tmp_path / "c.db", notifiers=hub)
    await collector.start()
    try:
        enforcer = attach_enforcement(
            collector,
            policies=policies,
            executor=RecordingExecutor(),
            audit_jsonl=None,
            evaluate_interval_s=3600.0,  # evaluated below, on the trace's clock
        )
        records = []
        for reports in trace_reports(lines, policies):
            await asyncio.gather(*(collector.ingestor.submit(r) for r in reports))
            now = reports[-1].window_end + enforcer.engine.reorder_s
            records += await asyncio.to_thread(enforcer.evaluate, now)
        warned = [r for r in records if r.outcome == "warned"]
        assert len(warned) == 2 and warned[0].user == "alice"
        await wait_for(lambda: len(smtp_server.received) == 2)
    finally:
        await collector.stop()
    subjects = [m["Subject"] for _, m in smtp_server.received]
    assert subjects == [
        "[Example HPC] job 1002: its GPUs have been idle (warning 1 of 2)",
        "[Example HPC] job 1002: its GPUs have been idle (warning 2 of 2)",
    ]
    last = " ".join(text_part(smtp_server.received[1][1]).split())
    assert "gpu01 0 0% 0% 0.5 of 80.0 GiB" in last
    assert "this site only reports idle GPUs for now" in last  # dry run: nothing will happen
    assert [rcpts for rcpts, _ in smtp_server.received] == [["alice@example.org"]] * 2
