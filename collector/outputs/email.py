"""The ``email`` notifier: a friendly e-mail per alert, over SMTP (STARTTLS and login optional).

Each e-mail has a plain text part and an HTML alternative, made from three site-editable
``string.Template`` files (``email-subject.txt``, ``email.txt``, ``email.html``): the shipped
ones are in ``collector/outputs/templates/``; a file of the same name in the ``templates``
folder of the notifier's table replaces the shipped one. Placeholders: ``$user``,
``$job_id``, ``$account``, ``$partition``, ``$nodes``, ``$subject``, ``$intro``,
``$gpu_table``, ``$next``, ``$jobstats``, ``$exemption``, ``$site``, ``$alert_id``. A
template with an unknown placeholder stops the collector at start, naming it.

The address is the user's line in ``address_map`` (a file of ``user address`` lines, ``#``
comments) or else ``address`` with ``{user}`` replaced. Each e-mail's Message-ID is made
from the alert id, so a mail system can tell a repeated delivery.

```toml
[notifiers.email]
host = "smtp.example.org"
port = 587
starttls = true
username = "gpuwarden"
password_file = "/etc/gpuwarden/smtp-password"
from_addr = "HPC GPU watch <gpuwarden@example.org>"
address = "{user}@example.org"
site = "Example HPC"
```
"""

from __future__ import annotations

import html
import re
import smtplib
import ssl
import string
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from importlib import resources
from pathlib import Path
from typing import Any

from gpuwarden.collector.outputs.delivery import DurableNotifier, durable_notifier
from gpuwarden.collector.outputs.notify import NotifierContext
from gpuwarden.common.alert import (
    USER_RE,
    Alert,
    AlertGpu,
    clock,
    done_text,
    gib_text,
    headline,
    next_text,
    pct_text,
    span,
)
from gpuwarden.common.config import duration_field, ranged

TEMPLATE_NAMES = ("email-subject.txt", "email.txt", "email.html")
PLACEHOLDERS = frozenset(
    {
        "user",
        "job_id",
        "account",
        "partition",
        "nodes",
        "subject",
        "intro",
        "gpu_table",
        "next",
        "jobstats",
        "exemption",
        "site",
        "alert_id",
    }
)
_PARAGRAPHS = frozenset({"intro", "next", "exemption"})  # wrapped in the plain text
_ADDRESS_RE = re.compile(r"[^@\s<>]+@[^@\s<>]+")


@dataclass(frozen=True, slots=True)
class EmailOptions:
    host: str = "127.0.0.1"
    port: int = ranged(25, minimum=1, maximum=65535)
    starttls: bool = False
    tls_ca: str = ""  # CA for STARTTLS (default: the system's)
    username: str = ""
    password: str = ""
    password_file: str = ""
    from_addr: str = "gpuwarden@localhost"
    address: str = ""  # e.g. "{user}@example.org"
    address_map: str = ""  # file of "user address" lines; wins over address
    site: str = "your HPC site"
    templates: str = ""  # folder whose files replace the shipped templates
    timeout: float = duration_field(30.0, minimum=0.1)

    def __post_init__(self) -> None:
        if not self.address and not self.address_map:
            raise ValueError("address or address_map: give at least one")
        if self.address and "{user}" not in self.address:
            raise ValueError(f"address: {self.address!r} has no {{user}}")
        if self.password and self.password_file:
            raise ValueError("password and password_file: give one of them")


