"""Messages the watch worker posts to the app."""

from __future__ import annotations

from textual.message import Message


class ClusterChanged(Message):
    """The model changed; one pending message stands for any number of changes (a burst
    collapses into one re-render)."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ClusterChanged)


class ConnectionChanged(Message):
    """The watch stream is up (``detail`` empty) or down (``detail`` says why)."""

    def __init__(self, up: bool, detail: str = "") -> None:
        super().__init__()
        self.up = up
        self.detail = detail
