"""One job: per-GPU sparklines (utilisation, memory, power) over the last hours, its
processes, its findings and audit trail, the advice, and (admin only) the action keys."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

import grpc
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Label, Sparkline, Static

from gpuwarden.common.types import ActionRequest
from gpuwarden.query.format import age
from gpuwarden.tui.actions import TITLES, describe
from gpuwarden.tui.history import GpuSeries, job_series
from gpuwarden.tui.screens.dialogs import ConfirmScreen, ExemptScreen
from gpuwarden.tui.widgets.summary import record_line

if TYPE_CHECKING:
    from gpuwarden.tui.app import TopApp

HISTORY_S = 3 * 3600.0
HISTORY_LIMIT = 50_000
ADVICE_KINDS = ("advice", "underused", "partly_idle", "idle")


class JobScreen(Screen[None]):
    BINDINGS = [
        Binding("escape,backspace", "back", "back"),
        Binding("w", "act('warn')", "warn"),
        Binding("d", "act('release_dask_worker')", "release dask"),
        Binding("r", "act('requeue')", "requeue"),
        Binding("h", "act('requeuehold')", "requeue+hold"),
        Binding("e", "act('exempt')", "exempt"),
    ]

    def __init__(self, job_id: str) -> None:
        super().__init__()
        self.job_id = job_id
        self.series: list[GpuSeries] = []
        self.history_error = ""

    @property
    def top(self) -> TopApp:
        return cast("TopApp", self.app)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Action keys exist for admins only: a reader neither sees nor can press them."""
        if action != "act":
            return True
        if self.top.role != "admin":
            return False
        if parameters and parameters[0] == "release_dask_worker":
            row = self.top.model.job(self.job_id)
            return row is not None and row.dask  # only a Dask worker can be released
        return True

    def compose(self) -> ComposeResult:
        yield Static("", id="job-title")
        with VerticalScroll(id="job-body"):
            yield Label("GPUs (last 3 h: utilisation %, memory %, power W)", classes="section")
            yield VerticalScroll(id="sparks")
            yield Label("processes", classes="section")
            yield Static("", id="processes")
            yield Label("advice", classes="section")
            yield Static("", id="advice")
            yield Label("findings and audit trail (newest first)", classes="section")
            yield Static("", id="trail")
        yield Footer()

    def on_mount(self) -> None:
        self.show()
        self.load_history()

    @work(exclusive=True, group="history")
    async def load_history(self) -> None:
        try:
            page = await self.top.client.history(
                job_id=self.job_id, since=time.time() - HISTORY_S, limit=HISTORY_LIMIT
            )
        except grpc.aio.AioRpcError as exc:
            self.history_error = f"history unavailable: {exc.code().name}: {exc.details()}"
            self.show()
            return
        self.series = job_series(page.windows)
        await self._draw_sparks()
        self.show()

    async def _draw_sparks(self) -> None:
        box = self.query_one("#sparks", VerticalScroll)
        await box.remove_children()
        rows: list[Widget] = []
        for s in self.series:
            rows.append(Label(f"{s.node} GPU {s.index} {s.uuid[:16]}: {s.summary}"))
            for name, data in (("util", s.util_pct), ("mem ", s.mem_pct), ("pow ", s.power_w)):
                rows.append(
                    Horizontal(
                        Label(name, classes="spark-label"),
                        Sparkline(data or [0.0], summary_function=max, classes=f"spark {name}"),
                        classes="spark-row",
                    )
                )
        await box.mount_all(rows)

    def show(self) -> None:
        """Facts from the live model (the app calls this after changes too)."""
        model = self.top.model
        row = model.job(self.job_id)
        title = Text()
        title.append(f"job {self.job_id}", "bold")
        if row is None:
            title.append("  no longer on the cluster", "bold red")
        else:
            title.append(
                f"  {row.user} / {row.account} / {row.partition}  {row.gpus} GPUs on "
                f"{', '.join(row.nodes)}  {row.state}  age {age(row.age_s)}  "
                f"waste {row.waste_gpu_h:.2f} GPU-h" + ("  dask worker" if row.dask else "")
            )
        if self.top.role != "admin":
            title.append("  (read-only)", "dim")
        self.query_one("#job-title", Static).update(title)
        procs = []
        for node, g in model.job_gpus(self.job_id):
            state = model.raw[node]
            for gs in state.gpus:
                if gs.latest.uuid != g.uuid:
                    continue
                for p in gs.latest.processes:
                    mem = "" if p.used_mem_bytes is None else f" {p.used_mem_bytes / 2**20:.0f} MiB"
                    procs.append(f"{node} GPU {g.index}: pid {p.pid} {p.name or '?'}{mem}")
        self.query_one("#processes", Static).update(
            "\n".join(procs) or "no process on its GPUs (allocated but empty)"
        )
        records = model.records_by_job.get(self.job_id, [])
        advice = [
            f"{r.kind}: {r.detail}"
            for r in records
            if r.kind in ADVICE_KINDS and r.outcome in ("reported", "warned", "dry_run")
        ]
        advice = list(dict.fromkeys(advice))[:6]
        if self.history_error:
            advice.append(self.history_error)
        self.query_one("#advice", Static).update(
            "\n".join(advice) or "no advice: the collector found nothing to say about this job"
        )
        self.refresh_bindings()
        trail = Text("\n").join(record_line(r) for r in records[:30])
        self.query_one("#trail", Static).update(trail or Text("no records", "dim"))

    # -- keys ------------------------------------------------------------------------------
    def action_back(self) -> None:
        self.app.pop_screen()

    def action_act(self, action: str) -> None:
        row = self.top.model.job(self.job_id)
        if row is None:
            self.notify(f"job {self.job_id} is no longer on the cluster", severity="warning")
            return
        enforcement = self.top.model.enforcement
        if action == "release_dask_worker" and not row.dask:
            self.notify(f"job {self.job_id} runs no Dask worker", severity="warning")
            return
        if action == "exempt":

            def exempted(answer: tuple[float, str] | None) -> None:
                if answer is not None:
                    self.send(ActionRequest(self.job_id, "exempt", answer[0], answer[1]))

            text = describe("exempt", row, enforcement)
            self.app.push_screen(ExemptScreen(self.job_id, text), exempted)
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.send(ActionRequest(self.job_id, action))

        self.app.push_screen(
            ConfirmScreen(
                f"{TITLES[action]}: job {self.job_id}",
                describe(action, row, enforcement),
                TITLES[action],
            ),
            confirmed,
        )

    @work(group="action")
    async def send(self, request: ActionRequest) -> None:
        try:
            reply = await self.top.client.request_action(request)
        except grpc.aio.AioRpcError as exc:
            self.notify(f"{exc.code().name}: {exc.details()}", title="refused", severity="error")
            return
        self.notify(
            reply.detail,
            title=f"{request.action}: {reply.outcome}",
            severity="information" if reply.ok else "error",
        )
