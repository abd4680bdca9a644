"""The cluster screen: header, banner, node x GPU grid, jobs table, findings and actions."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from gpuwarden.tui.model import SORT_KEYS, JobFilter, SortKey
from gpuwarden.tui.widgets.grid import GpuGrid
from gpuwarden.tui.widgets.jobs import JobTable, header_text
from gpuwarden.tui.widgets.summary import Feed, Header

if TYPE_CHECKING:
    from gpuwarden.tui.app import TopApp


class MainScreen(Screen[None]):
    BINDINGS = [
        Binding("slash", "search", "filter"),
        Binding("s", "sort", "sort"),
        Binding("S", "reverse", "reverse", show=False),
        Binding("escape", "clear_filter", "clear filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sort_key = SortKey.WASTE
        self.reverse = False
        self.filter = JobFilter()
        self.filter_text = ""
        self.banner_text = ""

    @property
    def top(self) -> TopApp:
        return cast("TopApp", self.app)

    def compose(self) -> ComposeResult:
        yield Header(id="figures")
        yield Static("", id="banner")
        yield GpuGrid(id="grid")
        yield Input(
            placeholder="user:NAME account:A partition:P node:N state:idle words", id="filter"
        )
        yield Static("", id="jobs-header")
        yield JobTable(id="jobs")
        yield Feed(id="feed")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.query_one(JobTable).focus()
        self.show()

    def on_screen_resume(self) -> None:
        self.show()

    def show(self) -> None:
        """Draw the model as it is now (the app calls this after changes, throttled)."""
        app = self.top
        model = app.model
        self.query_one(Header).show(model.figures(), app.connected)
        banner = self.query_one("#banner", Static)
        if banner.display != (not app.connected) or app.banner != self.banner_text:
            self.banner_text = app.banner
            banner.display = not app.connected
            banner.update(app.banner)
        self.query_one(GpuGrid).show([model.nodes[n] for n in sorted(model.nodes)])
        rows = model.rows(self.filter, self.sort_key, self.reverse)
        title = header_text(self.sort_key, self.reverse)
        self.query_one("#jobs-header", Static).update(title)
        jobs = self.query_one(JobTable)
        jobs.border_title = f"jobs {len(rows)}" + (
            f" (filter: {self.filter_text})" if self.filter else ""
        )
        jobs.show(rows)
        self.query_one(Feed).show(model.feed)

    # -- keys ------------------------------------------------------------------------------
    def action_search(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.value = self.filter_text
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "filter":
            return
        try:
            self.filter = JobFilter.parse(event.value)
        except ValueError as exc:
            self.notify(str(exc), title="filter", severity="error")
            return
        self.filter_text = event.value.strip()
        event.input.display = bool(self.filter)
        self.query_one(JobTable).focus()
        self.show()

    def action_clear_filter(self) -> None:
        self.filter = JobFilter()
        self.filter_text = ""
        box = self.query_one("#filter", Input)
        box.value = ""
        box.display = False
        self.query_one(JobTable).focus()
        self.show()

    def action_sort(self) -> None:
        self.sort_key = SORT_KEYS[(SORT_KEYS.index(self.sort_key) + 1) % len(SORT_KEYS)]
        self.show()

    def action_reverse(self) -> None:
        self.reverse = not self.reverse
        self.show()

    def on_job_table_opened(self, event: JobTable.Opened) -> None:
        self.top.open_job(event.job_id)

    def on_gpu_grid_job_clicked(self, event: GpuGrid.JobClicked) -> None:
        self.top.open_job(event.job_id)
