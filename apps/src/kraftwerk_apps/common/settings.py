"""Settings shared by both services.

Everything is configured through environment variables with the ``KRAFTWERK_`` prefix
(pydantic-settings).  List values (bootstrap servers, API keys) are comma-separated.
"""

from __future__ import annotations

import ssl
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "KRAFTWERK_"


def split_csv(value: Any) -> Any:
    """Turn ``"a, b,,c"`` into ``["a", "b", "c"]``; leave lists alone."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class KafkaConnectionSettings(BaseSettings):
    """How to reach Kafka: brokers, TLS, SASL (shared by the services and the CLI tools)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="ignore",
    )

    bootstrap_servers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1:9092"],
        description="Comma-separated host:port list of Kafka brokers.",
    )
    client_id: str = "kraftwerk"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    kafka_request_timeout_ms: int = Field(default=30_000, ge=1_000)

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split_servers(cls, value: Any) -> Any:
        return split_csv(value)

    @field_validator("bootstrap_servers")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one bootstrap server is required")
        return value

    def kafka_kwargs(self) -> dict[str, Any]:
        """Keyword arguments common to every aiokafka client."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": ",".join(self.bootstrap_servers),
            "client_id": self.client_id,
            "request_timeout_ms": self.kafka_request_timeout_ms,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            kwargs["ssl_context"] = self.ssl_context()
        if self.security_protocol.startswith("SASL_"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return kwargs

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ssl_cafile)
        if self.ssl_certfile:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return context


class KafkaClientSettings(KafkaConnectionSettings):
    """Connection settings for Kafka plus the topics and the common HTTP server settings."""

    topic: str = "test-topic"
    dlq_topic: str = "test-topic.dlq"
    # Back-off for (re)connecting to Kafka at start-up (the app keeps serving meanwhile).
    connect_backoff_seconds: float = Field(default=1.0, gt=0)
    connect_backoff_max_seconds: float = Field(default=30.0, gt=0)
    readiness_timeout_seconds: float = Field(default=3.0, gt=0)

    # --- HTTP server ----------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1)
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    access_log: bool = Field(
        default=False,
        description="uvicorn's access log line per request (a JSON log line costs about as "
        "much CPU as a whole /healthz request; NGINX logs every request at the edge anyway).",
    )
    root_path: str = Field(default="", description="Set when served under a URL prefix by NGINX.")
    proxy_headers: bool = True
    forwarded_allow_ips: str = "127.0.0.1"
    graceful_shutdown_seconds: float = Field(default=5.0, ge=0)
    keepalive_timeout_seconds: int = Field(
        default=75,
        ge=1,
        description="uvicorn's idle keep-alive timeout; keep it above NGINX's upstream "
        "keepalive_timeout (60s) so that NGINX, not uvicorn, closes idle connections.",
    )
    fatal_exit_delay_seconds: float = Field(
        default=1.0,
        ge=0,
        description="After a background task died: how long /readyz answers 503 with the "
        "reason before the server shuts down and the process exits non-zero.",
    )
