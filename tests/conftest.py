"""Shared fixtures: the fake NVML library, the real local Slurm, in-process collectors."""

from __future__ import annotations

pytest_plugins = ["tests.fakenvml.fixtures", "tests.helpers", "tests.exportsvc"]
