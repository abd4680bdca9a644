"""pytest fixtures for the fake NVML.

Use from a test module (or a conftest.py) with::

    pytest_plugins = ["tests.fakenvml.fixtures"]

(importing the fixture functions by name also works, but ruff then flags every test argument
that uses them as a redefinition, F811).

``fake_nvml_lib`` (session): builds the fake ``libnvidia-ml.so.1`` into a temporary directory and
preloads it into the test process; its value is the library's absolute path.
``fake_nvml`` (function): a fresh ``FakeNvmlState`` with 4 idle A100s
(``default_gpu_uuid(0..3)``), written to a temporary file, ``FAKE_NVML_STATE`` set for the test
(monkeypatch) and ``state.lib_dir`` set, so ``state.env()`` is the environment for a subprocess.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakenvml import STATE_ENV, FakeNvmlState, build_fake_nvml, preload


@pytest.fixture(scope="session")
def fake_nvml_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lib = build_fake_nvml(tmp_path_factory.mktemp("fakenvml"))
    preload(lib)
    return lib


@pytest.fixture
def fake_nvml(
    fake_nvml_lib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeNvmlState]:
    state = FakeNvmlState.with_gpus(
        tmp_path / "fake-nvml-state.txt", 4, lib_dir=fake_nvml_lib.parent
    )
    state.write()
    monkeypatch.setenv(STATE_ENV, str(state.path))
    yield state
