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
