"""The node x GPU grid: one line per node, one cell per card, coloured by utilisation and
labelled with the job's user (as gpudash does); MIG instances sit inside their card.

Only the lines on screen are drawn (a 1,000-node cluster costs what 20 lines cost).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual.events import Click
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from gpuwarden.query.views import GpuUse, GpuView, NodeView

MARKS = {GpuUse.IDLE: "~", GpuUse.EMPTY: "!", GpuUse.LOST: "X", GpuUse.UNKNOWN: "?"}
MIN_CELL, MAX_CELL, MIN_SLICE = 6, 14, 8


def cell_style(g: GpuView) -> Style:
    """Green shades for work, yellow for idle with processes, red for allocated-but-empty."""
    if g.use is GpuUse.BUSY:
        util = g.util_max_pct or 0.0
        shade = "#1f6f2f" if util < 40 else "#2e8b3e" if util < 75 else "#3cb44b"
        return Style(color="white", bgcolor=shade)
    return {
        GpuUse.IDLE: Style(color="black", bgcolor="#e0b000", bold=True),
        GpuUse.EMPTY: Style(color="white", bgcolor="#c0392b", bold=True),
        GpuUse.FREE: Style(color="#9a9a9a", bgcolor="#303030"),
        GpuUse.LOST: Style(color="white", bgcolor="#8e44ad", bold=True),
        GpuUse.UNKNOWN: Style(color="#cccccc", bgcolor="#555555"),
    }[g.use]


def cell_text(g: GpuView, width: int) -> str:
    """``!alice  0``: a mark for idle / empty / lost, the user, the utilisation."""
    util = "" if g.util_max_pct is None else f"{g.util_max_pct:.0f}"
    label = MARKS.get(g.use, "") + (g.user or ("free" if g.use is GpuUse.FREE else ""))
    room = max(0, width - 1 - len(util))
    if room == 0:
        return (MARKS.get(g.use, "") or util)[: width - 1].ljust(width - 1) + " "
    return f"{label[: room - 1]:<{room - 1}} {util}"[: width - 1].ljust(width - 1) + " "


@dataclass(frozen=True, slots=True)
class Card:
    gpu: GpuView
    slices: tuple[GpuView, ...] = ()  # MIG instances of this card


def cards(node: NodeView) -> list[Card]:
    """The node's cards in index order, each with its MIG instances (an instance whose card
    is not reported stands on its own)."""
    parents = {g.uuid for g in node.gpus if not g.parent_uuid}
    slices: dict[str, list[GpuView]] = {}
    out: list[GpuView] = []
    for g in node.gpus:
        if g.parent_uuid and g.parent_uuid in parents:
            slices.setdefault(g.parent_uuid, []).append(g)
        else:
            out.append(g)
    return [Card(g, tuple(slices.get(g.uuid, ()))) for g in out]


class GpuGrid(ScrollView, can_focus=True):
    """Click a cell to open its job."""

    class JobClicked(Message):
        def __init__(self, job_id: str) -> None:
            super().__init__()
            self.job_id = job_id

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.nodes: list[NodeView] = []
        self._cards: list[list[Card]] = []
        self._views: list[NodeView] = []
        self.name_width = 6
        self.cell_width = MAX_CELL

    def show(self, nodes: list[NodeView]) -> None:
        self.nodes = nodes
        cache = {id(v): c for v, c in zip(self._views, self._cards, strict=True)}
        self._views = list(nodes)  # the views the cards were cut from (kept alive for id())
        self._cards = [cache.get(id(n)) or cards(n) for n in nodes]
        self.name_width = max((len(n.node) for n in nodes), default=4) + 1
        most = max((len(c) for c in self._cards), default=1) or 1
        room = max(self.size.width - self.name_width, MIN_CELL)
        self.cell_width = max(MIN_CELL, min(MAX_CELL, room // most))
        widest = max((sum(self.card_width(c) for c in row) for row in self._cards), default=0)
        self.virtual_size = Size(self.name_width + widest, len(nodes))
        self.refresh()

    def on_resize(self) -> None:
        self.show(self.nodes)

    def slice_width(self, card: Card) -> int:
        return max(MIN_SLICE, (self.cell_width - 2) // max(1, len(card.slices)))

    def card_width(self, card: Card) -> int:
        """A card is one cell; a card cut into MIG instances is wide enough for each."""
        if not card.slices:
            return self.cell_width
        return 2 + len(card.slices) * self.slice_width(card)

    def _card_segments(self, card: Card) -> list[Segment]:
        if not card.slices:
            return [Segment(cell_text(card.gpu, self.cell_width), cell_style(card.gpu))]
        inner = self.slice_width(card)
        segs = [Segment("[", Style(bold=True))]
        segs += [Segment(cell_text(s, inner), cell_style(s)) for s in card.slices]
        segs.append(Segment("]", Style(bold=True)))
        return segs

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        row = y + scroll_y
        if row >= len(self.nodes):
            return Strip.blank(self.size.width)
        node = self.nodes[row]
        name_style = Style(bold=True) if node.connected else Style(dim=True, strike=True)
        segs = [Segment(node.node.ljust(self.name_width), name_style)]
        for card in self._cards[row]:
            segs += self._card_segments(card)
        strip = Strip(segs)
        return strip.crop(scroll_x, scroll_x + self.size.width).extend_cell_length(self.size.width)

    def job_at(self, x: int, y: int) -> str:
        """The job of the card (or MIG instance) under screen position (x, y), or ''."""
        scroll_x, scroll_y = self.scroll_offset
        row, col = y + scroll_y, x + scroll_x - self.name_width
        if not 0 <= row < len(self.nodes) or col < 0:
            return ""
        start = 0
        for card in self._cards[row]:
            width = self.card_width(card)
            if col < start + width:
                if not card.slices:
                    return card.gpu.job_id
                pos = (col - start - 1) // self.slice_width(card)
                return card.slices[pos].job_id if 0 <= pos < len(card.slices) else ""
            start += width
        return ""

    def on_click(self, event: Click) -> None:
        job_id = self.job_at(event.x, event.y)
        if job_id:
            self.post_message(self.JobClicked(job_id))
