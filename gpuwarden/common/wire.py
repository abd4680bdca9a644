"""Wire-level constants both ends of the agent stream must agree on."""

from __future__ import annotations

# Trailing-metadata key the collector sets when it refuses a report as invalid: the agent
# moves that report aside instead of resending it forever.
REJECTED_SEQ_KEY = "gpuwarden-rejected-seq"
# Largest NodeReport either side accepts (64 GPUs with processes fit in far less).
MAX_REPORT_BYTES = 4 << 20
# Request-metadata key of a researcher's MUNGE credential (``munge -n -s gpuwarden-query``).
MUNGE_KEY = "gpuwarden-munge"
# The payload of that credential: the collector refuses one made for another purpose.
MUNGE_PURPOSE = "gpuwarden-query"
# Request-metadata key and value by which an agent asks for cumulative acks on its report
# stream (``Ack.cumulative``): one ack then covers every report up to its seq.
ACKS_KEY = "gpuwarden-acks"
ACKS_CUMULATIVE = "cumulative"
# Most reports one NodeReportBatch may hold (the collector refuses a larger batch whole).
MAX_BATCH_REPORTS = 256
