"""The topic backup file format: round trip of every field, and damaged files refused."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from kraftwerk_apps.tools.backup_format import (
    BackupFormatError,
    BackupHeader,
    BackupReader,
    BackupRecord,
    PartitionInfo,
    decode_record,
    encode_record,
    write_backup,
)
from kraftwerk_apps.tools.topic_backup import build_parser

RECORDS = [
    BackupRecord(0, 0, 1, "CreateTime", None, None, ()),
    BackupRecord(0, 5, 2, "CreateTime", b"", b"\x00\xff", (("a", None), ("a", b""))),
    BackupRecord(2, 1, 3, "LogAppendTime", b"k", None, (("é", b"\x01\x02"),)),
]


def _backup(tmp_path: Path, records: list[BackupRecord], counts: dict[int, int]) -> Path:
    header = BackupHeader(
        topic="t",
        partitions=3,
        timestamp_type="CreateTime",
        offsets={p: PartitionInfo(0, 10, counts.get(p, 0)) for p in range(3)},
        records=sum(counts.values()),
        created_at="2024-01-01T00:00:00+00:00",
    )
    member = tmp_path / "records.gz"
    with gzip.open(member, "wt", encoding="utf-8") as out:
        out.writelines(encode_record(r) for r in records)
    path = tmp_path / "backup.jsonl.gz"
    write_backup(path, header, member)
    return path


def test_every_field_survives_a_line() -> None:
    for record in RECORDS:
        assert decode_record(encode_record(record)) == record


def test_file_round_trip_and_mode(tmp_path: Path) -> None:
    path = _backup(tmp_path, RECORDS, {0: 2, 2: 1})
    assert path.stat().st_mode & 0o777 == 0o600
    with BackupReader(path) as reader:
        assert reader.header.records == 3
        assert reader.header.offsets[1].records == 0
        assert list(reader.records()) == RECORDS


def test_missing_record_is_refused(tmp_path: Path) -> None:
    path = _backup(tmp_path, RECORDS[:2], {0: 2, 2: 1})
    with BackupReader(path) as reader, pytest.raises(BackupFormatError, match="differ from"):
        list(reader.records())


def test_out_of_order_is_refused(tmp_path: Path) -> None:
    path = _backup(tmp_path, [RECORDS[1], RECORDS[0]], {0: 2})
    with BackupReader(path) as reader, pytest.raises(BackupFormatError, match="out of order"):
        list(reader.records())


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    path = _backup(tmp_path, RECORDS * 1, {0: 2, 2: 1})
    data = path.read_bytes()
    path.write_bytes(data[:-12])
    with BackupReader(path) as reader, pytest.raises(BackupFormatError):
        list(reader.records())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a readable gzip file|is empty"),
        (b"not gzip", "not a readable gzip file"),
        (gzip.compress(b'{"format": "other"}\n'), "not a kraftwerk-topic-backup file"),
        (
            gzip.compress(b'{"format": "kraftwerk-topic-backup", "version": 99}\n'),
            "format version 99",
        ),
    ],
)
def test_not_a_backup(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(content)
    with pytest.raises(BackupFormatError, match=message):
        BackupReader(path)


def test_start_offsets_argument() -> None:
    args = build_parser().parse_args(
        ["verify", "--input", "f", "--topic", "t", "--start-offsets", '{"0": 3, "2": 0}']
    )
    assert args.start_offsets == {0: 3, 2: 0}
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["verify", "--input", "f", "--topic", "t", "--start-offsets", "x"]
        )
