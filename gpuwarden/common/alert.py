"""The researcher alert: what the collector publishes over MQTT and writes in e-mails.

An :class:`Alert` is made from one audit record (a warning, or an action carried out) and is
the payload's one definition: :meth:`Alert.to_json` gives the versioned JSON object
(``"schema": "gpuwarden.alert"``, ``"version": 1``) and :meth:`Alert.from_json` reads it back,
refusing what it does not understand with a message naming the field. ``gpuwarden alerts``
and the notifiers share the friendly wording below.

Payload, version 1::

    {"schema": "gpuwarden.alert", "version": 1, "alert_id": "...", "ts": 1700003600.0,
     "job_id": "1001", "user": "alice", "account": "a1", "partition": "gpu",
     "nodes": ["gpu01"], "kind": "idle", "outcome": "warned", "action": "warn",
     "warning": 1, "warnings": 2, "dry_run": false, "since_ts": 1700000600.0,
     "detail": "...", "gpus": [{"node": "gpu01", "uuid": "GPU-a", "index": 0,
     "util_max_pct": 0.0, "util_mean_pct": 0.0, "mem_used_max_bytes": 1073741824,
     "mem_total_bytes": 85899345920, "idle_s": 1800.0}],
     "next": {"action": "requeue", "at_ts": 1700004500.0, "reason": "policy"},
     "jobstats": "gpuwarden jobstats 1001", "exemption": "..."}

``alert_id`` is the same for every delivery of one alert (at-least-once delivery: a
receiver that sees an id twice can drop the second).
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpuwarden.common.types import AuditRecord

# a user name an alert can go to: one MQTT topic level, an MQTT user name (the broker ACL's
# %u) and the local part of an e-mail address
USER_RE = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]{0,63}")
SCHEMA = "gpuwarden.alert"
VERSION = 1
DEFAULT_EXEMPTION = (
    "If this job needs its GPUs held while they look idle, ask your HPC support team for an "
    "exemption (for the job, your user or your account)."
)
_ACTION_WORDS = {
    "warn": "you will get another warning",
    "release_dask_worker": "your Dask worker will be retired, its data moved to other workers",
    "requeue": "your job will be requeued",
    "requeuehold": "your job will be requeued and held",
    "cancel": "your job will be cancelled",
    "none": "nothing",
}


@dataclass(frozen=True, slots=True)
class AlertGpu:
    """One GPU of the job and its use over the finding's windows (None: not measured)."""

    node: str
    uuid: str
    index: int
    util_max_pct: float | None = None
    util_mean_pct: float | None = None
    mem_used_max_bytes: int | None = None
    mem_total_bytes: int | None = None
    idle_s: float = 0.0  # reported time counted as idle


