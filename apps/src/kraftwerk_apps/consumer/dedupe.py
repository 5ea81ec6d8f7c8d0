"""Dropping repeats of an ``idempotency-key`` header within a time window.

The producer copies an HTTP client's ``Idempotency-Key`` into the record header
``idempotency-key``.  A client that retries a request it thinks failed may so write the same
message twice.  Both readers of the consumer drop such repeats:

* the group worker does not process (nor dead-letter) a repeat;
* the history reader does not show it on the page.

Rules and limits:

* Only records with a non-empty ``idempotency-key`` header are ever deduplicated; the first
  such header counts.
* A record repeats an earlier one if that one had the same key and its *record timestamp*
  (the broker's append time on the deployed topic, ``message.timestamp.type=LogAppendTime``)
  is at most ``KRAFTWERK_DEDUPE_WINDOW_SECONDS`` (default 600) apart.  0 disables it.
* At most ``KRAFTWERK_DEDUPE_MAX_KEYS`` (default 100000) keys are remembered per reader; the
  oldest are forgotten first, as are keys older than the window (relative to the newest
  record seen).  Keys are stored as 16-byte BLAKE2b digests.
* The window is **per instance and in memory**: it starts empty at every start, and a
  partition that moves to another instance after a rebalance starts there with an empty
  window.  Re-delivery of the *same* record (same partition and offset, e.g. after a failed
  commit) is not a repeat: at-least-once processing stays at-least-once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Seen:
    """Where a record is; ordered like the page: (timestamp, partition, offset)."""

    timestamp: int
    partition: int
    offset: int

    @classmethod
    def of(cls, record: object) -> Seen:
        return cls(
            int(getattr(record, "timestamp", 0)),
            int(getattr(record, "partition", 0)),
            int(getattr(record, "offset", 0)),
        )


def _digest(key: bytes) -> bytes:
    return hashlib.blake2b(key, digest_size=16).digest()


class DedupeWindow:
    def __init__(self, window_seconds: float, max_keys: int) -> None:
        self._window_ms = int(window_seconds * 1000)
        self._max_keys = max(1, max_keys)
        self._keys: OrderedDict[bytes, Seen] = OrderedDict()
        self._newest: int | None = None

    @property
    def enabled(self) -> bool:
        return self._window_ms > 0

    def __len__(self) -> int:
        return len(self._keys)

    def earlier(self, key: bytes, item: Seen) -> Seen | None:
        """The remembered *other* record with ``key`` within the window of ``item``, if any."""
        if not self.enabled:
            return None
        seen = self._keys.get(_digest(key))
        if seen is None or (seen.partition, seen.offset) == (item.partition, item.offset):
            return None
        if abs(item.timestamp - seen.timestamp) > self._window_ms:
            return None
        return seen

    def remember(self, key: bytes, item: Seen) -> None:
        if not self.enabled:
            return
        digest = _digest(key)
        self._keys[digest] = item
        self._keys.move_to_end(digest)
        if self._newest is None or item.timestamp > self._newest:
            self._newest = item.timestamp
        self._evict()

    def _evict(self) -> None:
        keys = self._keys
        while len(keys) > self._max_keys:
            keys.popitem(last=False)
        if self._newest is None:
            return
        horizon = self._newest - self._window_ms
        while keys:
            oldest = next(iter(keys.values()))
            if oldest.timestamp >= horizon:
                break
            keys.popitem(last=False)

    def is_repeat(self, key: bytes, item: Seen) -> bool:
        """True if ``item`` repeats a remembered record; otherwise remember ``item``."""
        if self.earlier(key, item) is not None:
            return True
        self.remember(key, item)
        return False
