"""Edge aggregation: many samples of a GPU -> one ``GpuWindow`` per report window.

The collector's load grows with nodes / report_interval, not with the sampling rate.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from gpuwarden.agent.attribution import GpuAttribution
from gpuwarden.common.extra import MAX_EXTRA_FIELDS, extra_problem
from gpuwarden.common.types import GpuSample, GpuWindow, ProcessInfo

log = logging.getLogger(__name__)
_warned: set[str] = set()  # bad extra fields are logged once per process, not every tick


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning("%s; leaving it out of the reports", message)


@dataclass(slots=True)
class _Acc:
    last: GpuSample
    samples: int = 0
    util_n: int = 0
    util_sum: float = 0.0
    util_max: float | None = None
    util_min: float | None = None
    util_zero: int = 0
    mem_util_n: int = 0
    mem_util_sum: float = 0.0
    mem_used_max: int | None = None
    mem_total: int | None = None
    power_n: int = 0
    power_sum: float = 0.0
    temperature_c: float | None = None
    processes: dict[int, ProcessInfo] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    extra_n: dict[str, int] = field(default_factory=dict)
    extra_sum: dict[str, float] = field(default_factory=dict)
    extra_max: dict[str, float] = field(default_factory=dict)

    def add(self, s: GpuSample) -> None:
        self.last = s
        for err in s.errors:
            if err not in self.errors:
                self.errors.append(err)
        if s.errors and s.util_gpu_pct is None and s.mem_used_bytes is None:
            return  # a failed reading: it tells nothing about use, so it is not a sample
        self.samples += 1
        if s.util_gpu_pct is not None:
            u = s.util_gpu_pct
            self.util_n += 1
            self.util_sum += u
            self.util_max = u if self.util_max is None else max(self.util_max, u)
            self.util_min = u if self.util_min is None else min(self.util_min, u)
            if u <= 0.0:
                self.util_zero += 1
        if s.util_mem_pct is not None:
            self.mem_util_n += 1
            self.mem_util_sum += s.util_mem_pct
        if s.mem_used_bytes is not None:
            self.mem_used_max = (
                s.mem_used_bytes
                if self.mem_used_max is None
                else max(self.mem_used_max, s.mem_used_bytes)
            )
        if s.mem_total_bytes is not None:
            self.mem_total = s.mem_total_bytes
        if s.power_w is not None:
            self.power_n += 1
            self.power_sum += s.power_w
        if s.temperature_c is not None:
            self.temperature_c = s.temperature_c
        for p in s.processes:
            old = self.processes.get(p.pid)
            if old is None or (p.used_mem_bytes or 0) > (old.used_mem_bytes or 0):
                self.processes[p.pid] = p
        if s.extra:
            self._add_extra(s.extra)

    def _add_extra(self, extra: Mapping[str, float]) -> None:
        for name, value in extra.items():
            problem = extra_problem(name, value)
            if problem is not None:
                _warn_once(f"bad:{name!r}", f"extra GPU field {problem}")
                continue
            n = self.extra_n.get(name)
            if n is None:
                if len(self.extra_n) >= MAX_EXTRA_FIELDS:
                    _warn_once(
                        f"many:{name}", f"extra GPU field {name!r} is past {MAX_EXTRA_FIELDS}"
                    )
                    continue
                self.extra_n[name] = 1
                self.extra_sum[name] = value
                self.extra_max[name] = value
            else:
                self.extra_n[name] = n + 1
                self.extra_sum[name] += value
                self.extra_max[name] = max(self.extra_max[name], value)

    def window(self, attribution: GpuAttribution | None) -> GpuWindow:
        s = self.last
        return GpuWindow(
            uuid=s.uuid,
            index=s.index,
            name=s.name,
            parent_uuid=s.parent_uuid,
            samples=self.samples,
            util_mean=self.util_sum / self.util_n if self.util_n else None,
            util_max=self.util_max,
            util_min=self.util_min,
            zero_frac=self.util_zero / self.util_n if self.util_n else None,
            mem_util_mean=self.mem_util_sum / self.mem_util_n if self.mem_util_n else None,
            mem_used_max_bytes=self.mem_used_max,
            mem_total_bytes=self.mem_total,
            power_mean_w=self.power_sum / self.power_n if self.power_n else None,
            temperature_c=self.temperature_c,
            processes=tuple(sorted(self.processes.values(), key=lambda p: p.pid)),
            errors=tuple(self.errors),
            job=attribution.job if attribution else None,
            allocated=attribution.allocated if attribution else False,
            extra_mean={k: self.extra_sum[k] / n for k, n in self.extra_n.items()},
            extra_max=dict(self.extra_max),
            minor_number=s.minor_number,
            gpu_instance_id=s.gpu_instance_id,
            mig_caps_minor=s.mig_caps_minor,
        )

    def merged_sample(self) -> GpuSample:
        """The newest reading with every process seen in the window (for attribution)."""
        s = self.last
        return GpuSample(
            uuid=s.uuid,
            index=s.index,
            name=s.name,
            parent_uuid=s.parent_uuid,
            util_gpu_pct=s.util_gpu_pct,
            util_mem_pct=s.util_mem_pct,
            mem_used_bytes=s.mem_used_bytes,
            mem_total_bytes=s.mem_total_bytes,
            power_w=s.power_w,
            temperature_c=s.temperature_c,
            processes=tuple(sorted(self.processes.values(), key=lambda p: p.pid)),
            errors=tuple(self.errors),
            extra=s.extra,
            minor_number=s.minor_number,
            gpu_instance_id=s.gpu_instance_id,
            mig_caps_minor=s.mig_caps_minor,
        )


class WindowAggregator:
    """Accumulates samples of every GPU for the current report window."""

    def __init__(self) -> None:
        self._acc: dict[str, _Acc] = {}

    def add(self, samples: list[GpuSample]) -> None:
        for s in samples:
            acc = self._acc.get(s.uuid)
            if acc is None:
                acc = self._acc[s.uuid] = _Acc(last=s)
            acc.add(s)

    def __len__(self) -> int:
        return len(self._acc)

    def merged_samples(self) -> list[GpuSample]:
        return [a.merged_sample() for a in self._acc.values()]

    def flush(self, attribution: Mapping[str, GpuAttribution]) -> tuple[GpuWindow, ...]:
        """Close the window: one GpuWindow per GPU seen, in NVML index order."""
        out = tuple(
            sorted(
                (acc.window(attribution.get(uuid)) for uuid, acc in self._acc.items()),
                key=lambda w: (w.index, w.parent_uuid, w.uuid),
            )
        )
        self._acc.clear()
        return out
