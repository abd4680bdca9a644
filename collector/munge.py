"""Researchers' identity: a MUNGE credential, verified with ``unmunge``.

A researcher's client runs ``munge -n -s gpuwarden-query`` on a login node (munged there
shares the cluster's key) and sends the credential in the ``gpuwarden-munge`` metadata of
each call. The collector hands it to ``unmunge`` (bounded in time and in how many run at
once); munged checks the key, the TTL and that the credential was never decoded before
(a replay is refused with STATUS "Replayed credential"). The UID it vouches for becomes a
user name on the collector's host.
"""

from __future__ import annotations

import asyncio
import pwd
import re
from dataclasses import dataclass

from gpuwarden.common.process import CommandFailed, run_bounded
from gpuwarden.common.wire import MUNGE_PURPOSE

# The payload may be MUNGE_PURPOSE or empty; anything else (a credential minted for another
# service) is refused.
MAX_CREDENTIAL_CHARS = 4096
_CREDENTIAL = re.compile(r"MUNGE:[A-Za-z0-9+/=:._-]+")
_UID = re.compile(r"^\S*\s*\((\d+)\)$|^(\d+)$")


class MungeError(Exception):
    """The credential does not prove an identity; the message says why (for the caller)."""


@dataclass(frozen=True, slots=True)
class MungeIdentity:
    user: str
    uid: int


def parse_unmunge(output: str) -> tuple[dict[str, str], str]:
    """``unmunge``'s stdout: the ``KEY: value`` metadata lines, then (after a blank line)
    the payload."""
    head, _, payload = output.partition("\n\n")
    meta: dict[str, str] = {}
    for line in head.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            meta[key.strip()] = value.strip()
    return meta, payload


def identity_from_unmunge(output: str) -> MungeIdentity:
    """The user a successful ``unmunge`` run vouches for; MungeError otherwise."""
    meta, payload = parse_unmunge(output)
    status = meta.get("STATUS", "")
    if not status.startswith("Success"):
        raise MungeError(f"MUNGE credential refused: {status or 'no status from unmunge'}")
    if payload not in ("", MUNGE_PURPOSE):
        raise MungeError(
            f"MUNGE credential was made for another purpose (payload is not {MUNGE_PURPOSE!r})"
        )
    m = _UID.match(meta.get("UID", ""))
    if m is None:
        raise MungeError("unmunge reported no UID")
    uid = int(m.group(1) or m.group(2))
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        raise MungeError(f"UID {uid} has no user name on the collector's host") from None
    return MungeIdentity(user=user, uid=uid)


class MungeVerifier:
    """Verifies credentials with the ``unmunge`` command (``socket``: munged's socket, else
    its default). At most ``max_concurrent`` run at once; each gets ``timeout_s``."""

    def __init__(
        self,
        *,
        unmunge: str = "unmunge",
        socket: str = "",
        timeout_s: float = 5.0,
        max_concurrent: int = 8,
    ) -> None:
        self.argv = [unmunge] + ([f"--socket={socket}"] if socket else [])
        self.timeout_s = timeout_s
        self._slots = asyncio.Semaphore(max_concurrent)

    async def verify(self, credential: str) -> MungeIdentity:
        credential = credential.strip()
        if len(credential) > MAX_CREDENTIAL_CHARS or not _CREDENTIAL.fullmatch(credential):
            raise MungeError("gpuwarden-munge metadata is not a MUNGE credential")
        async with self._slots:
            try:
                rc, out, err = await run_bounded(
                    self.argv, stdin=credential.encode(), timeout_s=self.timeout_s
                )
            except CommandFailed as exc:
                raise MungeError(f"the collector cannot verify MUNGE credentials: {exc}") from None
        text = out.decode(errors="replace")
        if rc != 0 and "STATUS:" not in text:
            reason = err.decode(errors="replace").strip().splitlines()
            raise MungeError("MUNGE credential refused: " + (reason[-1] if reason else f"rc={rc}"))
        return identity_from_unmunge(text)
