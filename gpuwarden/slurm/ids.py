"""The one check of a Slurm job id and of a node name, used wherever either enters gpuwarden
(agent reports, Slurm output, command lines).

Both are full matches over ASCII only: ``'123\\n'``, ``' 123'`` and full-width digits
(``'\\uff11\\uff12'``, which ``\\d`` would accept) are refused, so a checked value can never
carry a second line, an option (``-x``) or a list (``1,2``) onto a command line or into a log.
"""

from __future__ import annotations

import re

__all__ = ["is_job_id", "is_node_name", "validate_job_id", "validate_node_name"]

# 123, an array task 123_4, or a heterogeneous component 123+1. Slurm job ids are 32-bit.
_JOB_ID_RE = re.compile(r"[0-9]{1,10}(?:_[0-9]{1,10}|\+[0-9]{1,5})?", re.ASCII)
# A host name as Slurm prints it in NodeList / SLURMD_NODENAME: letters, digits, '.', '_', '-',
# not starting with a punctuation mark (so never an option), at most 64 characters.
_NODE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)


def is_job_id(value: object) -> bool:
    """True when ``value`` is a Slurm job id: ``123``, ``123_4`` or ``123+1``."""
    return isinstance(value, str) and _JOB_ID_RE.fullmatch(value) is not None


def is_node_name(value: object) -> bool:
    """True when ``value`` is a node name gpuwarden accepts."""
    return isinstance(value, str) and _NODE_NAME_RE.fullmatch(value) is not None


def validate_job_id(job_id: str) -> str:
    """Return ``job_id`` if it is a Slurm job id: ``123``, an array task ``123_4`` or a
    heterogeneous component ``123+1``. Anything else raises ``ValueError`` naming the input."""
    if not is_job_id(job_id):
        raise ValueError(
            f"invalid Slurm job id {job_id!r}: expected ASCII digits, optionally _TASK (array) "
            "or +OFFSET (heterogeneous job), e.g. '123', '123_4', '123+1'"
        )
    return job_id


def validate_node_name(node: str) -> str:
    """Return ``node`` if it is a node name (ASCII letters, digits, '.', '_', '-'; starting
    with a letter or digit; at most 64 characters). Anything else raises ``ValueError``."""
    if not is_node_name(node):
        raise ValueError(
            f"invalid node name {node!r}: expected 1-64 ASCII letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return node
