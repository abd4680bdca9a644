"""Modal dialogs: confirm an action (saying exactly what will happen), exempt a job, help."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from gpuwarden.tui.actions import exempt_duration


class ConfirmScreen(ModalScreen[bool]):
    """Yes only on the button or ``y``; Escape, ``n`` or the other button say no."""

    BINDINGS = [
        Binding("y", "answer(True)", "yes"),
        Binding("n,escape", "answer(False)", "no"),
    ]

    def __init__(self, title: str, text: str, yes: str) -> None:
        super().__init__()
        self.title_text = title
        self.text = text
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="dialog-title")
            yield Static(self.text, id="dialog-text")
            with Horizontal(id="dialog-buttons"):
                yield Button(self.yes, variant="error", id="yes")
                yield Button("Cancel", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()  # Enter alone does nothing harmful

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class ExemptScreen(ModalScreen[tuple[float, str] | None]):
    """How long and why; the dialog says what the exemption does before it is granted."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, job_id: str, text: str) -> None:
        super().__init__()
        self.job_id = job_id
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"Exempt job {self.job_id} from detection", id="dialog-title")
            yield Static(self.text, id="dialog-text")
            yield Input(value="4h", placeholder="how long: 2h, 1d, 90m", id="duration")
            yield Input(placeholder="reason (goes to the audit log)", id="reason")
            yield Static("", id="dialog-error")
            with Horizontal(id="dialog-buttons"):
                yield Button("Exempt", variant="error", id="yes")
                yield Button("Cancel", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#reason", Input).focus()

    def _answer(self) -> tuple[float, str] | None:
        error = self.query_one("#dialog-error", Static)
        try:
            seconds = exempt_duration(self.query_one("#duration", Input).value)
        except ValueError as exc:
            error.update(f"[b red]{exc}[/]")
            return None
        reason = self.query_one("#reason", Input).value.strip()
        if not reason:
            error.update("[b red]give a reason: it goes to the audit log[/]")
            return None
        return seconds, reason

    def on_input_submitted(self) -> None:
        answer = self._answer()
        if answer is not None:
            self.dismiss(answer)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id != "yes":
            self.dismiss(None)
            return
        answer = self._answer()
        if answer is not None:
            self.dismiss(answer)

    def action_cancel(self) -> None:
        self.dismiss(None)


HELP = """\
[b]gpuwarden top[/]: the cluster as the collector sees it, live.

[b]Cluster[/]
  grid      one line per node, one cell per GPU: user and utilisation;
            green = working, [b]~[/] yellow = idle (processes, no work),
            [b]![/] red = allocated but nothing running, grey = free,
            [b]X[/] = GPU lost; MIG instances inside [brackets] of their card
  click     a cell or a job row opens the job
  /         filter jobs: user:NAME account:A partition:P node:N state:idle
            and words; Enter applies, Escape clears
  s / S     sort by waste, user, account, partition, age, utilisation / reverse
  up/down   move in the jobs table; Enter opens the job
  tab       next panel

[b]Job[/] (Enter on a job)
  sparklines of utilisation, memory and power per GPU, processes, findings,
  audit trail and advice; Escape goes back
  admin only: w warn now, d release Dask worker, r requeue,
  h requeue and hold, e exempt for a time with a reason;
  each asks first and says exactly what will happen

[b]Anywhere[/]
  ?         this help       ctrl+t light / dark       q quit

WASTE is idle GPU-hours: windows seen idle while allocated, or at least what the
job's newest idle finding says. Header: idle today, GPU-hours given back by done
actions today, jobs with open findings, enforcement on or dry-run.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "close", "close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(HELP)

    def action_close(self) -> None:
        self.dismiss(None)
