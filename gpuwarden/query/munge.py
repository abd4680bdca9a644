"""A researcher's proof of identity for the query API: a fresh MUNGE credential per call.

``munge -n -s gpuwarden-query`` asks the local munged (on a login node) for a credential
that names this user; the collector verifies it with ``unmunge``. munged refuses to decode
a credential twice, so each call gets its own.
"""

from __future__ import annotations

import shutil

from gpuwarden.common.process import CommandFailed, run_bounded
from gpuwarden.common.wire import MUNGE_KEY, MUNGE_PURPOSE


class MungeUnavailable(Exception):
    """No credential could be made; the message says why."""


def munge_available(command: str = "munge") -> bool:
    return shutil.which(command) is not None


async def munge_credential(
    *, command: str = "munge", socket: str = "", timeout_s: float = 5.0
) -> str:
    argv = [command, f"--string={MUNGE_PURPOSE}"]
    if socket:
        argv.append(f"--socket={socket}")
    try:
        rc, out, err = await run_bounded(argv, timeout_s=timeout_s)
    except CommandFailed as exc:
        raise MungeUnavailable(str(exc)) from None
    if rc != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        raise MungeUnavailable(f"{command} failed: {lines[-1] if lines else f'exit status {rc}'}")
    return out.decode().strip()


async def munge_metadata(socket: str = "") -> tuple[tuple[str, str], ...]:
    """The call metadata that carries a fresh credential."""
    return ((MUNGE_KEY, await munge_credential(socket=socket)),)
