"""Consumer-specific Prometheus metrics."""

from prometheus_client import Counter, Gauge, Histogram

PROCESSED = Counter(
    "kraftwerk_consumer_messages_processed_total", "Messages processed and committed"
)
RETRIES = Counter("kraftwerk_consumer_message_retries_total", "Processing retry attempts")
DLQ = Counter("kraftwerk_consumer_dlq_messages_total", "Messages written to the DLQ topic")
COMMIT_FAILURES = Counter(
    "kraftwerk_consumer_commit_failures_total", "Offset commits that failed (e.g. rebalance)"
)
PROCESSING_SECONDS = Histogram(
    "kraftwerk_consumer_processing_seconds", "Time to process one message incl. retries"
)
LAG = Gauge(
    "kraftwerk_consumer_lag",
    "Group lag per partition (end offset - committed offset)",
    ["partition"],
    multiprocess_mode="max",
)
DUPLICATES = Counter(
    "kraftwerk_consumer_duplicates_dropped_total",
    "Records dropped because their idempotency-key header repeated one seen within the window "
    "(reader=group: not processed; reader=history: not shown on the page)",
    ["reader"],
)
DLQ_TRUNCATED = Counter(
    "kraftwerk_consumer_dlq_truncated_total",
    "Records too large for the DLQ, written truncated (header dlq.truncated)",
)
DLQ_WRITE_RETRIES = Counter(
    "kraftwerk_consumer_dlq_write_retries_total", "DLQ writes retried after a retriable error"
)
POLL_BUDGET_EXCEEDED = Counter(
    "kraftwerk_consumer_poll_budget_exceeded_total",
    "Polls whose processing hit the time budget (the rest was sought back and polled again)",
)
