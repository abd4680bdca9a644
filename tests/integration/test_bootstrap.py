"""First contact: what ``scripts/demo.sh`` installs, and what it prints while doing so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, copy_of_the_repository

TEST_TOOLS = ("pytest", "mypy", "ruff", "hypothesis", "distributed", "dask-jobqueue")


def bootstrap(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["scripts/bootstrap.sh", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHON": sys._base_executable},
    )


def test_the_demo_installs_the_runtime_only_and_quietly(tmp_path: Path) -> None:
    repo = copy_of_the_repository(tmp_path / "gpuwarden")
    r = bootstrap(repo, "--runtime")
    assert r.returncode == 0, r.stdout + r.stderr
    # One line says what is happening; no setuptools deprecation wall, no pip chatter.
    assert (r.stdout + r.stderr).splitlines() == [
        "bootstrap: installing gpuwarden into .venv (runtime and dashboard only)"
    ]
    py = repo / ".venv" / "bin" / "python"
    listed = subprocess.run(
        [str(py), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    installed = {line.split("==")[0] for line in listed.splitlines()}
    assert "gpuwarden" in installed and "grpcio" in installed
    assert "textual" in installed  # the demo opens the dashboard
    assert not installed & set(TEST_TOOLS), installed & set(TEST_TOOLS)
    assert (repo / ".venv" / ".gpuwarden-installed").read_text() == "runtime\n"
    license_ = subprocess.run(
        [
            str(py),
            "-I",
            "-c",
            "import importlib.metadata as m; print(m.metadata('gpuwarden').json)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "'license_expression': 'Apache-2.0'" in license_
    # Run again: nothing to do, nothing printed.
    again = bootstrap(repo, "--runtime")
    assert again.returncode == 0 and again.stdout + again.stderr == ""
    version = subprocess.run(
        [str(repo / ".venv" / "bin" / "gpuwarden"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.startswith("gpuwarden ")


def test_bootstrap_refuses_an_unknown_option(tmp_path: Path) -> None:
    r = bootstrap(REPO, "--frobnicate")
    assert r.returncode == 2 and "usage:" in r.stderr
