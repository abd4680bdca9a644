"""Durable alert delivery, written once for every notifier that talks to a server (MQTT, e-mail).

A :class:`DurableNotifier` is what the :class:`~gpuwarden.collector.outputs.notify.NotifierHub`
sees. Its ``send(record)`` only decides and queues:

- routing: the notifier's ``users`` / ``accounts`` / ``skip_users`` / ``skip_accounts``
  settings say whose alerts it carries (so a site gives each user or account e-mail, MQTT,
  both or none);
- the alert is made from the audit record (:func:`~gpuwarden.common.alert.alert_from_record`)
  and checked by the transport (an alert that can never be delivered, e.g. a user with no
  address, is refused at once, counted and logged);
- the same finding (job, kind, finding start, outcome) is not queued again within
  ``resend_after`` (default: the policy's ``warn_interval`` in the record);
- the alert is written to the notifier's :class:`~gpuwarden.collector.outputs.outbox.Outbox`
  under ``<state_dir>/notifiers/<NAME>/outbox.db``.

One delivery thread per notifier hands due alerts to the :class:`Transport`; a failure is
counted and retried after a jittered exponential backoff (``retry_initial`` doubling up to
``retry_max_backoff``), per alert, so one bad address does not hold up the others. An alert
still failing after ``give_up_after`` is moved to the outbox's ``given_up`` table, counted
and logged as an error. On start the thread delivers what a previous run left.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from gpuwarden.collector.outputs.outbox import Outbox
from gpuwarden.common.alert import DEFAULT_EXEMPTION, Alert, alert_from_record, dedup_key
from gpuwarden.common.config import build_section, duration_field, ranged
from gpuwarden.common.types import AuditRecord

log = logging.getLogger(__name__)

OptionsT = TypeVar("OptionsT")
DEFAULT_RESEND_AFTER_S = 900.0  # when the record carries no policy warn_interval


class Transport(Protocol):
    def check(self, alert: Alert) -> None:
        """Raise ValueError when ``alert`` can never be delivered (no address...)."""

    def deliver(self, alert: Alert) -> None:
        """Deliver one alert, or raise (it is retried later)."""

    def close(self) -> None:
        """Drop connections; safe to call twice."""


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """The keys every durable notifier table shares (beside the transport's own)."""

    type: str = ""
    users: tuple[str, ...] = ()  # only these users (and the accounts below); empty: everyone
    accounts: tuple[str, ...] = ()
    skip_users: tuple[str, ...] = ()  # never these users / accounts
    skip_accounts: tuple[str, ...] = ()
    resend_after: float = duration_field(0.0)  # 0: the policy's warn_interval
    retry_initial: float = duration_field(5.0, minimum=0.001)
    retry_max_backoff: float = duration_field(300.0, minimum=0.001)
    give_up_after: float = duration_field(7 * 86400.0, minimum=1.0)
    queue_max: int = ranged(100_000, minimum=1)
    exemption: str = DEFAULT_EXEMPTION  # how to ask for an exemption, in the site's words

    def wants(self, user: str, account: str) -> bool:
        """Does this notifier carry alerts for ``user`` of ``account``? A user named in
        ``users``/``skip_users`` decides over their account."""
        if user in self.skip_users:
            return False
        if user in self.users:
            return True
        if account in self.skip_accounts:
            return False
        if account in self.accounts:
            return True
        return not self.users and not self.accounts


DELIVERY_KEYS = frozenset(f.name for f in dataclasses.fields(DeliverySettings))


@dataclass(frozen=True, slots=True)
class DeliveryStats:
    name: str
    pending: int  # alerts waiting in the outbox
    queued: int  # alerts ever queued
    delivered: int
    failures: int  # failed delivery attempts
    suppressed: int  # the same finding again within resend_after
    skipped: int  # not routed to this notifier, or undeliverable (this run)
    given_up: int
    dropped: int  # beyond queue_max
    last_error: str


class DurableNotifier:
    def __init__(
        self,
        name: str,
        transport: Transport,
        settings: DeliverySettings,
        outbox_path: Path,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.transport = transport
        self.settings = settings
        self.clock = clock
        self.outbox = Outbox(outbox_path)
        self.skipped = 0
        self.last_error = ""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- the hub's thread -----------------------------------------------------------------
    def send(self, record: AuditRecord) -> None:
        s = self.settings
        if not s.wants(record.user, record.account):
            self.skipped += 1
            return
        alert = alert_from_record(record, s.exemption)
        try:
            self.transport.check(alert)
        except ValueError as exc:
            self.skipped += 1
            log.error(
                "notifier %s: alert for job %s cannot be delivered: %s",
                self.name,
                record.job_id,
                exc,
            )
            return
        period = s.resend_after or _warn_interval(record)
        before = self.outbox.counters()["dropped"]
        if self.outbox.put(alert, dedup_key(record), period, s.queue_max, self.clock()):
            dropped = self.outbox.counters()["dropped"] - before
            if dropped:
                log.error("notifier %s: outbox full, %d oldest alerts dropped", self.name, dropped)
            self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"notifier-{self.name}", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop delivering (what is left stays in the outbox for the next start)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30.0)
        self.transport.close()
        self.outbox.close()

    def stats(self) -> DeliveryStats:
        c = self.outbox.counters()
        return DeliveryStats(
            name=self.name,
            pending=c["pending"],
            queued=c["queued"],
            delivered=c["delivered"],
            failures=c["failures"],
            suppressed=c["suppressed"],
            skipped=self.skipped,
            given_up=c["given_up"],
            dropped=c["dropped"],
            last_error=self.last_error,
        )

    # -- the delivery thread --------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._deliver_due()
            except Exception:  # a bug here must not end delivery for good
                log.exception("notifier %s: delivery loop failed", self.name)
                self._stop.wait(self.settings.retry_initial)
            nxt = self.outbox.next_try_ts() if not self._stop.is_set() else None
            timeout = 60.0 if nxt is None else min(60.0, max(0.0, nxt - self.clock()))
            self._wake.wait(timeout)
            self._wake.clear()

    def _deliver_due(self) -> None:
        s = self.settings
        while not self._stop.is_set():
            due = self.outbox.due(self.clock())
            if not due:
                return
            for p in due:
                if self._stop.is_set():
                    return
                try:
                    self.transport.deliver(p.alert)
                except Exception as exc:
                    now = self.clock()
                    error = f"{type(exc).__name__}: {exc}"
                    self.last_error = error[:500]
                    if now - p.queued_ts >= s.give_up_after:
                        self.outbox.give_up(p.row_id, error, now)
                        log.error(
                            "notifier %s: gave up on the alert for job %s after %d tries: %s",
                            self.name,
                            p.alert.job_id,
                            p.attempts + 1,
                            error,
                        )
                        continue
                    backoff = min(s.retry_initial * 2 ** min(p.attempts, 30), s.retry_max_backoff)
                    backoff *= random.uniform(0.8, 1.2)
                    self.outbox.failed(p.row_id, error, now + backoff)
                    log.warning(
                        "notifier %s: alert for job %s not delivered (try %d, next in %.0f s): %s",
                        self.name,
                        p.alert.job_id,
                        p.attempts + 1,
                        backoff,
                        error,
                    )
                else:
                    self.outbox.delivered(p.row_id)


def _warn_interval(record: AuditRecord) -> float:
    policy = record.evidence.get("policy")
    if isinstance(policy, Mapping):
        v = policy.get("warn_interval")
        if isinstance(v, int | float) and not isinstance(v, bool) and v > 0:
            return float(v)
    return DEFAULT_RESEND_AFTER_S


def durable_notifier(
    name: str,
    state_dir: Path,
    options: Mapping[str, Any],
    options_type: type[OptionsT],
    transport: Callable[[OptionsT, Path], Transport],
) -> DurableNotifier:
    """A notifier from one ``[notifiers.NAME]`` table: the shared delivery keys, the rest
    built into ``options_type`` for the ``transport``; its outbox under the state folder."""
    section = f"notifiers.{name}"
    mine = {k: v for k, v in options.items() if k in DELIVERY_KEYS}
    settings = build_section(DeliverySettings, section, mine, environ={})
    own = {k: v for k, v in options.items() if k not in DELIVERY_KEYS}
    opts = build_section(options_type, section, own, environ={})
    outbox = state_dir / "notifiers" / name / "outbox.db"
    return DurableNotifier(name, transport(opts, state_dir), settings, outbox)