@dataclass(frozen=True, slots=True)
class Alert:
    alert_id: str
    ts: float
    job_id: str
    user: str
    account: str
    partition: str
    nodes: tuple[str, ...]
    kind: str
    outcome: str  # warned | done
    action: str
    detail: str
    since_ts: float | None = None
    warning: int = 0  # warning number (0: not a numbered warning)
    warnings: int = 0  # warnings the policy gives before acting
    dry_run: bool = False
    gpus: tuple[AlertGpu, ...] = ()
    next_action: str = "none"
    next_at_ts: float | None = None
    next_reason: str = ""
    exemption: str = DEFAULT_EXEMPTION

    @property
    def jobstats(self) -> str:
        return f"gpuwarden jobstats {self.job_id}"

    @property
    def topic_user(self) -> str:
        return self.user or "unknown"

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "version": VERSION,
            "alert_id": self.alert_id,
            "ts": self.ts,
            "job_id": self.job_id,
            "user": self.user,
            "account": self.account,
            "partition": self.partition,
            "nodes": list(self.nodes),
            "kind": self.kind,
            "outcome": self.outcome,
            "action": self.action,
            "warning": self.warning,
            "warnings": self.warnings,
            "dry_run": self.dry_run,
            "since_ts": self.since_ts,
            "detail": self.detail,
            "gpus": [
                {
                    "node": g.node,
                    "uuid": g.uuid,
                    "index": g.index,
                    "util_max_pct": g.util_max_pct,
                    "util_mean_pct": g.util_mean_pct,
                    "mem_used_max_bytes": g.mem_used_max_bytes,
                    "mem_total_bytes": g.mem_total_bytes,
                    "idle_s": g.idle_s,
                }
                for g in self.gpus
            ],
            "next": {
                "action": self.next_action,
                "at_ts": self.next_at_ts,
                "reason": self.next_reason,
            },
            "jobstats": self.jobstats,
            "exemption": self.exemption,
        }

    @classmethod
    def from_json(cls, doc: object) -> Alert:
        """Read a payload; ValueError naming the field when it is not a version-1 alert."""
        d = _obj(doc, "alert")
        if d.get("schema") != SCHEMA:
            raise ValueError(f"schema: expected {SCHEMA!r}, got {d.get('schema')!r}")
        if d.get("version") != VERSION:
            raise ValueError(f"version: {d.get('version')!r} is not supported (this reads 1)")
        nxt = _obj(d.get("next", {}), "next")
        gpus = d.get("gpus", [])
        if not isinstance(gpus, list):
            raise ValueError("gpus: expected a list")
        nodes = d.get("nodes", [])
        if not isinstance(nodes, list):
            raise ValueError("nodes: expected a list")
        return cls(
            alert_id=_str(d, "alert_id"),
            ts=_num(d, "ts"),
            job_id=_str(d, "job_id"),
            user=_str(d, "user"),
            account=_str(d, "account"),
            partition=_str(d, "partition"),
            nodes=tuple(_str({"nodes": n}, "nodes") for n in nodes),
            kind=_str(d, "kind"),
            outcome=_str(d, "outcome"),
            action=_str(d, "action"),
            detail=_str(d, "detail"),
            since_ts=_opt_num(d, "since_ts"),
            warning=int(_num(d, "warning", 0)),
            warnings=int(_num(d, "warnings", 0)),
            dry_run=bool(d.get("dry_run", False)),
            gpus=tuple(_gpu(_obj(g, f"gpus[{i}]"), i) for i, g in enumerate(gpus)),
            next_action=_str(nxt, "action", "none"),
            next_at_ts=_opt_num(nxt, "at_ts"),
            next_reason=_str(nxt, "reason", ""),
            exemption=_str(d, "exemption", DEFAULT_EXEMPTION),
        )


def check_user(user: str) -> str:
    """``user`` if alerts can be addressed to it; ValueError saying why not."""
    if not USER_RE.fullmatch(user):
        raise ValueError(f"{user!r} is not a user name alerts can go to")
    return user


def dedup_key(record: AuditRecord) -> str:
    """The same finding of a job, told the same way: job, kind, finding start, outcome."""
    finding = record.evidence.get("finding", {})
    since = finding.get("since_ts") if isinstance(finding, Mapping) else None
    return f"{record.job_id}|{record.kind}|{since}|{record.outcome}"


def alert_id(record: AuditRecord) -> str:
    """Stable id of one alert (a record), the same for each delivery attempt."""
    text = f"{dedup_key(record)}|{record.action}|{record.ts!r}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def alert_from_record(record: AuditRecord, exemption: str = DEFAULT_EXEMPTION) -> Alert:
    """The alert telling ``record``'s job owner about it."""
    ev = record.evidence
    finding = ev.get("finding", {}) if isinstance(ev.get("finding"), Mapping) else {}
    policy = ev.get("policy", {}) if isinstance(ev.get("policy"), Mapping) else {}
    nxt = ev.get("next", {}) if isinstance(ev.get("next"), Mapping) else {}
    gpus: list[AlertGpu] = []
    for w in ev.get("windows", ()) if isinstance(ev.get("windows"), list) else ():
        if not isinstance(w, Mapping):
            continue
        gpus.append(
            AlertGpu(
                node=str(w.get("node", "")),
                uuid=str(w.get("uuid", "")),
                index=int(w.get("index", 0)),
                util_max_pct=_maybe_float(w.get("util_max_pct")),
                util_mean_pct=_maybe_float(w.get("util_mean_pct")),
                mem_used_max_bytes=_maybe_int(w.get("mem_used_max_bytes")),
                mem_total_bytes=_maybe_int(w.get("mem_total_bytes")),
                idle_s=float(w.get("covered_s") or 0.0),
            )
        )
    return Alert(
        alert_id=alert_id(record),
        ts=record.ts,
        job_id=record.job_id,
        user=record.user,
        account=record.account,
        partition=record.partition,
        nodes=record.nodes,
        kind=record.kind,
        outcome=record.outcome,
        action=record.action,
        detail=record.detail,
        since_ts=_maybe_float(finding.get("since_ts")),
        warning=int(ev.get("attempt", 0) or 0) if record.action == "warn" else 0,
        warnings=int(policy.get("warnings", 0) or 0),
        dry_run=record.dry_run,
        gpus=tuple(gpus),
        next_action=str(nxt.get("action", "none")),
        next_at_ts=_maybe_float(nxt.get("at_ts")),
        next_reason=str(nxt.get("reason", "")),
        exemption=exemption,
    )


