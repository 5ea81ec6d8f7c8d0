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
