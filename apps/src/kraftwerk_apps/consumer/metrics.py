"""Consumer-specific Prometheus metrics."""

from prometheus_client import Counter, Gauge, Histogram

PROCESSED = Counter(
    "kraftwerk_consumer_messages_processed_total", "Messages processed and committed"
)
FAILED = Counter(
    "kraftwerk_consumer_messages_failed_total",
    "Messages whose processing failed for good (then written to the DLQ), by reason: "
    "permanent (not retried) or transient (still failing after KRAFTWERK_RETRY_COUNT retries)",
    ["reason"],
)
for _reason in ("permanent", "transient"):
    FAILED.labels(_reason)
RETRIES = Counter("kraftwerk_consumer_message_retries_total", "Processing retry attempts")
DLQ = Counter("kraftwerk_consumer_dlq_messages_total", "Messages written to the DLQ topic")
COMMIT_FAILURES = Counter(
    "kraftwerk_consumer_commit_failures_total", "Offset commits that failed (e.g. rebalance)"
)
PROCESSING_SECONDS = Histogram(
    "kraftwerk_consumer_processing_seconds", "Time to process one message incl. retries"
)
# Every instance reports the group's lag of every partition of the topic: across instances
# take the max per (topic, partition), e.g. sum(max by (topic, partition) (kraftwerk_consumer_lag)).
LAG = Gauge(
    "kraftwerk_consumer_lag",
    "Group lag per partition (end offset - committed offset), as seen by this instance",
    ["topic", "partition"],
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
