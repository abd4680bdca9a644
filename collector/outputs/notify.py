"""Researcher alerts: the ``Notifier`` plug-in interface, its registry and the hub.

The hub is fed the collector's audit records (ladder events) through :meth:`NotifierHub.submit`,
which only puts the record on a bounded queue and returns: detection never waits on an
alert. One thread takes records off the queue and hands each alert to every notifier in
turn; a notifier that raises is counted (per notifier) and logged, and the others still get
the alert. A full queue drops the record, counted and logged.

What is an alert: a warning to deliver (outcome ``warned``) and an action carried out
(outcome ``done``); dry-run decisions, advice and report-only findings stay in the audit log.

A new notifier is one module with a class that has ``send(record)`` and ``close()`` (and,
optionally, ``start()``, called when the hub starts) and a factory taking
(:class:`NotifierContext`, options from ``[notifiers.NAME]``), plus one line in
:data:`NOTIFIERS`. ``send`` may block (an SMTP round trip); delivery that must survive
outages and restarts goes through
:class:`~gpuwarden.collector.outputs.delivery.DurableNotifier` (MQTT, e-mail): the notifier
is then only a transport, and ``send`` only writes the alert to a durable outbox.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gpuwarden.collector.audit import AuditRecord
from gpuwarden.common.config import build_section

log = logging.getLogger(__name__)

ALERT_OUTCOMES = frozenset({"warned", "done"})


def is_alert(record: AuditRecord) -> bool:
    """Does this audit record tell a researcher something they must hear?"""
    return record.outcome in ALERT_OUTCOMES


class Notifier(Protocol):
    def send(self, record: AuditRecord) -> None:
        """Deliver one alert (or queue it durably); raise on failure."""

    def close(self) -> None:
        """Release connections; safe to call twice."""


@dataclass(frozen=True, slots=True)
class NotifierContext:
    name: str  # the instance name, from [notifiers.NAME]
    state_dir: Path  # the collector's state folder: outboxes and relative paths live here


NotifierFactory = Callable[[NotifierContext, Mapping[str, Any]], Notifier]


@dataclass(frozen=True, slots=True)
class _LogOptions:
    level: str = "warning"

    def __post_init__(self) -> None:
        if self.level not in ("info", "warning"):
            raise ValueError(f"level: {self.level!r} is not one of info, warning")


class LogNotifier:
    """One line per alert in the collector's log (journald), under ``gpuwarden.alerts``."""

    def __init__(self, level: int = logging.WARNING) -> None:
        self.level = level
        self.log = logging.getLogger("gpuwarden.alerts")

    def send(self, record: AuditRecord) -> None:
        action = "warning" if record.outcome == "warned" else record.action
        self.log.log(
            self.level,
            "alert: job %s %s %s (GPUs %s): %s",
            record.job_id,
            record.kind,
            action,
            ",".join(record.gpus) or "-",
            record.detail,
        )

    def close(self) -> None:
        pass


def _log(ctx: NotifierContext, options: Mapping[str, Any]) -> Notifier:
    opts = build_section(_LogOptions, f"notifiers.{ctx.name}", options, environ={})
    return LogNotifier(logging.INFO if opts.level == "info" else logging.WARNING)


def _mqtt(ctx: NotifierContext, options: Mapping[str, Any]) -> Notifier:
    from gpuwarden.collector.outputs.mqtt import mqtt_notifier

    return mqtt_notifier(ctx, options)


def _email(ctx: NotifierContext, options: Mapping[str, Any]) -> Notifier:
    from gpuwarden.collector.outputs.email import email_notifier

    return email_notifier(ctx, options)


NOTIFIERS: dict[str, NotifierFactory] = {
    "log": _log,  # a line in the collector's log per alert
    "mqtt": _mqtt,  # gpuwarden/alerts/<user>/<job_id>, QoS 1 (needs gpuwarden[alerts])
    "email": _email,  # a friendly e-mail over SMTP
}


@dataclass(frozen=True, slots=True)
class NotifierStats:
    name: str
    sent: int
    failed: int
    last_error: str


@dataclass(slots=True)
class _Counts:
    sent: int = 0
    failed: int = 0
    last_error: str = ""


class NotifierHub:
    """Every configured notifier behind one bounded queue and one thread."""

    def __init__(
        self,
        notifiers: Sequence[tuple[str, Notifier]] = (),
        *,
        max_pending: int = 10_000,
        wants: Callable[[AuditRecord], bool] = is_alert,
    ) -> None:
        self.notifiers = list(notifiers)
        self.wants = wants
        self.dropped = 0
        self._queue: queue.Queue[AuditRecord | None] = queue.Queue(max_pending)
        self._counts = {name: _Counts() for name, _ in self.notifiers}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self.notifiers)

    def submit(self, record: AuditRecord) -> None:
        """Queue ``record`` if it is an alert; never blocks (any thread)."""
        if not self.notifiers or not self.wants(record):
            return
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            with self._lock:
                self.dropped += 1
                dropped = self.dropped
            log.warning("notifier queue full: alert for job %s dropped", record.job_id)
            if dropped % 1000 == 0:
                log.error("%d alerts dropped in all: notifiers are not keeping up", dropped)

    def start(self) -> None:
        if not self.notifiers:
            return
        for _, notifier in self.notifiers:
            start = getattr(notifier, "start", None)
            if callable(start):
                start()  # durable notifiers deliver what a previous run left
        self._thread = threading.Thread(target=self._run, name="notifiers", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (within ``timeout_s``), then close every notifier."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("notifiers still busy after %.0f s at shutdown", timeout_s)
        self._thread = None

    def stats(self) -> list[NotifierStats]:
        with self._lock:
            return [
                NotifierStats(name, c.sent, c.failed, c.last_error)
                for name, c in self._counts.items()
            ]

    def _run(self) -> None:
        while (record := self._queue.get()) is not None:
            for name, notifier in self.notifiers:
                try:
                    notifier.send(record)
                except Exception as exc:
                    with self._lock:
                        c = self._counts[name]
                        c.failed += 1
                        c.last_error = f"{type(exc).__name__}: {exc}"[:500]
                    log.warning(
                        "notifier %s: alert for job %s failed: %s", name, record.job_id, exc
                    )
                else:
                    with self._lock:
                        self._counts[name].sent += 1
        for name, notifier in self.notifiers:
            try:
                notifier.close()
            except Exception:
                log.exception("notifier %s: close failed", name)
