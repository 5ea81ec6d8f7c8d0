"""kraftwerk-apps: producer and consumer FastAPI services for the kraftwerk Kafka cluster."""

__version__ = "0.1.0"
