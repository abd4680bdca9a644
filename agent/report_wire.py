"""Spooled reports on the wire as they are: their seq and node read from the bytes, and
``NodeReportBatch`` messages built around them, without decoding or re-encoding a report.

A ``NodeReportBatch`` is field 1 (the node) and field 2 repeated (each report): the spooled
bytes go in unchanged behind a tag and a length, in ascending seq, all for one node, at most
:data:`MAX_BATCH_REPORTS` of them and the whole under :data:`MAX_REPORT_BYTES`.
"""

from __future__ import annotations

from gpuwarden.agent.spool import SpoolCorrupt
from gpuwarden.common.wire import MAX_BATCH_REPORTS, MAX_REPORT_BYTES
from gpuwarden.proto.v1 import gpuwarden_pb2 as pb

_NODE_FIELD = pb.NodeReport.DESCRIPTOR.fields_by_name["node"].number
_SEQ_FIELD = pb.NodeReport.DESCRIPTOR.fields_by_name["seq"].number
_BATCH_NODE_TAG = pb.NodeReportBatch.DESCRIPTOR.fields_by_name["node"].number << 3 | 2
_BATCH_REPORT_TAG = pb.NodeReportBatch.DESCRIPTOR.fields_by_name["reports"].number << 3 | 2
_SKIP_FIXED = {1: 8, 5: 4}  # wire types of fixed width: 64-bit, 32-bit


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise SpoolCorrupt("not a report: a varint runs past its end")


def varint(n: int) -> bytes:
    """``n`` (not negative) as a protobuf varint."""
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def report_fields(data: bytes) -> tuple[int, bytes]:
    """The ``seq`` and ``node`` (its UTF-8 bytes) of a serialized ``NodeReport``, read from
    its top-level fields without decoding the rest; SpoolCorrupt when the bytes are not a
    well-formed message."""
    pos = 0
    seq = 0  # proto3: absent means 0
    node = b""
    while pos < len(data):
        tag, pos = _varint(data, pos)
        field, wire_type = tag >> 3, tag & 7
        if field == 0:
            raise SpoolCorrupt("not a report: field number 0")
        if wire_type == 0:
            value, pos = _varint(data, pos)
            if field == _SEQ_FIELD:
                seq = value
        elif wire_type == 2:
            length, pos = _varint(data, pos)
            if field == _NODE_FIELD:
                node = data[pos : pos + length]
            pos += length
        elif wire_type in _SKIP_FIXED:
            pos += _SKIP_FIXED[wire_type]
        else:
            raise SpoolCorrupt(f"not a report: wire type {wire_type}")
        if pos > len(data):
            raise SpoolCorrupt("not a report: a field runs past the end")
    return seq, node


def report_seq(data: bytes) -> int:
    """The ``seq`` of a serialized ``NodeReport`` (see :func:`report_fields`)."""
    return report_fields(data)[0]


def batch_head(node: bytes) -> bytes:
    """The bytes a ``NodeReportBatch`` for ``node`` begins with."""
    return bytes((_BATCH_NODE_TAG,)) + varint(len(node)) + node


def batch_entry(report: bytes) -> bytes:
    """One spooled report as an entry of a ``NodeReportBatch`` (its bytes unchanged)."""
    return bytes((_BATCH_REPORT_TAG,)) + varint(len(report)) + report


class BatchBuilder:
    """Collects reports of one node into one ``NodeReportBatch`` within the limits."""

    def __init__(
        self,
        node: bytes,
        *,
        max_reports: int = MAX_BATCH_REPORTS,
        max_bytes: int = MAX_REPORT_BYTES - 1,
    ) -> None:
        self.node = node
        self.max_reports = max_reports
        self.max_bytes = max_bytes
        self._parts: list[bytes] = [batch_head(node)]
        self._size = len(self._parts[0])
        self.seqs: list[int] = []

    def fits(self, node: bytes, report: bytes) -> bool:
        """Whether ``report`` of ``node`` may join this batch."""
        if node != self.node or len(self.seqs) >= self.max_reports:
            return False
        return self._size + 1 + len(varint(len(report))) + len(report) <= self.max_bytes

    def add(self, seq: int, report: bytes) -> None:
        entry = batch_entry(report)
        self._parts.append(entry)
        self._size += len(entry)
        self.seqs.append(seq)

    def message(self) -> bytes:
        return b"".join(self._parts)
