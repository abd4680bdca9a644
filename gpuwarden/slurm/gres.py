"""GPU indices out of Slurm's per-node GRES detail, in every form seen in the field:

- ``gpu:2(IDX:0-1)``, typed ``gpu:a100:2(IDX:0-1)``, several types
  ``gpu:a100:1(IDX:0),gpu:v100:1(IDX:2)`` (scontrol -d ``GRES=``, squeue --json ``gres_detail``);
- without a count: ``gpu(IDX:0,2-3,5)`` (18.08's ``GRES_IDX=``, 19.05's ``GRES=``);
- ``(CNT:N)`` and ``IDX:N/A``: a count without indices, so no GPU can be named;
- shards ``shard:a100:2(2/4,0/4)`` and MPS ``mps:100(0/100,0/100)``: shares of a GPU that
  other jobs may hold too, never a whole GPU of this job.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from gpuwarden.slurm.hostlist import parse_index_list

__all__ = ["GresItem", "gres_order", "parse_gres", "parse_gres_indices"]


@dataclass(frozen=True, slots=True)
class GresItem:
    name: str  # gpu, shard, mps, ...
    type: str = ""  # a100, tesla, ... ("" when untyped)
    count: int | None = None  # None when Slurm printed none
    indices: tuple[int, ...] = ()  # device positions on the node (IDX), () when unknown


_ITEM_RE = re.compile(r"(?P<head>[^()]+)(?:\((?P<detail>[^()]*)\))?", re.ASCII)
_WORD_RE = re.compile(r"[A-Za-z0-9_.\-]+", re.ASCII)
_DETAIL_RE = re.compile(r"(?:^|,)(?P<key>IDX|CNT):(?P<value>[^:]*?)(?=,(?:IDX|CNT):|$)", re.ASCII)
_SHARE_RE = re.compile(r"[0-9]+/[0-9]+(?:,[0-9]+/[0-9]+)*", re.ASCII)


def _split_items(gres: str) -> list[str]:
    items: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(gres):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(gres[start:i])
            start = i + 1
    items.append(gres[start:])
    return [s.strip() for s in items if s.strip()]


def _parse_item(item: str, gres: str) -> GresItem:
    m = _ITEM_RE.fullmatch(item)
    head = m["head"].split(":") if m is not None else []
    if m is None or not 1 <= len(head) <= 3 or not all(_WORD_RE.fullmatch(w) for w in head):
        raise ValueError(f"unreadable GRES {gres!r}: bad element {item!r}")
    name, gtype, count = head[0], "", None
    if len(head) == 3:  # name:type:count
        if not head[2].isdigit():
            raise ValueError(f"unreadable GRES {gres!r}: bad count in {item!r}")
        gtype, count = head[1], int(head[2])
    elif len(head) == 2:  # name:count or name:type
        if head[1].isdigit():
            count = int(head[1])
        else:
            gtype = head[1]
    detail = m["detail"]
    indices: tuple[int, ...] = ()
    if detail is None or detail == "" or _SHARE_RE.fullmatch(detail):
        return GresItem(name, gtype, count)  # no detail, or per-device shares (shard / mps)
    parts = list(_DETAIL_RE.finditer(detail))
    if not parts or "".join(p.group(0) for p in parts) != detail:
        raise ValueError(f"unreadable GRES {gres!r}: bad detail ({detail})")
    for p in parts:
        value = p["value"]
        if p["key"] == "CNT":
            if not value.isascii() or not value.isdigit():
                raise ValueError(f"unreadable GRES {gres!r}: bad count CNT:{value}")
            count = int(value) if count is None else count
        elif value != "N/A":
            try:
                indices = tuple(sorted(set(indices) | set(parse_index_list(value))))
            except ValueError as e:
                raise ValueError(f"unreadable GRES {gres!r}: {e}") from e
    return GresItem(name, gtype, count, indices)


def parse_gres(gres: str) -> tuple[GresItem, ...]:
    """Every element of one node's GRES detail. Raises ValueError naming the text when an
    element cannot be read (the caller skips that record, not the whole answer)."""
    text = gres.strip()
    if text in ("", "(null)", "N/A"):
        return ()
    return tuple(_parse_item(item, text) for item in _split_items(text))


def parse_gres_indices(gres: str) -> tuple[int, ...]:
    """GPU indices of one node's GRES detail (``gpu`` elements only): ``gpu:2(IDX:0-1)`` ->
    ``(0, 1)``; ``gpu(IDX:0,2-3,5)`` -> ``(0, 2, 3, 5)``; ``IDX:N/A``, ``(CNT:N)``, shards and
    other GRES give nothing. Raises ValueError when the text cannot be read."""
    out: set[int] = set()
    for item in parse_gres(gres):
        if item.name == "gpu":
            out.update(item.indices)
    return tuple(sorted(out))


def gres_order(gpus: Iterable[tuple[int, int | None]]) -> dict[int, int] | None:
    """``{GRES index: NVML index}`` of a node's GPUs given as (NVML index, minor number).

    Slurm's GRES index (``IDX``) of a GPU is its position in the node's GRES device list: the
    ``File=/dev/nvidia[0-N]`` order of gres.conf, or AutoDetect's, which follows the device
    files, i.e. the minor numbers; NVML indexes GPUs in PCI bus order. A MIG-mode GPU counts
    once (its instances carry its index and minor number). ``None`` when the order cannot be
    known: a GPU without a minor number, two GPUs with one minor number, or one index with two.
    """
    minor_of: dict[int, int] = {}  # NVML index -> minor number
    for index, minor in gpus:
        if minor is None:
            return None
        if minor_of.setdefault(index, minor) != minor:
            return None
    if len(set(minor_of.values())) != len(minor_of):
        return None
    ranked = sorted(minor_of, key=minor_of.__getitem__)
    return dict(enumerate(ranked))
