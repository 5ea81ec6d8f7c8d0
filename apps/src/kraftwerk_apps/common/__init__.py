"""Code shared by the producer and the consumer: settings, logging, metrics, health, runner."""
