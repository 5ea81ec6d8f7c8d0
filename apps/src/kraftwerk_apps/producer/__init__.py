"""Producer service: HTTP -> Kafka, answering only after the broker acknowledged (acks=all)."""
