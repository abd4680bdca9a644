"""The optional ``dcgm`` sampler where DCGM is absent (there is no DCGM here, and no fake of it):
the agent stops at start with a message naming what is missing, before opening NVML."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from gpuwarden.agent.config import AgentConfig
from gpuwarden.agent.dcgm import DcgmSampler
from gpuwarden.agent.nvml import NvmlSampler
from gpuwarden.agent.sampler import SamplerError, make_sampler
from tests.fakenvml import FakeNvmlState, call_count, preload, reset_counts

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pydcgm") is not None, reason="DCGM's bindings are installed here"
)


def test_the_registry_builds_the_dcgm_sampler_with_its_host() -> None:
    cfg = AgentConfig(sampler="dcgm", insecure=True, dcgm_host="gpu-mgmt:5555")
    sampler = make_sampler(cfg).sampler
    assert isinstance(sampler, DcgmSampler)


def test_without_the_bindings_open_names_each_missing_module_and_leaves_nvml_closed(
    fake_nvml: FakeNvmlState, fake_nvml_lib: Path
) -> None:
    lib = preload(fake_nvml_lib)
    reset_counts(lib)
    sampler = DcgmSampler(NvmlSampler())
    with pytest.raises(SamplerError) as err:
        sampler.open()
    message = str(err.value)
    assert message.startswith("sampler dcgm: DCGM's Python bindings are not importable: pydcgm")
    for module in ("pydcgm", "dcgm_structs", "dcgm_fields"):
        assert module in message
    assert "PYTHONPATH" in message and "sampler = nvml" in message
    assert call_count(lib, "nvmlInitWithFlags") == 0  # NVML was never opened
    sampler.close()  # safe after a failed open


def test_the_agent_command_stops_at_start_saying_dcgm_is_missing(tmp_path: Path) -> None:
    args = ["agent", "--insecure", "--sampler", "dcgm", "--slurm", "off"]
    r = subprocess.run(
        [sys.executable, "-m", "gpuwarden", *args, "--spool-dir", str(tmp_path / "spool")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert "gpuwarden agent: sampler dcgm: DCGM's Python bindings are not importable" in r.stderr
