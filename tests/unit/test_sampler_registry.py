"""Samplers come from one name -> factory registry: ``[agent] sampler = NAME``."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuwarden.agent.config import AgentConfig, load_agent_config
from gpuwarden.agent.main import build_sampler_and_attributor
from gpuwarden.agent.sampler import SAMPLERS, SamplerSetup
from gpuwarden.common.config import ConfigError
from gpuwarden.common.types import GpuSample
from gpuwarden.sim import SimAttributor, SimSampler


class _ConstantSampler:
    def open(self) -> None:
        pass

    def sample(self, now: float) -> list[GpuSample]:
        return [GpuSample(uuid="GPU-const", index=0, util_gpu_pct=42.0)]

    def close(self) -> None:
        pass


def test_unknown_sampler_name_lists_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nsampler = "dcgmx"\ninsecure = true\n')
    with pytest.raises(ConfigError) as err:
        load_agent_config(path, environ={})
    assert str(err.value) == (
        "[agent] sampler: 'dcgmx' is not a known sampler (known: dcgm, nvml, sim)"
    )


def test_sim_sampler_brings_its_own_attributor() -> None:
    cfg = AgentConfig(node="gpu03", sampler="sim", insecure=True, sim_gpus=2)
    sampler, attributor = build_sampler_and_attributor(cfg)
    assert isinstance(sampler, SimSampler)
    assert isinstance(attributor, SimAttributor)
    sampler.open()
    assert len(sampler.sample(1_700_000_000.0)) == 2


def test_a_registered_sampler_is_chosen_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(SAMPLERS, "constant", lambda cfg: SamplerSetup(_ConstantSampler()))
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nsampler = "constant"\ninsecure = true\nslurm = "off"\n')
    cfg = load_agent_config(path, environ={})
    sampler, _ = build_sampler_and_attributor(cfg)
    sampler.open()
    assert sampler.sample(0.0)[0].util_gpu_pct == 42.0
