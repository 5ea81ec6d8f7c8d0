"""The topic backup file: gzip-compressed JSON lines.

The first line is the header (``HEADER_FORMAT``, ``FORMAT_VERSION``, the topic, its partition
count and timestamp type, per-partition start/end offsets and record counts, the total record
count, the creation time).  Every other line is one record, ordered by partition then offset::

    {"partition": 0, "offset": 7, "timestamp": 1718000000000, "timestamp_type": "CreateTime",
     "key": "a2V5" | null, "value": "dmFsdWU=" | null, "headers": [["name", "AAE=" | null]]}

Keys, values and header values are base64 (standard alphabet, padded); ``null`` is kept as
``null``.  Header names are strings (Kafka clients write them as UTF-8).

The file is two gzip members: the header, then the records (a gzip reader sees one stream).
That lets the exporter stream the records first and put the counts in front afterwards.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HEADER_FORMAT = "kraftwerk-topic-backup"
FORMAT_VERSION = 1
TIMESTAMP_TYPES = {0: "CreateTime", 1: "LogAppendTime"}


class BackupFormatError(ValueError):
    """The file is not a backup this version can read, or it is damaged."""


@dataclass(frozen=True, slots=True)
class BackupRecord:
    partition: int
    offset: int
    timestamp: int
    timestamp_type: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


@dataclass(slots=True)
class PartitionInfo:
    start: int
    end: int
    records: int = 0


@dataclass(slots=True)
class BackupHeader:
    topic: str
    partitions: int
    timestamp_type: str | None
    offsets: dict[int, PartitionInfo] = field(default_factory=dict)
    records: int = 0
    created_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "format": HEADER_FORMAT,
            "version": FORMAT_VERSION,
            "topic": self.topic,
            "partitions": self.partitions,
            "timestamp_type": self.timestamp_type,
            "offsets": {
                str(p): {"start": i.start, "end": i.end, "records": i.records}
                for p, i in sorted(self.offsets.items())
            },
            "records": self.records,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, data: Any) -> BackupHeader:
        if not isinstance(data, dict) or data.get("format") != HEADER_FORMAT:
            raise BackupFormatError(f"not a {HEADER_FORMAT} file (its first line is no header)")
        if data.get("version") != FORMAT_VERSION:
            raise BackupFormatError(
                f"backup format version {data.get('version')!r}; this tool reads {FORMAT_VERSION}"
            )
        try:
            offsets = {
                int(p): PartitionInfo(int(i["start"]), int(i["end"]), int(i["records"]))
                for p, i in data["offsets"].items()
            }
            header = cls(
                topic=str(data["topic"]),
                partitions=int(data["partitions"]),
                timestamp_type=data.get("timestamp_type"),
                offsets=offsets,
                records=int(data["records"]),
                created_at=str(data.get("created_at", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BackupFormatError(f"damaged backup header: {exc!r}") from exc
        if header.partitions < 1 or any(not 0 <= p < header.partitions for p in offsets):
            raise BackupFormatError("damaged backup header: partitions out of range")
        return header


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise BackupFormatError(f"expected base64 text or null, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise BackupFormatError(f"bad base64: {exc}") from exc


def encode_record(record: BackupRecord) -> str:
    """One JSON line (with its newline) for ``record``."""
    return (
        json.dumps(
            {
                "partition": record.partition,
                "offset": record.offset,
                "timestamp": record.timestamp,
                "timestamp_type": record.timestamp_type,
                "key": _b64(record.key),
                "value": _b64(record.value),
                "headers": [[name, _b64(value)] for name, value in record.headers],
            },
            separators=(",", ":"),
        )
        + "\n"
    )


def decode_record(line: str) -> BackupRecord:
    try:
        data = json.loads(line)
        headers = tuple((str(name), _unb64(value)) for name, value in data["headers"])
        return BackupRecord(
            partition=int(data["partition"]),
            offset=int(data["offset"]),
            timestamp=int(data["timestamp"]),
            timestamp_type=str(data["timestamp_type"]),
            key=_unb64(data["key"]),
            value=_unb64(data["value"]),
            headers=headers,
        )
    except BackupFormatError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise BackupFormatError(f"damaged record line: {exc!r}") from exc


def write_backup(path: Path, header: BackupHeader, records_member: Path) -> None:
    """Write ``path`` (mode 0600): the header's gzip member, then ``records_member`` as is.

    ``records_member`` is a gzip file of record lines (``encode_record``).
    """
    line = json.dumps(header.to_json(), separators=(",", ":")) + "\n"
    with path.open("wb") as out:
        path.chmod(0o600)
        out.write(gzip.compress(line.encode("utf-8")))
        with records_member.open("rb") as src:
            while chunk := src.read(1 << 20):
                out.write(chunk)


def _read_header(file: IO[str], path: Path) -> BackupHeader:
    try:
        first = file.readline()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise BackupFormatError(f"{path}: not a readable gzip file ({exc})") from exc
    if not first:
        raise BackupFormatError(f"{path} is empty")
    try:
        return BackupHeader.from_json(json.loads(first))
    except json.JSONDecodeError as exc:
        raise BackupFormatError(f"not a {HEADER_FORMAT} file: {exc}") from exc


class BackupReader:
    """Read a backup: ``header`` at once, then ``records()`` in file order, checked.

    ``records()`` checks that partitions come in order, offsets grow within a partition and
    the per-partition counts match the header, so that a truncated or edited file fails
    instead of restoring part of a topic silently.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] = gzip.open(path, "rt", encoding="utf-8")  # noqa: SIM115
        try:
            self.header = _read_header(self._file, path)
        except BaseException:
            self._file.close()
            raise

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> BackupReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def records(self) -> Iterator[BackupRecord]:
        counts: dict[int, int] = {}
        last: tuple[int, int] = (-1, -1)
        try:
            for line in self._file:
                record = decode_record(line)
                if (record.partition, record.offset) <= last or not (
                    0 <= record.partition < self.header.partitions
                ):
                    raise BackupFormatError(
                        f"record out of order or out of range: partition {record.partition} "
                        f"offset {record.offset} after partition {last[0]} offset {last[1]}"
                    )
                last = (record.partition, record.offset)
                counts[record.partition] = counts.get(record.partition, 0) + 1
                yield record
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise BackupFormatError(f"{self.path}: damaged or truncated ({exc})") from exc
        expected = {p: i.records for p, i in self.header.offsets.items() if i.records}
        if counts != expected:
            raise BackupFormatError(
                f"{self.path}: the records per partition {counts} differ from the header's "
                f"{expected} (truncated or edited file)"
            )
