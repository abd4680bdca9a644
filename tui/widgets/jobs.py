"""The jobs table: one line per job, a cursor, Enter (or a second click) opens the job.

Only the lines on screen are drawn; the rows come sorted and filtered from the model.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.events import Click
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from gpuwarden.query.format import age
from gpuwarden.tui.model import JobRow, SortKey

# (title, width, sort key it shows)
COLUMNS: tuple[tuple[str, int, SortKey | None], ...] = (
    ("JOB", 9, None),
    ("USER", 10, SortKey.USER),
    ("ACCOUNT", 8, SortKey.ACCOUNT),
    ("PART", 7, SortKey.PARTITION),
    ("GPUS", 4, None),
    ("STATE", 6, None),
    ("UTIL", 4, SortKey.UTIL),
    ("WASTE", 6, SortKey.WASTE),
    ("AGE", 4, SortKey.AGE),
)
STATE_STYLES = {
    "idle": Style(color="#e0b000", bold=True),
    "empty": Style(color="#e74c3c", bold=True),
    "busy": Style(color="#3cb44b"),
    "lost": Style(color="#8e44ad", bold=True),
}


def _fit(text: str, width: int, right: bool = False) -> str:
    text = text if len(text) <= width else text[: width - 1] + "~"
    return text.rjust(width) if right else text.ljust(width)


def row_cells(r: JobRow) -> list[str]:
    util = "-" if r.util_pct is None else f"{r.util_pct:.0f}%"
    state = r.state + ("*" if r.exempt else "")
    return [
        _fit(r.job_id, 9),
        _fit(r.user, 10),
        _fit(r.account, 8),
        _fit(r.partition, 7),
        _fit(str(r.gpus) + ("d" if r.dask else ""), 4, right=True),
        _fit(state, 6),
        _fit(util, 4, right=True),
        _fit(f"{r.waste_gpu_h:.2f}" if r.waste_gpu_h < 100 else f"{r.waste_gpu_h:.0f}", 6, True),
        _fit(age(r.age_s), 4, right=True),
    ]


def header_text(key: SortKey, reverse: bool) -> str:
    cells = []
    for title, width, shows in COLUMNS:
        mark = ("^" if reverse else "v") if shows is key else ""
        cells.append(_fit(title + mark, width, right=title in ("GPUS", "UTIL", "WASTE", "AGE")))
    return " ".join(cells) + " NODES"


class JobTable(ScrollView, can_focus=True):
    BINDINGS = [
        Binding("up,k", "move(-1)", "up", show=False),
        Binding("down,j", "move(1)", "down", show=False),
        Binding("pageup", "move(-10)", show=False),
        Binding("pagedown", "move(10)", show=False),
        Binding("home", "move(-1000000)", show=False),
        Binding("end", "move(1000000)", show=False),
        Binding("enter", "open", "open job"),
    ]

    cursor: reactive[int] = reactive(0)

    class Opened(Message):
        def __init__(self, job_id: str) -> None:
            super().__init__()
            self.job_id = job_id

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: list[JobRow] = []
        self.follow = False  # once the user has chosen a row, the cursor stays on its job

    def show(self, rows: list[JobRow]) -> None:
        """New rows; once the user has moved the cursor it stays on the same job while that
        job is listed (until then it stays on the top row)."""
        current = self.selected
        self.rows = rows
        if current is not None and self.follow:
            for i, r in enumerate(rows):
                if r.job_id == current:
                    self.cursor = i
                    break
        self.cursor = min(self.cursor, max(0, len(rows) - 1))
        self.virtual_size = Size(self.size.width, len(rows))
        self.refresh()

    @property
    def selected(self) -> str | None:
        return self.rows[self.cursor].job_id if 0 <= self.cursor < len(self.rows) else None

    def watch_cursor(self) -> None:
        self.scroll_to_region_visible()
        self.refresh()

    def scroll_to_region_visible(self) -> None:
        top = self.scroll_offset.y
        height = max(1, self.size.height)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False)

    def action_move(self, delta: int) -> None:
        if self.rows:
            self.follow = True
            self.cursor = max(0, min(len(self.rows) - 1, self.cursor + delta))

    def action_open(self) -> None:
        if self.selected is not None:
            self.post_message(self.Opened(self.selected))

    def on_click(self, event: Click) -> None:
        row = event.y + self.scroll_offset.y
        if 0 <= row < len(self.rows):
            if row == self.cursor or event.chain >= 2:  # the selected row, or a double click
                self.post_message(self.Opened(self.rows[row].job_id))
            self.follow = True
            self.cursor = row

    def render_line(self, y: int) -> Strip:
        row = y + self.scroll_offset.y
        width = self.size.width
        if row >= len(self.rows):
            return Strip.blank(width)
        r = self.rows[row]
        cells = row_cells(r)
        base = Style(reverse=True) if row == self.cursor else Style()
        segs: list[Segment] = []
        for i, text in enumerate(cells):
            style = base + STATE_STYLES[r.state] if i == 5 and r.state in STATE_STYLES else base
            segs += [Segment(text, style), Segment(" ", base)]
        segs.append(Segment(",".join(r.nodes), base))
        return Strip(segs).crop(0, width).extend_cell_length(width, base)
