"""The header's figures, the connection banner and the findings and actions feed."""

from __future__ import annotations

import datetime as dt

from rich.text import Text
from textual.widgets import Static

from gpuwarden.common.types import AuditRecord
from gpuwarden.tui.model import Figures

OUTCOME_STYLES = {
    "done": "bold green",
    "failed": "bold red",
    "warned": "yellow",
    "dry_run": "cyan",
    "exempted": "magenta",
}


def figures_text(f: Figures, connected: bool) -> Text:
    t = Text()
    t.append(f"GPUs {f.gpus}", "bold")
    t.append(f"  allocated {f.allocated}  active {f.active}  ")
    t.append(f"idle {f.idle}", "bold #e0b000" if f.idle else "")
    t.append(f"  idle today {f.idle_gpu_h_today:.1f} GPU-h")
    t.append(f"  reclaimed {f.reclaimed_gpu_h:.1f} GPU-h")
    t.append(f"  findings {f.open_findings}", "bold" if f.open_findings else "")
    t.append("  enforcement ")
    t.append(f.enforcement, "bold red" if f.enforcement == "on" else "bold cyan")
    t.append(f"  nodes {f.nodes_connected}/{f.nodes}  ")
    t.append("connected" if connected else "DISCONNECTED", "green" if connected else "bold red")
    return t


def record_line(r: AuditRecord) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(dt.datetime.fromtimestamp(r.ts).strftime("%H:%M:%S "), "dim")
    t.append(f"{r.job_id} ", "bold")
    t.append(f"{r.kind} {r.action} ")
    t.append(f"[{r.outcome}]", OUTCOME_STYLES.get(r.outcome, ""))
    t.append(f" {r.detail}")
    if r.actor:
        t.append(f" (by {r.actor})", "dim")
    return t


class Header(Static):
    shown: tuple[Figures, bool] | None = None

    def show(self, f: Figures, connected: bool) -> None:
        if self.shown != (f, connected):  # an unchanged header costs no layout
            self.shown = (f, connected)
            self.update(figures_text(f, connected))


class Feed(Static):
    """The newest findings and actions, newest at the top."""

    shown: tuple[int, int, int] | None = None

    def show(self, records: list[AuditRecord]) -> None:
        height = max(1, self.size.height or 5)
        key = (id(records[0]) if records else 0, len(records), height)
        if self.shown == key:
            return
        self.shown = key
        if not records:
            self.update(Text("no findings or actions yet", "dim"))
            return
        text = Text("\n").join(record_line(r) for r in records[:height])
        text.no_wrap, text.overflow = True, "ellipsis"  # one record, one line
        self.update(text)