def read_address_map(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not _ADDRESS_RE.fullmatch(parts[1]):
            raise ValueError(f"address_map {path} line {n}: expected 'user address', got {raw!r}")
        out[parts[0]] = parts[1]
    return out


def load_templates(folder: Path | None) -> dict[str, string.Template]:
    """The three templates, each from ``folder`` when it has the file, else the shipped one;
    ValueError naming the file and the placeholder that is not known."""
    shipped = resources.files("gpuwarden.collector.outputs") / "templates"
    out: dict[str, string.Template] = {}
    for name in TEMPLATE_NAMES:
        mine = folder / name if folder is not None else None
        text = (
            mine.read_text()
            if mine is not None and mine.is_file()
            else (shipped / name).read_text()
        )
        tpl = string.Template(text)
        if not tpl.is_valid():
            raise ValueError(f"template {name}: a $ that is not a placeholder (write $$)")
        unknown = set(tpl.get_identifiers()) - PLACEHOLDERS
        if unknown:
            raise ValueError(
                f"template {name}: unknown placeholder ${sorted(unknown)[0]} "
                f"(known: {', '.join(sorted(PLACEHOLDERS))})"
            )
        out[name] = tpl
    return out


# -- wording -------------------------------------------------------------------------------


def subject(a: Alert) -> str:
    return headline(a).split(": ", 1)[1]


def intro(a: Alert) -> str:
    n = len(a.gpus)
    gpus = f"{n} GPU{'s' if n != 1 else ''}" if n else "its GPUs"
    where = f" on {', '.join(a.nodes)}" if a.nodes else ""
    idle_s = min((g.idle_s for g in a.gpus), default=0.0)
    since = f" since {clock(a.since_ts)}" if a.since_ts is not None else ""
    idle = f"have not been used for {span(idle_s)}{since}" if idle_s else "are idle"
    if a.kind == "underused":
        idle = "are barely used"
    elif a.kind == "partly_idle":
        idle = "are partly idle (some of them not used at all)"
    if a.outcome == "done":
        done = done_text(a)
        idle = idle.replace("have not been", "had not been").replace("are ", "were ")
        return f"{done[:1].upper()}{done[1:]} (job {a.job_id}): its {gpus}{where} {idle}."
    nth = f" This is warning {a.warning} of {a.warnings}." if a.warning and a.warnings else ""
    return f"Your job {a.job_id} holds {gpus}{where} that {idle}.{nth}"


_COLUMNS = ("node", "GPU", "max use", "mean use", "memory used", "idle")


def _row(g: AlertGpu) -> tuple[str, ...]:
    mem = f"{gib_text(g.mem_used_max_bytes)} of {gib_text(g.mem_total_bytes)} GiB"
    use = (pct_text(g.util_max_pct), pct_text(g.util_mean_pct))
    return (g.node, str(g.index), *use, mem, span(g.idle_s))


def text_table(a: Alert) -> str:
    rows = [_COLUMNS, *(_row(g) for g in a.gpus)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    lines = []
    for r in rows:
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("    " + "  ".join(cells).rstrip())
    return "\n".join(lines)


def html_table(a: Alert) -> str:
    cell = 'style="padding: 2px 10px; border-bottom: 1px solid #ddd;"'
    head = "".join(f"<th {cell}>{html.escape(c)}</th>" for c in _COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td {cell}>{html.escape(c)}</td>" for c in _row(g)) + "</tr>"
        for g in a.gpus
    )
    return f'<table style="border-collapse: collapse;"><tr>{head}</tr>{body}</table>'


class EmailTransport:
    def __init__(self, opts: EmailOptions, state_dir: Path) -> None:
        self.opts = opts

        def here(p: str) -> Path:
            path = Path(p)
            return path if path.is_absolute() else state_dir / path

        self.password: str | None = opts.password or None
        if opts.password_file:
            self.password = here(opts.password_file).read_text().strip()
        self.addresses = read_address_map(here(opts.address_map)) if opts.address_map else {}
        self.templates = load_templates(here(opts.templates) if opts.templates else None)

    def address(self, user: str) -> str:
        if user in self.addresses:
            return self.addresses[user]
        if not self.opts.address or not USER_RE.fullmatch(user):
            raise ValueError(f"no e-mail address for user {user!r}")
        return self.opts.address.replace("{user}", user)

    def message(self, a: Alert) -> EmailMessage:
        values = {
            "user": a.user,
            "job_id": a.job_id,
            "account": a.account or "?",
            "partition": a.partition or "?",
            "nodes": ", ".join(a.nodes) or "?",
            "subject": subject(a),
            "intro": intro(a),
            "next": next_text(a),
            "jobstats": a.jobstats,
            "exemption": a.exemption,
            "site": self.opts.site,
            "alert_id": a.alert_id,
        }
        t = self.templates
        msg = EmailMessage()
        msg["Subject"] = " ".join(t["email-subject.txt"].substitute(values).split())
        msg["From"] = self.opts.from_addr
        msg["To"] = self.address(a.user)
        msg["Date"] = formatdate(a.ts, localtime=True)
        msg["Message-ID"] = f"<{a.alert_id}@gpuwarden>"
        msg["X-Gpuwarden-Job"] = a.job_id
        wrapped = {k: textwrap.fill(v, 72) if k in _PARAGRAPHS else v for k, v in values.items()}
        msg.set_content(t["email.txt"].substitute(wrapped, gpu_table=text_table(a)))
        escaped = {k: html.escape(v) for k, v in values.items()}
        msg.add_alternative(
            t["email.html"].substitute(escaped, gpu_table=html_table(a)), subtype="html"
        )
        return msg

    def check(self, alert: Alert) -> None:
        self.address(alert.user)

    def deliver(self, alert: Alert) -> None:
        o = self.opts
        msg = self.message(alert)
        with smtplib.SMTP(o.host, o.port, timeout=o.timeout) as smtp:
            if o.starttls:
                smtp.starttls(context=ssl.create_default_context(cafile=o.tls_ca or None))
            if o.username:
                smtp.login(o.username, self.password or "")
            smtp.send_message(msg)

    def close(self) -> None:
        pass


def email_notifier(ctx: NotifierContext, options: Mapping[str, Any]) -> DurableNotifier:
    return durable_notifier(ctx.name, ctx.state_dir, options, EmailOptions, EmailTransport)