# -- wording shared by gpuwarden alerts and the e-mail ----------------------------------


def clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(ts))


def span(seconds: float) -> str:
    m = round(seconds / 60)
    return f"{m // 60} h {m % 60:02d} min" if m >= 60 else f"{m} min"


def headline(a: Alert) -> str:
    """What happened, in one phrase."""
    what = {
        "idle": "its GPUs have been idle",
        "partly_idle": "some of its GPUs have been idle",
        "underused": "its GPUs are barely used",
    }.get(a.kind, a.kind)
    if a.outcome == "done":
        return f"job {a.job_id}: {done_text(a)} ({what})"
    if a.warning and a.warnings:
        return f"job {a.job_id}: {what} (warning {a.warning} of {a.warnings})"
    return f"job {a.job_id}: {what}"


def done_text(a: Alert) -> str:
    """The action carried out, e.g. ``your job was requeued``."""
    return _ACTION_WORDS.get(a.action, a.action).replace(" will be ", " was ")


def next_text(a: Alert) -> str:
    """What happens next, and when."""
    if a.outcome == "done":
        return "Nothing more: the action above has been taken."
    if a.next_action == "none":
        return "Nothing will be done to your job: this site only reports idle GPUs for now."
    when = f"at {clock(a.next_at_ts)}" if a.next_at_ts is not None else "soon"
    words = _ACTION_WORDS.get(a.next_action, a.next_action)
    return f"If the GPUs are still idle {when}, {words}. Using them again stops this."


def gpu_use(g: AlertGpu) -> str:
    """One GPU's recent use, e.g. ``gpu01 GPU 0: max 0% mean 0%, 1.0 of 80.0 GiB, idle 32 min``."""
    parts = [f"max {pct_text(g.util_max_pct)}", f"mean {pct_text(g.util_mean_pct)}"]
    mem = f"{gib_text(g.mem_used_max_bytes)} of {gib_text(g.mem_total_bytes)} GiB memory"
    return f"{g.node} GPU {g.index}: {' '.join(parts)}, {mem}, idle {span(g.idle_s)}"


def summary_line(a: Alert) -> str:
    """The line ``gpuwarden alerts`` prints."""
    head = f"{clock(a.ts)}  {headline(a)}"
    lines = [head, *(f"    {gpu_use(g)}" for g in a.gpus), f"    {next_text(a)}"]
    return "\n".join([*lines, f"    details: {a.jobstats}"])


def pct_text(v: float | None) -> str:
    return "?" if v is None else f"{v:.0f}%"


def gib_text(v: int | None) -> str:
    return "?" if v is None else f"{v / 2**30:.1f}"


def _maybe_float(v: object) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def _maybe_int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _obj(v: object, where: str) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise ValueError(f"{where}: expected an object")
    return v


def _str(d: Mapping[str, Any], key: str, default: str | None = None) -> str:
    v = d.get(key, default)
    if not isinstance(v, str):
        raise ValueError(f"{key}: expected a string, got {v!r}")
    return v


def _num(d: Mapping[str, Any], key: str, default: float | None = None) -> float:
    v = _maybe_float(d.get(key, default))
    if v is None:
        raise ValueError(f"{key}: expected a number, got {d.get(key)!r}")
    return v


def _opt_num(d: Mapping[str, Any], key: str) -> float | None:
    return None if d.get(key) is None else _num(d, key)


def _gpu(d: Mapping[str, Any], i: int) -> AlertGpu:
    try:
        return AlertGpu(
            node=_str(d, "node"),
            uuid=_str(d, "uuid"),
            index=int(_num(d, "index")),
            util_max_pct=_opt_num(d, "util_max_pct"),
            util_mean_pct=_opt_num(d, "util_mean_pct"),
            mem_used_max_bytes=_maybe_int(d.get("mem_used_max_bytes")),
            mem_total_bytes=_maybe_int(d.get("mem_total_bytes")),
            idle_s=_num(d, "idle_s", 0.0),
        )
    except ValueError as exc:
        raise ValueError(f"gpus[{i}].{exc}") from None
