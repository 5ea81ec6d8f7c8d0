"""What a send attempt means for the client: written, certainly not written, or unknown.

Only outcomes that are *certain* are reported as failures (503/413): the client may then
retry without creating a duplicate.  Everything else is ``unknown`` (504): the record may
or may not be in Kafka, and the client should retry with the same Idempotency-Key (the
producer's replay cache and the consumer's de-duplication make that safe).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiokafka import errors as kafka_errors

from kraftwerk_apps.producer.gateway import (
    Delivery,
    EnqueueDeadlineError,
    NotConnectedError,
    NotWrittenError,
)

Status = Literal["ok", "failed", "unknown"]

TOO_LARGE: tuple[type[BaseException], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.RecordTooLargeError,
)

# Non-retriable produce-response errors with which the broker rejects a batch before it is
# appended to the log.  aiokafka fails the batch with them without retrying.  Kept small on
# purpose: anything not listed is treated as "unknown".
REJECTED_BEFORE_APPEND: tuple[type[BaseException], ...] = (
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.InvalidTopicError,
    kafka_errors.InvalidRequiredAcksError,
    kafka_errors.UnsupportedForMessageFormatError,
    kafka_errors.InvalidTimestampError,
    kafka_errors.CorruptRecordException,
)

# ``error_kind``: the label of ``kraftwerk_producer_errors_total`` (metrics.ERROR_KINDS).
NOT_ENOUGH_REPLICAS: tuple[type[BaseException], ...] = (
    kafka_errors.NotEnoughReplicasError,
    kafka_errors.NotEnoughReplicasAfterAppendError,
)
AUTH: tuple[type[BaseException], ...] = (
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.TransactionalIdAuthorizationFailed,
    kafka_errors.GroupAuthorizationFailedError,
    kafka_errors.AuthenticationFailedError,
    kafka_errors.AuthenticationMethodNotSupported,
    kafka_errors.SaslAuthenticationFailed,
)
TIMEOUT: tuple[type[BaseException], ...] = (
    TimeoutError,
    kafka_errors.KafkaTimeoutError,
    kafka_errors.RequestTimedOutError,
    EnqueueDeadlineError,
)
UNAVAILABLE: tuple[type[BaseException], ...] = (
    NotConnectedError,
    kafka_errors.KafkaConnectionError,
    kafka_errors.KafkaUnavailableError,
    kafka_errors.NodeNotReadyError,
    kafka_errors.LeaderNotAvailableError,
    kafka_errors.NotLeaderForPartitionError,
    kafka_errors.ReplicaNotAvailableError,
)

UNKNOWN_HINT = "retry with the same Idempotency-Key; a duplicate is then dropped"


@dataclass(slots=True)
class Outcome:
    status: Status
    http_status: int
    delivery: Delivery | None = None
    error: str | None = None
    detail: str | None = None
    replayed: bool = False
    # Not acknowledged: the kind of error (``error_kind``), for the metrics.
    kind: str | None = None


def error_kind(exc: BaseException) -> str:
    """A bounded label for a failed send: timeout, not_enough_replicas, auth, too_large,
    unavailable or other (``NotWrittenError`` is judged by its cause, if it has one)."""
    if isinstance(exc, NotWrittenError) and exc.cause is not None:
        exc = exc.cause
    for kind, types in (
        ("too_large", TOO_LARGE),
        ("not_enough_replicas", NOT_ENOUGH_REPLICAS),
        ("auth", AUTH),
        ("timeout", TIMEOUT),
        ("unavailable", UNAVAILABLE),
    ):
        if isinstance(exc, types):
            return kind
    return "other"


def acked(delivery: Delivery, *, replayed: bool = False) -> Outcome:
    return Outcome("ok", 200, delivery=delivery, replayed=replayed)


def unknown(detail: str, kind: str = "other") -> Outcome:
    return Outcome(
        "unknown", 504, error="outcome_unknown", detail=f"{detail}; {UNKNOWN_HINT}", kind=kind
    )


def deadline_passed(deadline: float) -> Outcome:
    return unknown(
        f"no broker acknowledgement within {deadline:g}s; the message may or may not have "
        "been written",
        kind="timeout",
    )


def classify(exc: BaseException) -> Outcome:
    """Map a failed send to an outcome (see the module docstring), with its ``kind``."""
    outcome = _classify(exc)
    outcome.kind = error_kind(exc)
    return outcome


def _classify(exc: BaseException) -> Outcome:
    cause = exc.cause if isinstance(exc, NotWrittenError) and exc.cause is not None else exc
    if isinstance(cause, TOO_LARGE):
        return Outcome(
            "failed", 413, error="message_too_large", detail=f"kafka rejected the size: {cause!r}"
        )
    if isinstance(exc, NotConnectedError):
        return Outcome("failed", 503, error="kafka_unavailable", detail=str(exc))
    if isinstance(exc, EnqueueDeadlineError):
        return Outcome(
            "failed",
            503,
            error="kafka_timeout",
            detail=f"kafka not ready within the request deadline, message not written: {exc}",
        )
    if isinstance(exc, NotWrittenError):
        return Outcome("failed", 503, error="kafka_unavailable", detail=f"not written: {exc}")
    if isinstance(exc, REJECTED_BEFORE_APPEND):
        return Outcome(
            "failed", 503, error="kafka_rejected", detail=f"kafka rejected the message: {exc!r}"
        )
    return unknown(f"kafka did not confirm the message: {exc!r}")
