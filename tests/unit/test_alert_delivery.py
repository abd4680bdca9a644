"""The alert payload, routing, the durable outbox (give-up, bound) and the notifiers' config
and templates: everything short of a network service."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from pathlib import Path

import pytest

from gpuwarden.collector.outputs.config import load_notifiers
from gpuwarden.collector.outputs.delivery import DeliverySettings, DurableNotifier
from gpuwarden.collector.outputs.email import EmailOptions, EmailTransport
from gpuwarden.common.alert import Alert, alert_from_record
from gpuwarden.common.config import ConfigError
from tests.alert_records import idle_warnings
from tests.helpers import run_gpuwarden, wait_for_sync


def test_the_payload_round_trips_and_a_foreign_one_is_refused_naming_the_field() -> None:
    alert = alert_from_record(idle_warnings()[0])
    doc = json.loads(json.dumps(alert.to_json()))
    assert Alert.from_json(doc) == alert
    with pytest.raises(ValueError, match="version: 2 is not supported"):
        Alert.from_json({**doc, "version": 2})
    with pytest.raises(ValueError, match=r"schema: expected 'gpuwarden\.alert'"):
        Alert.from_json({**doc, "schema": "other"})
    with pytest.raises(ValueError, match=r"gpus\[1\]\.index: expected a number"):
        Alert.from_json({**doc, "gpus": [doc["gpus"][0], {**doc["gpus"][1], "index": "x"}]})
    with pytest.raises(ValueError, match="job_id: expected a string"):
        Alert.from_json({**doc, "job_id": 7})


@pytest.mark.parametrize(
    ("settings", "alice_physics", "bob_chem", "carol_physics"),
    [
        (DeliverySettings(), True, True, True),
        (DeliverySettings(skip_users=("bob",)), True, False, True),
        (DeliverySettings(accounts=("physics",)), True, False, True),
        (DeliverySettings(accounts=("physics",), skip_users=("carol",)), True, False, False),
        (DeliverySettings(skip_accounts=("physics",), users=("alice",)), True, False, False),
        (DeliverySettings(skip_accounts=("chem",)), True, False, True),
        (DeliverySettings(users=("bob",)), False, True, False),
    ],
)
def test_routing_by_user_and_account_a_named_user_decides_over_the_account(
    settings: DeliverySettings, alice_physics: bool, bob_chem: bool, carol_physics: bool
) -> None:
    assert settings.wants("alice", "physics") is alice_physics
    assert settings.wants("bob", "chem") is bob_chem
    assert settings.wants("carol", "physics") is carol_physics


class Refusing:
    def __init__(self) -> None:
        self.tries = 0

    def check(self, alert: Alert) -> None:
        if not alert.user:
            raise ValueError("no user")

    def deliver(self, alert: Alert) -> None:
        self.tries += 1
        raise ConnectionRefusedError("down")

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now


def test_an_alert_failing_past_give_up_after_is_kept_aside_counted_not_lost(
    tmp_path: Path,
) -> None:
    clock = Clock()
    transport = Refusing()
    settings = DeliverySettings(retry_initial=0.01, retry_max_backoff=0.01, give_up_after=60.0)
    n = DurableNotifier("t", transport, settings, tmp_path / "o.db", clock=clock)
    n.send(idle_warnings()[0])
    n.start()
    try:
        wait_for_sync(lambda: transport.tries >= 1)
        assert n.stats().pending == 1 and n.stats().given_up == 0
        with clock.lock:
            clock.now += 61.0
        wait_for_sync(lambda: n.stats().given_up == 1)
        assert n.stats().pending == 0
        assert "ConnectionRefusedError: down" in n.stats().last_error
    finally:
        n.close()
    kept = sqlite3.connect(tmp_path / "o.db").execute("SELECT payload FROM given_up").fetchall()
    assert json.loads(kept[0][0])["job_id"] == "4242"


def test_the_outbox_is_bounded_dropping_the_oldest_counted(tmp_path: Path) -> None:
    n = DurableNotifier(
        "t", Refusing(), DeliverySettings(queue_max=2), tmp_path / "o.db", clock=Clock()
    )
    try:
        for i in range(4):
            n.send(idle_warnings(f"10{i}")[0])  # never started: nothing delivered
        s = n.stats()
        assert (s.queued, s.pending, s.dropped) == (4, 2, 2)
        assert [p.alert.job_id for p in n.outbox.due(2000.0)] == ["102", "103"]
        n.send(idle_warnings("4242", user="")[0])  # undeliverable: refused at once
        assert n.stats().skipped == 1
    finally:
        n.close()


def test_email_templates_are_site_editable_and_a_bad_placeholder_stops_the_start(
    tmp_path: Path,
) -> None:
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "email.txt").write_text("Dear $user, job $job_id.\n$gpu_table\n")
    opts = EmailOptions(address="{user}@uni.example", templates="tpl")
    msg = EmailTransport(opts, tmp_path).message(alert_from_record(idle_warnings()[0]))
    body = msg.get_body(("plain",))
    assert body is not None
    assert body.get_content().startswith("Dear alice, job 4242.\n    node   GPU")
    assert msg["Subject"].startswith("[your HPC site] job 4242")  # shipped subject kept
    (tmp_path / "tpl" / "email.html").write_text("<p>$usr</p>")
    with pytest.raises(ValueError, match=r"template email.html: unknown placeholder \$usr"):
        EmailTransport(opts, tmp_path)


def test_the_address_map_wins_over_the_template(tmp_path: Path) -> None:
    (tmp_path / "map").write_text("# who\nalice  a.smith@physics.example\n")
    t = EmailTransport(EmailOptions(address="{user}@uni.example", address_map="map"), tmp_path)
    assert t.address("alice") == "a.smith@physics.example"
    assert t.address("bob") == "bob@uni.example"
    with pytest.raises(ValueError, match="no e-mail address for user 'a b'"):
        t.address("a b")
    (tmp_path / "map").write_text("alice\n")
    with pytest.raises(ValueError, match="line 1: expected 'user address'"):
        EmailTransport(EmailOptions(address_map="map"), tmp_path)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[notifiers.email]\nhost = "h"\n', "[notifiers.email] address or address_map"),
        ('[notifiers.email]\naddress = "x@y"\n', "address: 'x@y' has no {user}"),
        ("[notifiers.mqtt]\nqos = 2\n", "[notifiers.mqtt] qos: unknown setting"),
        ('[notifiers.mqtt]\ntopic_prefix = "a/#"\n', "topic_prefix: 'a/#' may not hold"),
        ('[notifiers.mqtt]\nretry_initial = "soon"\n', "[notifiers.mqtt] retry_initial"),
        ('[notifiers.mqtt]\nusers = "alice"\n', "[notifiers.mqtt] users: expected a list"),
    ],
)
def test_bad_notifier_tables_fail_at_start_naming_the_key(
    tmp_path: Path, table: str, message: str
) -> None:
    import tomllib

    with pytest.raises(ConfigError) as err:
        load_notifiers(tomllib.loads(table), tmp_path)
    assert message in str(err.value)


def test_gpuwarden_alerts_refuses_a_user_name_that_is_a_topic_pattern() -> None:
    r = run_gpuwarden("alerts", "--user", "alice/#", "--count", "1")
    assert r.returncode == 2
    assert "argument --user: 'alice/#' is not a user name alerts can go to" in r.stderr


def test_an_action_taken_is_told_in_the_past_with_nothing_more_to_come(tmp_path: Path) -> None:
    record = idle_warnings()[0]
    done = dataclasses.replace(
        record,
        action="requeue",
        outcome="done",
        evidence={**record.evidence, "next": {"action": "none", "at_ts": None}},
    )
    t = EmailTransport(EmailOptions(address="{user}@uni.example"), tmp_path)
    msg = t.message(alert_from_record(done))
    assert (
        msg["Subject"]
        == "[your HPC site] job 4242: your job was requeued (its GPUs have been idle)"
    )
    body = msg.get_body(("plain",))
    assert body is not None
    text = " ".join(body.get_content().split())
    assert "Your job was requeued (job 4242): its 2 GPUs on gpu01 had not been used" in text
    assert "Nothing more: the action above has been taken." in text
