"""Producer-specific Prometheus metrics."""

from prometheus_client import Counter, Histogram

MESSAGES = Counter(
    "kraftwerk_producer_messages_total",
    "Messages handled by the producer, by outcome",
    ["outcome"],  # acked | replayed | failed (certainly not written) | unknown
)
ACK_LATENCY = Histogram(
    "kraftwerk_producer_ack_seconds",
    "Time from request accepted to broker acknowledgement of the whole request",
)

# The kinds of ``ERRORS`` (``outcomes.error_kind``): a small, fixed set, so the label cannot
# grow with the exceptions aiokafka may raise.
ERROR_KINDS = ("timeout", "not_enough_replicas", "auth", "too_large", "unavailable", "other")
ERRORS = Counter(
    "kraftwerk_producer_errors_total",
    "Messages not acknowledged by Kafka (outcome failed or unknown), by the kind of error: "
    + ", ".join(ERROR_KINDS),
    ["kind"],
)
for _kind in ERROR_KINDS:  # every kind exported from the start (0): rate() sees the first one
    ERRORS.labels(_kind)
