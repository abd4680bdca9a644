"""``gpuwarden top``: the sysadmin's dashboard, reading only the collector's query API.

One background worker holds the watch stream: it applies each event to the model
(:class:`~gpuwarden.tui.model.Dashboard`) and posts :class:`ClusterChanged`, a message that
replaces an earlier one still queued, so a burst of events costs one re-render; re-renders
are also spaced at least ``min_render_s`` apart. When the stream breaks the screen keeps the
last picture under a banner, and the worker reconnects with a growing pause (at most
``MAX_BACKOFF_S``).
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from textual import work
from textual.app import App
from textual.binding import Binding

from gpuwarden.query.client import QueryClient
from gpuwarden.query.commands import rpc_error_message
from gpuwarden.query.config import ClientConfig
from gpuwarden.tui.messages import ClusterChanged, ConnectionChanged
from gpuwarden.tui.model import Dashboard
from gpuwarden.tui.screens.dialogs import HelpScreen
from gpuwarden.tui.screens.job import JobScreen
from gpuwarden.tui.screens.main import MainScreen

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 10.0
AUDIT_BACKFILL_S = 86400.0
THEMES = {"dark": "textual-dark", "light": "textual-light"}


class TopApp(App[None]):
    CSS_PATH = "top.tcss"
    TITLE = "gpuwarden top"
    BINDINGS = [
        Binding("question_mark", "help", "help"),
        Binding("ctrl+t", "toggle_theme", "light/dark"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(
        self,
        cfg: ClientConfig,
        *,
        role: str | None = None,
        theme: str = "dark",
        min_render_s: float = 0.25,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        # Who may act is the collector's answer (Whoami), asked at each connection; a role
        # given here (tests) stays. Until the collector answers: no action keys.
        self.role = role or "reader"
        self.role_fixed = role is not None
        self.model = Dashboard()
        self.min_render_s = min_render_s
        self.connected = False
        self.banner = f"connecting to the collector at {cfg.collector} ..."
        self.client: QueryClient  # made in on_mount: a gRPC channel belongs to the running loop
        self.renders = 0
        self._last_render = 0.0
        self._render_timer_set = False
        self.theme = THEMES.get(theme, theme)

    def on_mount(self) -> None:
        self.client = QueryClient.from_config(self.cfg)
        self.push_screen(MainScreen())
        self.watch_collector()

    async def on_unmount(self) -> None:
        await self.client.close()

    # -- the one background worker --------------------------------------------------------
    @work(exclusive=True, group="watch")
    async def watch_collector(self) -> None:
        backoff = 0.5
        while True:
            try:
                since = time.time() - AUDIT_BACKFILL_S
                self.model.load_records(await self.client.audit(since=since, limit=5000))
                if not self.role_fixed:
                    self.role = await self._role()
                self.post_message(ConnectionChanged(True))  # it answers: the stream follows
                first = True
                async for event in self.client.watch(include_snapshot=True):
                    if first:  # the stream works: a later break starts a fresh backoff
                        first = False
                        backoff = 0.5
                    self.model.apply(event, time.time())
                    self.post_message(ClusterChanged())
                reason = "the collector ended the watch stream"
            except grpc.aio.AioRpcError as exc:
                reason = rpc_error_message(exc, self.cfg)
            self.post_message(ConnectionChanged(False, f"{reason}; retrying in {backoff:g} s"))
            await asyncio.sleep(backoff)
            backoff = min(MAX_BACKOFF_S, backoff * 2)

    async def _role(self) -> str:
        """``admin`` for an admin certificate or a plaintext collector (anyone may act
        there), else ``reader``; an older collector without Whoami: ``reader``."""
        try:
            _name, role, _via = await self.client.whoami()
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            return "reader"
        return "admin" if role in ("admin", "insecure") else "reader"

    # -- messages --------------------------------------------------------------------------
    def on_connection_changed(self, message: ConnectionChanged) -> None:
        self.connected = message.up
        self.banner = "" if message.up else f"collector lost: {message.detail}"
        self.render_now()

    def on_cluster_changed(self, _message: ClusterChanged) -> None:
        wait = self._last_render + self.min_render_s - time.monotonic()
        if wait <= 0:
            self.render_now()
        elif not self._render_timer_set:
            self._render_timer_set = True
            self.set_timer(wait, self.render_now)

    def render_now(self) -> None:
        """Draw the model on the screen on top (the cluster or a job)."""
        self._render_timer_set = False
        self._last_render = time.monotonic()
        self.renders += 1
        screen = self.screen
        if isinstance(screen, MainScreen | JobScreen):
            screen.show()

    # -- actions ---------------------------------------------------------------------------
    def open_job(self, job_id: str) -> None:
        self.push_screen(JobScreen(job_id))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_toggle_theme(self) -> None:
        self.theme = THEMES["light"] if self.theme == THEMES["dark"] else THEMES["dark"]


def run_top(cfg: ClientConfig, *, theme: str = "dark") -> int:
    TopApp(cfg, theme=theme).run()
    return 0
