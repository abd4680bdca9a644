"""Running a short command from asyncio code, bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence


class CommandFailed(Exception):
    """The command could not be started or gave no answer in time; the message says which."""


async def run_bounded(
    argv: Sequence[str], *, stdin: bytes | None = None, timeout_s: float
) -> tuple[int, bytes, bytes]:
    """(exit status, stdout, stderr) of ``argv``; a command still running after
    ``timeout_s`` is killed (and reaped) and :class:`CommandFailed` raised."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise CommandFailed(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise CommandFailed(f"{argv[0]} gave no answer within {timeout_s:g} s") from None
    return proc.returncode or 0, out, err
