"""Idempotency keys: validation, request fingerprints and the per-process replay cache.

A client that did not get a definite answer (504 ``outcome_unknown``, a dropped connection)
retries with the same ``Idempotency-Key``.  Within ``idempotency_window_seconds`` this
process then answers from its cache instead of sending again:

* earlier send acknowledged      -> the same result again (``Idempotent-Replayed: true``)
* earlier send still in flight   -> wait for it (within this request's deadline)
* earlier send failed            -> send again
* same key, different request    -> 422 ``idempotency_key_reused``

The cache is per process and bounded (``idempotency_max_keys``, oldest entries dropped
first), so a duplicate can still reach Kafka (restart, another worker/host, eviction); every
record carries the key in its ``idempotency-key`` header and the consumer drops repeats.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cachetools import TTLCache

from kraftwerk_apps.common.kafka import IDEMPOTENCY_KEY_HEADER
from kraftwerk_apps.producer.gateway import Delivery

# The record header the consumer deduplicates on (one name for both apps).
KAFKA_HEADER = IDEMPOTENCY_KEY_HEADER
MAX_KEY_LENGTH = 200
KEY_PATTERN = r"^[\x20-\x7e]{1,200}$"
_KEY_RE = re.compile(KEY_PATTERN)


def valid_key(value: str) -> bool:
    """1..200 printable ASCII characters (space included)."""
    return _KEY_RE.fullmatch(value) is not None


def fingerprint(value: bytes, key: bytes | None, headers: Iterable[tuple[str, bytes]]) -> bytes:
    """Hash of what would be written (value, record key, headers in canonical order)."""
    digest = hashlib.sha256()

    def part(data: bytes) -> None:
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)

    part(value)
    part(b"" if key is None else b"k" + key)
    for name, header_value in sorted((n, v) for n, v in headers if n != KAFKA_HEADER):
        part(name.encode())
        part(header_value)
    return digest.digest()


class KeyReusedError(Exception):
    """The idempotency key was already used for a different request."""


@dataclass(frozen=True, slots=True)
class Entry:
    fingerprint: bytes
    outcome: asyncio.Future[Delivery]


class ReplayCache:
    def __init__(
        self, window_seconds: float, max_keys: int, timer: Callable[[], float] = time.monotonic
    ) -> None:
        # Expired keys go first; when full, the least recently used key is dropped.
        self._entries: TTLCache[str, Entry] = TTLCache(
            maxsize=max_keys, ttl=window_seconds, timer=timer
        )

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: str, fp: bytes) -> Entry | None:
        """The entry to reuse (acknowledged or in flight), or None to send (again).

        Raises ``KeyReusedError`` when the key belongs to a different request.
        """
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.fingerprint != fp:
            raise KeyReusedError(key)
        fut = entry.outcome
        if fut.done() and (fut.cancelled() or fut.exception() is not None):
            return None
        return entry

    def remember(self, key: str, entry: Entry) -> None:
        """(Re)start the window for ``key``."""
        self._entries.pop(key, None)
        self._entries[key] = entry
