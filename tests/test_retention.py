"""Retention: archive closed segments, remove old ones, and what remains still verifies.

Ledgers are prebuilt with the gateway's own writer, small segments and entries
received an hour apart a month ago; an in-process gateway then runs retention
passes with its wall clock set by the test (no sleeping: the loop is turned
until retention is idle). The crash between a checkpoint and its deletion is
made by stopping a gateway whose deletion step was replaced.
"""

from __future__ import annotations

import gzip
import json
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from blake3 import blake3
from gatewayproc import GatewayProcess, run_gateway_command, wait_for
from inproc import ledger, pump, settle

from gateway.audit.query import Filters, read_entry, run, verify_rows
from gateway.cli import main as cli_main
from gateway.config import (
    Config,
    IndexConfig,
    IngestConfig,
    LedgerConfig,
    RetentionConfig,
    load_config,
)
from gateway.errors import ConfigError
from gateway.ledger import archive as archive_store
from gateway.ledger import entries, retention
from gateway.ledger import format as fmt
from gateway.ledger.store import (
    LedgerFollower,
    LedgerReader,
    LedgerWriter,
    list_segments,
    write_entries,
)
from gateway.ledger.verify import verify_ledger
from gateway.service import Gateway

HOUR_US = 3600 * 1_000_000
DAY_US = 24 * HOUR_US
# A month ago, so that the gateway's own entries (received now) come later.
T0 = (time.time_ns() // 1000) - 30 * DAY_US
SEGMENT_BYTES = 1000  # about 8 entries per segment
PREBUILT = 64  # entries, one an hour: about 2.7 days in 8 segments
SOURCE = entries.encode_source("198.51.100.4", 51000, "shop", 1)


def build(ledger_dir: Path, n: int = PREBUILT) -> None:
    """n events received an hour apart from T0, written by the gateway's own writer."""
    writer = LedgerWriter(ledger_dir, segment_bytes=SEGMENT_BYTES).open()
    write_entries(
        writer, (entries.encode_event(T0 + i * HOUR_US, SOURCE, {"n": i}, []) for i in range(n))
    )


def received_at(ledger_dir: Path, seq: int) -> int:
    for _s, payload, _h in LedgerReader(ledger_dir).entries(seq, seq):
        return entries.decode(payload)["received_at"]
    raise AssertionError(f"no entry {seq}")


def config_for(tmp_path: Path, index_on: bool = False, **retention_kw) -> Config:
    return Config(
        state_dir=tmp_path / "state",
        ingest=IngestConfig(listen=("127.0.0.1:0",)),
        ledger=LedgerConfig(segment_bytes=SEGMENT_BYTES),
        index=IndexConfig(enabled=index_on),
        retention=RetentionConfig(**retention_kw),
    )


def start(config: Config, now_us: int) -> Gateway:
    gw = Gateway(config)
    set_wall(gw, now_us)
    gw.start()
    run_retention(gw, now_us)
    return gw


def set_wall(gw: Gateway, now_us: int) -> None:
    """Stop the gateway's wall clock at `now_us` (monotonic time runs on): entries are
    received then and retention judges ages then."""
    clock = gw.loop.clock
    clock.wall = lambda: now_us / 1_000_000
    clock.wall_us = lambda: now_us


def run_retention(gw: Gateway, now_us: int) -> None:
    """One pass at `now_us`, and every pass that follows from it, until retention is idle."""
    set_wall(gw, now_us)
    gw.retention.check_now()
    pump(gw, lambda: gw.retention.idle)
    assert gw.retention.error == "", gw.retention.error


def stop(gw: Gateway) -> None:
    gw.request_stop()
    gw._finish()


def system(gw_or_dir, name: str) -> list[dict]:
    found = ledger(gw_or_dir) if isinstance(gw_or_dir, Gateway) else decoded(gw_or_dir)
    return [e for e in found if e["kind"] == "system" and e.get("name") == name]


def decoded(ledger_dir: Path) -> list[dict]:
    return [
        {"seq": seq, **entries.decode(payload)}
        for seq, payload, _h in LedgerReader(ledger_dir).entries()
    ]


def last_seq_of(ledger_dir: Path, name: str) -> int:
    """The last seq of a closed segment: one before the segment that follows it."""
    names = [p.name for _f, p in list_segments(ledger_dir)]
    return fmt.parse_segment_name(names[names.index(name) + 1]) - 1


def cli(*args: str, capsys) -> tuple[int, str]:
    code = cli_main(list(args))
    return code, capsys.readouterr().out


@pytest.fixture
def retained(tmp_path):
    """A ledger after retention archived everything closed and removed what is 2 days old.

    Returns (config, originals): originals maps each prebuilt closed segment's
    name to its bytes as they were before anything was removed.
    """
    archive = tmp_path / "archive"
    archive.mkdir()
    config = config_for(tmp_path, archive_dir=archive, archive_after_days=1, remove_after_days=2)
    build(config.ledger_dir)
    originals = {p.name: p.read_bytes() for _f, p in list_segments(config.ledger_dir)[:-1]}
    assert len(originals) >= 6
    gw = start(config, T0 + 36 * HOUR_US)  # 1.5 days after T0: the first day is archived
    archived = {e["detail"]["segment"] for e in system(gw, "archived")}
    assert archived and all(
        received_at(config.ledger_dir, last_seq_of(config.ledger_dir, name)) <= T0 + 12 * HOUR_US
        for name in archived
    )
    assert not system(gw, "checkpoint")
    run_retention(gw, T0 + 84 * HOUR_US)  # 3.5 days: entries up to 1.5 days are removed
    stop(gw)
    return config, originals


# --------------------------------------------------------------------------- archive and remove


def test_archive_then_remove_records_both_and_verifies_from_the_checkpoint(retained, capsys):
    config, originals = retained
    ledger_dir, archive = config.ledger_dir, config.retention.archive_dir
    found = decoded(ledger_dir)
    archived = {e["detail"]["segment"]: e for e in system(ledger_dir, "archived")}
    checkpoints = [e["detail"] for e in system(ledger_dir, "checkpoint")]
    assert set(originals) <= set(archived)  # every prebuilt closed segment is archived
    for name, data in originals.items():
        detail = archived[name]["detail"]
        assert detail["blake3"] == blake3(data).hexdigest() and detail["bytes"] == len(data)
        path = Path(detail["archive_dir"]) / detail["archive_file"]
        assert path == archive / archive_store.archive_name(name)
        with gzip.open(path, "rb") as f:
            assert f.read() == data
        assert detail["archive_bytes"] == path.stat().st_size
        assert detail["first_seq"] == fmt.parse_segment_name(name)
    # Removed: oldest first, exactly the segments whose last entry is 2 days old.
    removed = [c["segment"] for c in checkpoints]
    assert removed == sorted(originals)[: len(removed)] and removed
    live = [p.name for _f, p in list_segments(ledger_dir)]
    assert not set(removed) & set(live)
    for name in removed:
        assert received_at_original(originals[name]) <= T0 + 36 * HOUR_US
    kept = sorted(set(originals) - set(removed))
    assert received_at_original(originals[kept[0]]) > T0 + 36 * HOUR_US
    # Each checkpoint names the hash the next segment starts from, and the archive it relied on.
    for c in checkpoints:
        data = originals[c["segment"]]
        assert c["hash"] == data[-32:].hex()
        assert c["archived_seq"] == archived[c["segment"]]["seq"]
        assert c["archive_file"] == archive_store.archive_name(c["segment"])
    first_live = fmt.parse_segment_name(live[0])
    assert found[0]["seq"] == first_live  # export reads from the oldest live segment

    result = verify_ledger(ledger_dir)
    assert result.ok, result.as_json()
    assert result.start.seq == first_live - 1 == checkpoints[-1]["last_seq"]
    assert result.start.hash.hex() == checkpoints[-1]["hash"]
    assert result.checkpoint_seq == system(ledger_dir, "checkpoint")[-1]["seq"]
    assert result.entries == result.head_seq - result.start.seq

    code, out = cli("verify", "--state", str(config.state_dir), capsys=capsys)
    assert code == 0
    assert f"verified from retained checkpoint at seq {first_live - 1}" in out
    code, out = cli("verify", "--json", "--state", str(config.state_dir), capsys=capsys)
    data = json.loads(out)
    assert code == 0 and data["ok"]
    assert data["from"] == {
        "seq": first_live - 1,
        "hash": checkpoints[-1]["hash"],
        "checkpoint_seq": result.checkpoint_seq,
    }

    whole = verify_ledger(ledger_dir, archive)
    assert whole.ok, whole.as_json()
    assert whole.start.seq == 0 and whole.checkpoint_seq is None
    assert (whole.head_seq, whole.head_hash) == (result.head_seq, result.head_hash)
    assert whole.archived_segments == len(removed)
    assert whole.overlaps == len(set(archived) - set(removed))
    code, out = cli(
        "verify", "--archive", str(archive), "--state", str(config.state_dir), capsys=capsys
    )
    assert code == 0 and out.startswith("ok: ") and "from the archive" in out


def received_at_original(segment: bytes) -> int:
    """received_at of the last entry of a segment's bytes."""
    pos, last = fmt.SEGMENT_HEADER_BYTES, b""
    while pos < len(segment):
        length, _seq = fmt.parse_frame_header(segment, pos)
        last = segment[pos + fmt.FRAME_HEADER_BYTES : pos + fmt.FRAME_HEADER_BYTES + length]
        pos += fmt.FRAME_OVERHEAD + length
    return entries.decode(last)["received_at"]


def test_a_tampered_retained_entry_fails_at_its_seq(retained):
    config, _originals = retained
    _first, path = list_segments(config.ledger_dir)[0]
    data = bytearray(path.read_bytes())
    length, seq = fmt.parse_frame_header(data, fmt.SEGMENT_HEADER_BYTES)
    second = fmt.SEGMENT_HEADER_BYTES + fmt.FRAME_OVERHEAD + length
    _length, seq = fmt.parse_frame_header(data, second)
    data[second + fmt.FRAME_HEADER_BYTES + 3] ^= 0x01
    path.write_bytes(bytes(data))
    for archive in (None, config.retention.archive_dir):
        result = verify_ledger(config.ledger_dir, archive)
        assert not result.ok
        assert (result.first_bad_seq, result.file, result.offset) == (seq, str(path), second)
        assert result.head_seq == seq - 1


def test_a_segment_removed_without_a_checkpoint_fails(retained, tmp_path):
    config, _originals = retained
    ledger_dir = config.ledger_dir
    checkpoint = system(ledger_dir, "checkpoint")[-1]["detail"]
    (_first, oldest), (second, _path) = list_segments(ledger_dir)[:2]
    oldest.unlink()
    result = verify_ledger(ledger_dir)
    assert not result.ok
    assert result.first_bad_seq == checkpoint["last_seq"] + 1  # the first missing seq
    assert (result.head_seq, result.head_hash.hex()) == (checkpoint["last_seq"], checkpoint["hash"])
    assert result.file == str(ledger_dir / fmt.segment_name(second))
    assert f"starts at seq {second}" in result.reason and "checkpoint" in result.reason

    # A ledger that never had retention: the first segment missing is missing history.
    plain = tmp_path / "plain"
    build(plain)
    segments = list_segments(plain)
    segments[0][1].unlink()
    result = verify_ledger(plain)
    assert not result.ok and result.first_bad_seq == 1
    assert result.head_seq == 0 and result.head_hash == fmt.GENESIS_HASH
    assert result.file == str(segments[1][1])


def rechain(ledger_dir: Path, prev: bytes) -> None:
    """Rewrite every live segment's headers and chain hashes from `prev`, keeping payloads."""
    for first, path in list_segments(ledger_dir):
        data = path.read_bytes()
        out = bytearray(fmt.encode_segment_header(first, prev))
        pos = fmt.SEGMENT_HEADER_BYTES
        while pos < len(data):
            length, seq = fmt.parse_frame_header(data, pos)
            body = data[pos + fmt.FRAME_HEADER_BYTES : pos + fmt.FRAME_HEADER_BYTES + length]
            frame, prev = fmt.encode_frame(seq, body, prev)
            out += frame
            pos += fmt.FRAME_OVERHEAD + length
        path.write_bytes(bytes(out))


def test_a_checkpoint_with_another_hash_does_not_vouch(tmp_path):
    # The live ledger rewritten from another start: it chains, but the
    # checkpoint inside it still records the hash that was really removed.
    config = config_for(tmp_path, remove_unarchived=True, remove_after_days=2)
    build(config.ledger_dir)
    gw = start(config, T0 + 84 * HOUR_US)
    stop(gw)
    checkpoint = system(config.ledger_dir, "checkpoint")[-1]
    rechain(config.ledger_dir, bytes(32))
    result = verify_ledger(config.ledger_dir)
    assert not result.ok
    assert result.first_bad_seq == checkpoint["detail"]["last_seq"] + 1
    assert f"checkpoint at seq {checkpoint['seq']}" in result.reason
    assert "another hash" in result.reason
    assert result.head_hash.hex() == checkpoint["detail"]["hash"]


def test_verify_archive_finds_an_altered_archive(retained):
    config, originals = retained
    archive = config.retention.archive_dir
    removed = [c["detail"]["segment"] for c in system(config.ledger_dir, "checkpoint")]
    name = removed[1]
    data = bytearray(originals[name])
    _length, seq = fmt.parse_frame_header(data, fmt.SEGMENT_HEADER_BYTES)
    data[fmt.SEGMENT_HEADER_BYTES + fmt.FRAME_HEADER_BYTES + 2] ^= 0x01
    path = archive / archive_store.archive_name(name)
    path.write_bytes(gzip.compress(bytes(data), mtime=0))
    result = verify_ledger(config.ledger_dir, archive)
    assert not result.ok
    assert (result.first_bad_seq, result.file) == (seq, str(path))
    assert "chain hash" in result.reason

    # A cut archive (its gzip stream ends early) is damage too, at the seq it stops in.
    whole = gzip.compress(originals[name], mtime=0)
    path.write_bytes(whole[: len(whole) // 2])
    result = verify_ledger(config.ledger_dir, archive)
    assert not result.ok and result.file == str(path)
    assert fmt.parse_segment_name(name) <= result.first_bad_seq <= last_seq(originals[name])


def last_seq(segment: bytes) -> int:
    pos, seq = fmt.SEGMENT_HEADER_BYTES, 0
    while pos < len(segment):
        length, seq = fmt.parse_frame_header(segment, pos)
        pos += fmt.FRAME_OVERHEAD + length
    return seq


def test_verify_archive_compares_a_segment_archived_and_live(retained):
    config, originals = retained
    archive = config.retention.archive_dir
    _first, live = list_segments(config.ledger_dir)[0]
    assert (archive / archive_store.archive_name(live.name)).exists()
    # The live copy is read for the chain; the archived one must be the same bytes.
    data = bytearray(originals[live.name])
    data[fmt.SEGMENT_HEADER_BYTES + fmt.FRAME_HEADER_BYTES + 2] ^= 0x01
    path = archive / archive_store.archive_name(live.name)
    path.write_bytes(gzip.compress(bytes(data), mtime=0))
    result = verify_ledger(config.ledger_dir, archive)
    assert not result.ok and result.file == str(path)
    assert result.first_bad_seq == fmt.parse_segment_name(live.name)
    assert "differs from the live segment" in result.reason


def test_verify_archive_reports_a_missing_archive_as_a_gap(retained):
    config, _originals = retained
    archive = config.retention.archive_dir
    removed = [c["detail"]["segment"] for c in system(config.ledger_dir, "checkpoint")]
    assert len(removed) >= 3
    middle = removed[1]
    (archive / archive_store.archive_name(middle)).unlink()
    result = verify_ledger(config.ledger_dir, archive)
    assert not result.ok
    assert result.first_bad_seq == fmt.parse_segment_name(middle)
    assert result.file == str(archive / archive_store.archive_name(removed[2]))
    assert f"expected {fmt.parse_segment_name(middle)}" in result.reason


def test_verify_archive_starts_from_the_earliest_checkpoint_of_a_pruned_archive(retained):
    config, _originals = retained
    archive = config.retention.archive_dir
    checkpoints = [c["detail"] for c in system(config.ledger_dir, "checkpoint")]
    (archive / archive_store.archive_name(checkpoints[0]["segment"])).unlink()
    result = verify_ledger(config.ledger_dir, archive)
    assert result.ok, result.as_json()
    assert result.start.seq == checkpoints[0]["last_seq"]
    assert result.start.hash.hex() == checkpoints[0]["hash"]


def test_verify_archive_checks_bytes_against_the_archived_entry(retained):
    # A header's reserved field changed and its check recomputed: the chain
    # still verifies, only the BLAKE3 that the archived entry recorded differs.
    config, originals = retained
    archive = config.retention.archive_dir
    archived = {e["detail"]["segment"]: e["seq"] for e in system(config.ledger_dir, "archived")}
    name = system(config.ledger_dir, "checkpoint")[0]["detail"]["segment"]
    data = bytearray(originals[name])
    data[10:12] = b"\x00\x01"
    data[56:64] = blake3(bytes(data[:56])).digest()[:8]
    path = archive / archive_store.archive_name(name)
    path.write_bytes(gzip.compress(bytes(data), mtime=0))
    result = verify_ledger(config.ledger_dir, archive)
    assert not result.ok, result.as_json()
    assert (result.first_bad_seq, result.file) == (fmt.parse_segment_name(name), str(path))
    assert f"archived entry (seq {archived[name]})" in result.reason


# --------------------------------------------------------------------------- crash and restart


def test_crash_between_checkpoint_and_deletion_is_finished_at_the_next_start(tmp_path, monkeypatch):
    archive = tmp_path / "archive"
    archive.mkdir()
    config = config_for(tmp_path, archive_dir=archive, archive_after_days=1, remove_after_days=2)
    build(config.ledger_dir)
    held: list[Path] = []

    def crash_before_unlink(path: Path) -> None:
        # Whenever a deletion comes, its checkpoint is already durable on disk.
        on_disk = {e["detail"]["segment"] for e in system(config.ledger_dir, "checkpoint")}
        assert path.name in on_disk
        held.append(path)

    monkeypatch.setattr(retention, "remove_segment", crash_before_unlink)
    gw = start(config, T0 + 84 * HOUR_US)
    stop(gw)
    checkpoints = system(config.ledger_dir, "checkpoint")
    assert checkpoints and held == [config.ledger_dir / c["detail"]["segment"] for c in checkpoints]
    assert all(path.exists() for path in held)
    # Checkpoints recorded, files still there: consistent, verifies from genesis.
    result = verify_ledger(config.ledger_dir)
    assert result.ok and result.start.seq == 0

    monkeypatch.undo()
    gw = start(config, T0 + 84 * HOUR_US)
    stop(gw)
    assert not any(path.exists() for path in held)
    assert system(config.ledger_dir, "checkpoint") == checkpoints  # none recorded twice
    result = verify_ledger(config.ledger_dir)
    assert result.ok, result.as_json()
    assert result.start.seq == checkpoints[-1]["detail"]["last_seq"]


def test_state_file_is_a_hint(retained):
    config, _originals = retained
    state = config.state_dir / retention.STATE_FILE
    data = json.loads(state.read_text())
    assert data["seq"] > 0
    # A state that does not match the ledger is dropped and the ledger read again.
    state.write_text(json.dumps({**data, "hash": "00" * 32}))
    gw = start(config, T0 + 84 * HOUR_US)
    stop(gw)
    assert len(system(config.ledger_dir, "archived")) == len(
        {e["detail"]["segment"] for e in system(config.ledger_dir, "archived")}
    )
    state.write_text("not json")
    gw = start(config, T0 + 84 * HOUR_US)
    stop(gw)
    assert verify_ledger(config.ledger_dir).ok


def test_an_archive_that_no_longer_matches_blocks_removal(tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    config = config_for(tmp_path, archive_dir=archive, archive_after_days=1, remove_after_days=2)
    build(config.ledger_dir)
    gw = start(config, T0 + 36 * HOUR_US)  # archives the first day, removes nothing
    oldest = system(gw, "archived")[0]["detail"]
    (archive / oldest["archive_file"]).write_bytes(gzip.compress(b"something else"))
    set_wall(gw, T0 + 84 * HOUR_US)
    gw.retention.check_now()
    pump(gw, lambda: gw.retention.idle)
    assert "does not match" in gw.retention.error
    assert gw.status()["retention"]["error"] == gw.retention.error
    stop(gw)
    assert not system(config.ledger_dir, "checkpoint")
    assert (config.ledger_dir / oldest["segment"]).exists()


def test_removal_without_an_archive_when_allowed(tmp_path):
    config = config_for(tmp_path, remove_unarchived=True, remove_after_days=2)
    build(config.ledger_dir)
    gw = start(config, T0 + 84 * HOUR_US)
    stop(gw)
    checkpoints = [c["detail"] for c in system(config.ledger_dir, "checkpoint")]
    assert checkpoints and not system(config.ledger_dir, "archived")
    assert all(c["archive_file"] is None and c["archived_seq"] is None for c in checkpoints)
    result = verify_ledger(config.ledger_dir)
    assert result.ok and result.start.seq == checkpoints[-1]["last_seq"]


# --------------------------------------------------------------------------- readers after removal


def test_export_query_show_and_the_index_after_removal(tmp_path, capsys):
    archive = tmp_path / "archive"
    archive.mkdir()
    config = config_for(
        tmp_path, index_on=True, archive_dir=archive, archive_after_days=1, remove_after_days=2
    )
    build(config.ledger_dir)
    gw = Gateway(config)
    set_wall(gw, T0 + 84 * HOUR_US)
    gw.start()
    settle(gw)
    # Nothing the index has not read yet is removed.
    pump(gw, lambda: gw.indexer.indexed == gw.ledger.durable.seq)
    run_retention(gw, T0 + 84 * HOUR_US)
    stop(gw)
    base = LedgerReader(config.ledger_dir).base()
    assert base.seq > 0

    code, out = cli("export", "--state", str(config.state_dir), capsys=capsys)
    exported = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and exported[0]["seq"] == base.seq + 1
    code, out = cli("export", "--from-seq", "1", "--to-seq", str(base.seq + 2),
                    "--state", str(config.state_dir), capsys=capsys)  # fmt: skip
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [base.seq + 1, base.seq + 2]

    assert read_entry(config.ledger_dir, base.seq + 1)["seq"] == base.seq + 1
    assert read_entry(config.ledger_dir, base.seq) is None
    code = cli_main(["show", str(base.seq), "--state", str(config.state_dir)])
    assert code == 1 and "removed from the live ledger by retention" in capsys.readouterr().err
    code = cli_main(["show", str(base.seq + 1), "--state", str(config.state_dir)])
    assert code == 0 and f"{base.seq + 1}" in capsys.readouterr().out

    # The index still holds the removed entries; --verify says where they went.
    rows = run(config.state_dir, Filters(kind="event", limit=1000, order="asc")).rows
    assert rows[0]["seq"] == 1
    problems = verify_rows(config.ledger_dir, rows)
    assert problems == [
        f"seq {r['seq']}: removed from the live ledger by retention"
        for r in rows
        if r["seq"] <= base.seq
    ]
    assert verify_rows(config.ledger_dir, [r for r in rows if r["seq"] > base.seq]) == []

    # A query checks what is live and says which rows it could not check.
    code, out = cli("query", "--kind", "event", "--format", "jsonl", "--limit", "1000",
                    "--state", str(config.state_dir), capsys=capsys)  # fmt: skip
    printed = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [p["seq"] for p in printed] == [r["seq"] for r in rows]
    assert all(
        (p == {"seq": p["seq"], "not_checked": "removed from the live ledger by retention"})
        == (p["seq"] <= base.seq)
        for p in printed
    )

    # Rebuilt from the live ledger, the index starts at its oldest segment.
    head = LedgerReader(config.ledger_dir).head().seq
    assert cli_main(["reindex", "--state", str(config.state_dir)]) == 0
    assert f"indexed {head - base.seq} entries" in capsys.readouterr().out
    rows = run(config.state_dir, Filters(limit=1000, order="asc")).rows
    assert [r["seq"] for r in rows] == list(range(base.seq + 1, head + 1))
    follower = LedgerFollower(config.ledger_dir, 1)
    assert follower.read(3, 10**9)[0][0] == base.seq + 1


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("retention: {remove_after_days: 30}", "retention.remove_after_days"),
        ("retention: {archive_dir: /a, archive_after_days: 9, remove_after_days: 5}",
         "retention.remove_after_days"),
        ("retention: {archive_dir: /a, remove_unarchived: true}", "retention.remove_unarchived"),
        ("retention: {archive_dir: /a, remove_after_days: 1}", "retention.remove_after_days"),
        ("retention: {check_interval_s: 5}", "retention.check_interval_s"),
        ("retention: {archive_after_days: -1}", "retention.archive_after_days"),
    ],
)  # fmt: skip
def test_unsafe_or_bad_retention_is_refused_naming_the_key(tmp_path, text, key):
    path = tmp_path / "gateway.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == key and str(path) in str(caught.value)


def test_removal_without_an_archive_needs_saying_so(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text("retention: {remove_after_days: 30, remove_unarchived: true}\n")
    retention_config = load_config(path).retention
    assert retention_config.remove_after_days == 30 and retention_config.archive_dir is None
    defaults = load_config(None, tmp_path).retention
    assert defaults == RetentionConfig() and not defaults.active


def test_example_configuration_documents_every_retention_key():
    root = Path(__file__).resolve().parent.parent
    keys = {f for f in RetentionConfig.__dataclass_fields__}
    for doc in ("etc/gateway.yaml", "README.md"):
        text = (root / doc).read_text(encoding="utf-8")
        assert all(re.search(rf"\b{k}:", text) for k in keys), doc


# --------------------------------------------------------------------------- end to end


def test_ingest_goes_on_while_a_pass_is_archiving(tmp_path, monkeypatch):
    archive = tmp_path / "archive"
    archive.mkdir()
    config = config_for(tmp_path, archive_dir=archive, archive_after_days=0)
    gw = Gateway(config)
    address = gw.start()[0]
    in_pass, release = threading.Event(), threading.Event()
    write_archive = archive_store.write_archive

    def held(segment: Path, archive_dir: Path, stop: threading.Event) -> dict:
        in_pass.set()
        assert release.wait(30), "the test never released the pass"
        return write_archive(segment, archive_dir, stop)

    monkeypatch.setattr(archive_store, "write_archive", held)

    def feed(first: int, n: int) -> None:
        before = gw.ingest.stats.events
        with socket.create_connection(address) as c:
            c.sendall(
                b"".join(b'{"event_type":"tick","i":%d}\n' % i for i in range(first, first + n))
            )
        pump(gw, lambda: gw.ingest.stats.events == before + n)
        settle(gw)

    try:
        feed(0, 100)  # several segments
        gw.retention.check_now()
        pump(gw, in_pass.is_set)
        # The retention thread is held inside its first archive: events still go in.
        head = gw.ledger.durable.seq
        feed(100, 100)
        assert gw.ledger.durable.seq >= head + 100 and not gw.retention.idle
    finally:
        release.set()
    run_retention(gw, time.time_ns() // 1000)
    segments = len(list_segments(config.ledger_dir))  # before the stop's own entries
    stop(gw)
    found = decoded(config.ledger_dir)
    events = [e["seq"] for e in found if e["kind"] == "event"]
    archived = [e["seq"] for e in found if e["kind"] == "system" and e.get("name") == "archived"]
    assert len(events) == 200 and len(archived) == segments - 1
    assert archived[0] > events[-1]  # recorded after the events that came in meanwhile
    result = verify_ledger(config.ledger_dir, archive)
    assert result.ok and result.overlaps == len(archived)


def test_a_gateway_process_archives_after_a_reload(tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    gw = GatewayProcess(tmp_path, ledger={"segment_bytes": 65536})
    try:
        lines = b"".join(
            json.dumps({"event_type": "tick", "i": i, "pad": "x" * 200}).encode() + b"\n"
            for i in range(1500)
        )
        sent = run_gateway_command("send", "--ack", "--port", str(gw.port), input=lines)
        assert sent.returncode == 0, sent.stderr
        config = {**gw.config, "retention": {"archive_dir": str(archive), "archive_after_days": 0}}
        gw.config_path.write_text(json.dumps(config), encoding="utf-8")
        gw.proc.send_signal(signal.SIGHUP)  #: the reload applies retention and starts a pass
        segments = wait_for(
            lambda: len(list(archive.glob("*.seg.gz"))) >= 3 and list(archive.glob("*.seg.gz")),
            30,
            "archives",
        )
        gw.wait_export(
            lambda found: sum(e.get("name") == "archived" for e in found) >= len(segments),
            what="archived entries",
        )
        done = run_gateway_command("verify", "--json", "--archive", str(archive),
                                   "--config", str(gw.config_path))  # fmt: skip
        result = json.loads(done.stdout)
        assert done.returncode == 0 and result["ok"] and result["archive"]["overlaps"] >= 3
        status = json.loads(
            run_gateway_command("status", "--json", "--config", str(gw.config_path)).stdout
        )
        assert status["retention"]["active"] and status["retention"]["error"] == ""
    finally:
        assert gw.close() == 0


def test_verify_archive_of_a_missing_directory_is_an_error(tmp_path):
    config = config_for(tmp_path)
    build(config.ledger_dir, 3)
    done = subprocess.run(
        [*_gateway(), "verify", "--archive", str(tmp_path / "nowhere"), "--state",
         str(config.state_dir)], capture_output=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and b"no archive directory" in done.stderr


def _gateway() -> list[str]:
    from gatewayproc import gateway_command

    return gateway_command()


def test_the_documented_verifier_starts_from_a_checkpoint_or_reads_the_archive(retained, tmp_path):
    from test_ledger_verify import doc_verifier

    config, _originals = retained
    verify = doc_verifier()
    result = verify_ledger(config.ledger_dir)
    head = (result.head_seq, result.head_hash.hex())
    checkpoint = system(config.ledger_dir, "checkpoint")[-1]["detail"]
    assert verify(str(config.ledger_dir), checkpoint["last_seq"], checkpoint["hash"]) == head
    with pytest.raises(ValueError, match=rf"^seq {checkpoint['last_seq'] + 1}:"):
        verify(str(config.ledger_dir), checkpoint["last_seq"], "00" * 32)
    with pytest.raises(ValueError, match=r"^seq 1:"):
        verify(str(config.ledger_dir))  # from genesis, the removed history is missing
    # The archive decompressed beside copies of the live segments: from genesis again.
    whole = tmp_path / "whole"
    whole.mkdir()
    for _first, path in archive_store.list_archives(config.retention.archive_dir):
        with gzip.open(path, "rb") as f:
            (whole / path.name[: -len(archive_store.ARCHIVE_SUFFIX)]).write_bytes(f.read())
    for _first, path in list_segments(config.ledger_dir):
        (whole / path.name).write_bytes(path.read_bytes())
    assert verify(str(whole)) == head


def test_anchors_at_removed_seqs_are_found_in_the_archive(retained, tmp_path, capsys):
    config, originals = retained
    base = LedgerReader(config.ledger_dir).base()
    copy = tmp_path / "original-first-segment"
    copy.mkdir()
    first = sorted(originals)[0]
    (copy / first).write_bytes(originals[first])
    (_seq, _payload, digest), *_ = LedgerReader(copy).entries(2, 2)
    anchor = f"2:{digest.hex()[:16]}"
    assert base.seq >= 2  # removed from the live ledger
    state = ["--state", str(config.state_dir)]
    assert cli_main(["verify", "--expect", anchor, *state]) == 1
    assert "not in the ledger (or in an archive: --archive)" in capsys.readouterr().out
    archive = str(config.retention.archive_dir)
    assert cli_main(["verify", "--archive", archive, "--expect", anchor, *state]) == 0
    assert f"anchor {anchor}: on the chain" in capsys.readouterr().out
    wrong = f"2:{'0' * 16}"
    assert cli_main(["verify", "--archive", archive, "--expect", wrong, *state]) == 1
