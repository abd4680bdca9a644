"""``gpuwarden top`` driven with Textual's Pilot against a real collector (real gRPC, real
SQLite): what the sysadmin sees and what reaches the collector when they act."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Static

from gpuwarden.certs import SiteCA
from gpuwarden.tui.app import TopApp
from gpuwarden.tui.screens.dialogs import ConfirmScreen, ExemptScreen, HelpScreen
from gpuwarden.tui.screens.job import JobScreen
from gpuwarden.tui.screens.main import MainScreen
from gpuwarden.tui.widgets.grid import GpuGrid
from gpuwarden.tui.widgets.jobs import JobTable
from tests.tui.conftest import ThreadedCollector, make_app

SIZE = (100, 32)


async def until(
    pilot: Pilot[Any], predicate: Callable[[], object], timeout_s: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"not seen within {timeout_s} s: {predicate}")


def loaded(app: TopApp) -> bool:
    return len(app.model.nodes) == 3 and len(app.model.feed) >= 3 and app.connected


def table(app: TopApp) -> JobTable:
    return app.screen.query_one(JobTable)


def shown(app: TopApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


def rendered_rows(app: TopApp) -> list[str]:
    t = table(app)
    return [t.render_line(y).text for y in range(min(len(t.rows), t.size.height))]


async def test_header_grid_and_jobs_show_the_cluster_with_waste_first(
    cluster: ThreadedCollector,
) -> None:
    app = make_app(cluster.port)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: loaded(app))
        await pilot.pause()
        header = shown(app, "#figures")
        assert "GPUs 13" in header and "allocated 9" in header and "active 6" in header
        assert "idle 4" in header and "findings 2" in header
        assert "enforcement dry-run" in header and "connected" in header
        assert "idle today 2.0 GPU-h" in header  # carol's 2 GPUs idle for the last hour
        rows = rendered_rows(app)
        assert rows[0].startswith("7003") and "carol" in rows[0] and "empty" in rows[0]
        assert "2.0" in rows[0]  # waste, GPU-hours
        grid = app.screen.query_one(GpuGrid)
        lines = [grid.render_line(y).text for y in range(3)]
        assert lines[0].startswith("gpu01") and "alice" in lines[0] and "~bob" in lines[0]
        assert "!carol" in lines[1] and "X" in lines[1]
        assert "[" in lines[2] and "erin" in lines[2] and "~fran" in lines[2]
        assert "no findings" not in shown(app, "#feed")
        assert "dry run: would requeue" in shown(app, "#feed")


async def test_sorting_cycles_through_keys_and_reverses(cluster: ThreadedCollector) -> None:
    app = make_app(cluster.port)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: loaded(app))
        await pilot.press("s")  # user
        users = [r.user for r in table(app).rows]
        assert users == sorted(users)
        assert "USERv" in shown(app, "#jobs-header")
        await pilot.press("S")
        assert [r.user for r in table(app).rows] == sorted(users, reverse=True)
        await pilot.press("S", "s", "s", "s")  # account, partition, age
        await pilot.press("s")  # utilisation, lowest first
        utils = [r.util_pct for r in table(app).rows]
        assert utils == sorted(utils)  # type: ignore[type-var]
        assert rendered_rows(app)[0].split()[0] in {"7002", "7003", "7006"}


async def test_filter_by_fields_and_words_and_a_bad_filter_is_named(
    cluster: ThreadedCollector,
) -> None:
    app = make_app(cluster.port)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: loaded(app))
        await pilot.press("slash")
        assert app.screen.query_one("#filter", Input).has_focus
        await pilot.press(*"user:bob", "enter")
        assert {r.job_id for r in table(app).rows} == {"7002", "7007"}
        assert "filter: user:bob" in str(table(app).border_title)
        await pilot.press("slash", "ctrl+u", *"state:idle account:ast", "enter")
        assert [r.job_id for r in table(app).rows] == ["7006"]
        await pilot.press("slash", "ctrl+u", *"node:gpu02", "enter")
        assert {r.job_id for r in table(app).rows} == {"7003", "7004"}
        await pilot.press("slash", "ctrl+u", *"colour:red", "enter")
        await pilot.pause()
        assert any("colour" in n.message for n in app._notifications)
        assert {r.job_id for r in table(app).rows} == {"7003", "7004"}  # unchanged
        await pilot.press("escape", "escape")
        assert len(table(app).rows) == 7


async def test_opening_a_job_shows_sparklines_processes_advice_and_its_audit_trail(
    cluster: ThreadedCollector,
) -> None:
    app = make_app(cluster.port)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: loaded(app))
        await pilot.press("s")  # by user: alice first
        await pilot.press("enter")
        assert isinstance(app.screen, JobScreen) and app.screen.job_id == "7001"
        screen = app.screen
        await until(pilot, lambda: len(screen.series) == 2)
        await pilot.pause()
        assert "alice / physics / gpu" in shown(app, "#job-title")
        assert all(len(s.util_pct) == 30 for s in screen.series)
        assert "util mean" in str(screen.query("#sparks Label").first().render())
        assert "pid 4000 python" in shown(app, "#processes")
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)
        await pilot.press("down", "enter")  # bob's idle job: its advice and trail
        assert isinstance(app.screen, JobScreen) and app.screen.job_id == "7002"
        await pilot.pause()
        assert "memory held while idle" in shown(app, "#advice")
        assert "advice none [reported]" in shown(app, "#trail")


async def test_requeue_asks_first_says_it_is_a_dry_run_and_reaches_the_audit_log(
    cluster: ThreadedCollector,
) -> None:
    app = make_app(cluster.port)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: loaded(app))
        await pilot.press("enter")  # 7003, carol: most waste
        await pilot.press("r")
        assert isinstance(app.screen, ConfirmScreen)
        text = str(app.screen.query_one("#dialog-text", Static).render())
        assert "job 7003 of carol (2 GPUs on gpu02)" in text
        assert "dry-run" in text and "would requeue" in text
        await pilot.press("n")  # cancelled: nothing reaches the collector
        assert isinstance(app.screen, JobScreen)
        await pilot.press("r")
        await pilot.click("#yes")
        await until(pilot, lambda: any(r.kind == "admin" for r in cluster.audit("7003")))
        (mine,) = [r for r in cluster.audit("7003") if r.kind == "admin"]
        assert (mine.action, mine.outcome, mine.actor) == ("requeue", "dry_run", "local")
        await until(pilot, lambda: app.model.feed[0].kind == "admin")  # back on the stream
        await until(pilot, lambda: "(asked by local)" in shown(app, "#trail"))


async def test_exempt_needs_a_reason_and_the_collector_keeps_the_exemption(
    cluster: ThreadedCollector,
) -> None:
    app = make_app(cluster.port)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: loaded(app))
        await pilot.press("enter", "e")
        assert isinstance(app.screen, ExemptScreen)
        await pilot.press("enter")  # no reason yet
        assert isinstance(app.screen, ExemptScreen)
        assert "reason" in shown(app, "#dialog-error")
        await pilot.press(*"paper deadline", "enter")
        assert isinstance(app.screen, JobScreen)
        await until(pilot, lambda: any(r.action == "exempt" for r in cluster.audit("7003")))
        assert cluster.collector is not None
        words = cluster.collector.is_exempt("7003", time.time() + 3 * 3600)
        assert words is not None and "paper deadline" in words
        assert cluster.collector.is_exempt("7003", time.time() + 5 * 3600) is None  # 4h


async def test_a_reader_sees_no_action_keys_and_cannot_act(cluster: ThreadedCollector) -> None:
    app = make_app(cluster.port, role="reader")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: loaded(app))
        await pilot.press("enter")
        assert isinstance(app.screen, JobScreen)
        keys = {b.binding.key for b in app.screen.active_bindings.values()}
        assert not {"w", "d", "r", "h", "e"} & keys
        await pilot.press("r", "w", "e")
        assert isinstance(app.screen, JobScreen)
        assert "read-only" in shown(app, "#job-title")
    assert not [r for r in cluster.audit() if r.kind == "admin"]


async def test_help_theme_and_a_click_on_a_grid_cell(cluster: ThreadedCollector) -> None:
    app = make_app(cluster.port)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: loaded(app))
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        theme = app.theme
        await pilot.press("ctrl+t")
        assert app.theme != theme
        grid = app.screen.query_one(GpuGrid)
        x = grid.name_width + 2 * grid.cell_width + 1  # gpu02's third card: dave
        await pilot.click(GpuGrid, offset=(x, 1))
        assert isinstance(app.screen, JobScreen) and app.screen.job_id == "7004"


async def test_when_the_collector_goes_away_a_banner_then_reconnection(
    cluster: ThreadedCollector,
) -> None:
    app = make_app(cluster.port)
    port = cluster.port
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: loaded(app))
        cluster.stop()
        await until(pilot, lambda: not app.connected)
        await pilot.pause()
        banner = app.screen.query_one("#banner", Static)
        assert banner.display and "collector lost" in str(banner.render())
        assert "DISCONNECTED" in shown(app, "#figures")
        assert len(table(app).rows) == 7  # the last picture stays
        cluster.start(port=port, filled=False)
        await until(pilot, lambda: app.connected, timeout_s=30)
        await pilot.pause()
        assert not app.screen.query_one("#banner", Static).display


def action_keys(app: TopApp) -> set[str]:
    keys = {b.binding.key for b in app.screen.active_bindings.values()}
    return {"w", "r", "h", "e"} & keys


@pytest.mark.parametrize(("cert_role", "keys"), [("admin", True), ("reader", False)])
async def test_with_mtls_the_collector_says_who_may_act(
    tmp_path: Path, cert_role: str, keys: bool
) -> None:
    ca, _ = SiteCA.open_or_create(tmp_path / "pki", org="test", name="test CA", days=1)
    server = ca.issue("collector", "collector", hosts=["127.0.0.1"], days=1)
    client = ca.issue(cert_role, "pat", days=1)
    ca_pem = tmp_path / "pki" / "ca.pem"
    tc = ThreadedCollector(tmp_path / "c.db")
    tc.start(tls=(ca_pem.read_bytes(), server.cert.read_bytes(), server.key.read_bytes()))
    try:
        app = make_app(
            tc.port, role=None, tls_ca=str(ca_pem), tls_cert=str(client.cert),
            tls_key=str(client.key),
        )  # fmt: skip
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: loaded(app))
            await pilot.press("enter")
            assert isinstance(app.screen, JobScreen)
            await pilot.pause()
            assert bool(action_keys(app)) is keys
            assert app.role == cert_role
    finally:
        tc.close()


async def test_on_a_plaintext_collector_anyone_may_act(cluster: ThreadedCollector) -> None:
    app = make_app(cluster.port, role=None)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: loaded(app))
        await pilot.press("enter")
        await pilot.pause()
        assert action_keys(app) == {"w", "r", "h", "e"}
