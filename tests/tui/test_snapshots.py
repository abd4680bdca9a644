"""Snapshots of the dashboard's main screens on the fixed test cluster (Textual is pinned to
one version in pyproject.toml: the pictures depend on its rendering). After an intended
change of layout: ``pytest tests/tui/test_snapshots.py --snapshot-update`` and look at the
pictures before committing them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot

from gpuwarden.tui.app import TopApp
from gpuwarden.tui.screens.job import JobScreen
from tests.tui.conftest import ThreadedCollector, make_app

Compare = Callable[..., bool]


def loaded_then(*keys: str, job_series: bool = False) -> Callable[[Pilot[Any]], Any]:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, TopApp)
        deadline = time.monotonic() + 15
        while not (len(app.model.nodes) == 3 and len(app.model.feed) >= 3 and app.connected):
            assert time.monotonic() < deadline, "the dashboard did not load the test cluster"
            await pilot.pause(0.05)
        await pilot.press(*keys)
        if job_series:
            screen = app.screen
            assert isinstance(screen, JobScreen)
            while not screen.series:
                assert time.monotonic() < deadline, "no history for the job"
                await pilot.pause(0.05)
        await pilot.pause(0.2)

    return run_before


def test_main_screen_at_80x24(snap_compare: Compare, cluster: ThreadedCollector) -> None:
    assert snap_compare(make_app(cluster.port), terminal_size=(80, 24), run_before=loaded_then())


def test_main_screen_on_a_large_terminal_in_light_theme(
    snap_compare: Compare, cluster: ThreadedCollector
) -> None:
    assert snap_compare(
        make_app(cluster.port), terminal_size=(160, 48), run_before=loaded_then("ctrl+t")
    )


def test_job_screen(snap_compare: Compare, cluster: ThreadedCollector) -> None:
    assert snap_compare(
        make_app(cluster.port),
        terminal_size=(100, 32),
        run_before=loaded_then("s", "enter", job_series=True),
    )


def test_confirmation_dialog(snap_compare: Compare, cluster: ThreadedCollector) -> None:
    assert snap_compare(
        make_app(cluster.port), terminal_size=(80, 24), run_before=loaded_then("enter", "h")
    )


def test_help(snap_compare: Compare, cluster: ThreadedCollector) -> None:
    assert snap_compare(
        make_app(cluster.port), terminal_size=(100, 40), run_before=loaded_then("question_mark")
    )


def test_filtered_jobs_of_a_reader(snap_compare: Compare, cluster: ThreadedCollector) -> None:
    assert snap_compare(
        make_app(cluster.port, role="reader"),
        terminal_size=(100, 32),
        run_before=loaded_then("slash", *"state:idle", "enter"),
    )
