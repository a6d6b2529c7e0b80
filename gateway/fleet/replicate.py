"""Replication: sealed segments, their metadata and signed checkpoints to S3 Object Lock storage.

The loop side (on_durable, on_note, statistics, health, keep_from) only
records what it heard and reads what the upload thread reported; the thread
does every request and every read of a segment file, and hands results back
through the loop's post. Bucket layout (docs/fleet.md):

    <box>/identity.json                  the box's verifier key (a new version if it changes)
    <box>/segments/<segment name>        the segment file's bytes
    <box>/segments/<segment name>.json   its metadata: seqs, hashes, BLAKE3, size
    <box>/checkpoints/<seq, 20 digits>.note   a signed checkpoint note

Each object goes up in one PUT with Content-MD5 and a COMPLIANCE retention
until now + fleet.retain_days, and counts as replicated only once its
version's retention has been read back as COMPLIANCE until at least that
date (Ceph ignores lock headers in some requests: never trust the request).
A restart, or the store coming back, begins with a listing of the box's
objects: whatever the store already holds with the same MD5 and a lock is
not sent again. Uploads wait while the clock is unsynchronised (SigV4
refuses over 15 minutes of skew, and the retain-until date would be wrong).
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import datetime as dt
import hashlib
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blake3 import blake3

from gateway.config import Config
from gateway.errors import GatewayError
from gateway.fleet.identity import BoxIdentity
from gateway.fleet.s3 import (
    SEND_CHUNK_BYTES,
    S3Client,
    S3Error,
    S3Unavailable,
    digests,
    load_credentials,
)
from gateway.ledger import format as fmt
from gateway.ledger.commit import DurableBatch, Ledger
from gateway.ledger.store import SegmentReader, list_segments
from gateway.loop import EventLoop

log = logging.getLogger("gateway.ops")

__all__ = ["Replicator", "checkpoint_key", "segment_key"]

# After an error the thread tries again after 1 s, doubling up to 60 s: an
# outage costs at most a minute of extra lag once the store is back.
RETRY_START_S = 1.0
RETRY_CAP_S = 60.0
# Without news from the loop the thread looks again this often (a seal by
# age or a note wakes it at once).
IDLE_RESCAN_S = 30.0
# A read-back retain-until may be this much earlier than the date asked for
# (stores keep whole seconds; clocks of store and box differ a little).
RETAIN_SLACK_S = 120
# Segments are hashed and walked in 64 KiB pieces, the size they are sent in
# (memory flat at any segment size). Each piece stays under glibc's initial
# mmap threshold (128 KiB): a larger transient buffer (a 1 MiB hashing read, the
# segment reader's 4 MiB chunk) is mmapped once, and freeing it raises the
# threshold, after which every such buffer comes from the heap and fragments it;
# a `gateway run` replicating a backlog grew by ~1 MB of freed-but-kept heap per
# 1 MiB segment that way (bench/RESULTS.md, fleet section; docs/fleet.md).
HASH_CHUNK_BYTES = SEND_CHUNK_BYTES
# The thread is given this long to finish its request at close.
CLOSE_TIMEOUT_S = 10.0
LOCK_MODE = "COMPLIANCE"
# The upload thread's nice value (the loop keeps 0): 10 is what background
# work such as logrotate and man-db get on Debian.
UPLOADER_NICE = 10


def _malloc_trim() -> Callable[[], None]:
    """glibc's malloc_trim(0), or a no-op where there is none (musl, other systems)."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0) and None


# After each segment the thread hands the whole pages of free heap chunks
# back to the kernel: what replicating frees is mostly in holes between small
# live allocations that glibc keeps (docs/fleet.md, "Memory").
release_free_heap = _malloc_trim()


def segment_key(box: str, name: str) -> str:
    return f"{box}/segments/{name}"


def checkpoint_key(box: str, seq: int) -> str:
    return f"{box}/checkpoints/{seq:020d}.note"


def identity_key(box: str) -> str:
    return f"{box}/identity.json"


@dataclass(frozen=True)
class SegmentFacts:
    name: str
    first_seq: int
    last_seq: int
    first_prev_hash: str
    last_hash: str
    blake3: str
    md5: str
    bytes: int

    def metadata(self, box: str, fingerprint: str) -> bytes:
        return json.dumps(
            {
                "box": box,
                "segment": self.name,
                "first_seq": self.first_seq,
                "last_seq": self.last_seq,
                "first_prev_hash": self.first_prev_hash,
                "last_hash": self.last_hash,
                "blake3": self.blake3,
                "bytes": self.bytes,
                "key_fingerprint": fingerprint,
            },
            sort_keys=True,
        ).encode()


def segment_facts(path: Path) -> SegmentFacts:
    """Seqs and hashes of a sealed segment, and its BLAKE3 and MD5.

    Two passes over the file, each in HASH_CHUNK_BYTES pieces: the digests read
    into one buffer, the frames are walked with a reader of that chunk size.
    """
    b3 = blake3()
    md5 = hashlib.md5()
    size = 0
    buffer = memoryview(bytearray(HASH_CHUNK_BYTES))
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            piece = buffer[:n]
            b3.update(piece)
            md5.update(piece)
            size += n
    last_seq, last_hash = 0, b""
    with SegmentReader(path, chunk_bytes=HASH_CHUNK_BYTES) as reader:
        header = reader.read_header()
        last_seq, last_hash = header.first_seq - 1, header.prev_hash
        for _offset, seq, _stored, chain in reader.frames():
            last_seq, last_hash = seq, bytes(chain)
    return SegmentFacts(
        path.name,
        header.first_seq,
        last_seq,
        header.prev_hash.hex(),
        last_hash.hex(),
        b3.hexdigest(),
        md5.hexdigest(),
        size,
    )


class Pacer:
    """The bandwidth bound: at most `rate` bytes per second on average (0: none)."""

    def __init__(self, rate: int, stop: threading.Event) -> None:
        self.rate = rate
        self.stop = stop
        self._next = 0.0

    def __call__(self, n: int) -> None:
        if not self.rate:
            return
        now = time.monotonic()
        if self._next > now and self.stop.wait(self._next - now):
            raise Stopping
        self._next = max(now, self._next) + n / self.rate


class Stopping(GatewayError):
    """The gateway is stopping: the request in progress is abandoned."""


class Replicator:
    def __init__(self, config: Config, loop: EventLoop, ledger: Ledger, identity: BoxIdentity):
        fleet = config.fleet
        self.fleet = fleet
        self.loop = loop
        self.ledger = ledger
        self.ledger_dir = config.ledger_dir
        self.identity = identity
        self.box = identity.public.box
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._notes: collections.deque[tuple[int, str]] = collections.deque()
        # Written by the loop, read by the thread (single values: no lock needed).
        self._durable_seq = ledger.durable.seq
        self._synced = loop.clock.synced
        # Reported by the thread through the loop (read on the loop only).
        self.confirmed: dict[str, str] = {}  # segment name -> md5 of the locked copy
        self.listed = False
        self.uploaded = 0  # objects put since start
        self.skipped = 0  # objects found in the store at start, not sent again
        self.bytes_uploaded = 0
        self.notes_uploaded = 0
        self.error = ""
        self.state = "starting"
        self._first_seen: dict[str, float] = {}  # sealed segment -> monotonic time seen sealed
        self._pending_bytes: dict[str, int] = {}
        self._segments_seen = ledger.writer.segments_created
        self._unsettled = True  # list once after start
        self.client: S3Client | None = None

    # ---- loop side

    def start(self) -> None:
        credentials = load_credentials(self.fleet.credentials_file)  # type: ignore[arg-type]
        self.client = S3Client(
            self.fleet.endpoint,
            self.fleet.bucket,
            credentials,
            region=self.fleet.region,
            ca_file=self.fleet.ca_file,
        )
        self._thread = threading.Thread(target=self._run, name="fleet-upload", daemon=True)
        self._thread.start()
        self._refresh_sealed()

    def on_durable(self, batch: DurableBatch) -> None:
        self._durable_seq = batch.head.seq
        self._synced = self.loop.clock.synced
        # The directory is listed only when a segment was started since (no
        # syscall per batch): the one before it is sealed once this is durable.
        segments = self.ledger.writer.segments_created
        if segments != self._segments_seen or self._unsettled:
            self._segments_seen = segments
            self._unsettled = False
            if self._refresh_sealed():
                self._wake.set()

    def on_note(self, entry_seq: int, seq: int, note: str) -> None:
        self._notes.append((seq, note))
        self._wake.set()

    def _refresh_sealed(self) -> bool:
        """Note when each sealed segment was first seen (the lag's clock); True if new ones."""
        segments = list_segments(self.ledger_dir)
        new = False
        now = self.loop.clock.monotonic()
        if not segments or segments[-1][1].name != self.ledger.writer.live_segment_name:
            # A roll is staged but its file not written yet: the segment before
            # it is sealed, and the listing must be read again once it is.
            self._unsettled = True
        for (_first, path), (next_first, _p) in itertools.pairwise(segments):
            if next_first - 1 > self._durable_seq:
                self._unsettled = True  # its last entries are not durable yet: look again
                break
            if path.name not in self._first_seen:
                self._first_seen[path.name] = now
                try:
                    self._pending_bytes[path.name] = path.stat().st_size
                except OSError:
                    self._pending_bytes[path.name] = 0
                new = True
        return new

    def keep_from(self) -> int:
        """The first seq retention must keep: the oldest sealed segment not yet confirmed."""
        if not self.listed:
            return 1
        waiting = [n for n in self._first_seen if n not in self.confirmed]
        if not waiting:
            return self._durable_seq + 1
        return min(fmt.parse_segment_name(n) or 1 for n in waiting)

    def lag(self) -> tuple[int, int, float]:
        """(segments, bytes, seconds the oldest has waited) not yet confirmed."""
        now = self.loop.clock.monotonic()
        waiting = [n for n in self._first_seen if n not in self.confirmed]
        oldest = min((self._first_seen[n] for n in waiting), default=now)
        return len(waiting), sum(self._pending_bytes.get(n, 0) for n in waiting), now - oldest

    def health(self) -> str:
        segments, _bytes, waited = self.lag()
        if segments and waited > self.fleet.max_lag_s:
            return (
                f"replication is {segments} segments behind, the oldest for {waited:.0f} s "
                f"(over fleet.max_lag_s {self.fleet.max_lag_s:.0f} s)"
            )
        return ""

    def status(self) -> dict[str, Any]:
        segments, nbytes, waited = self.lag()
        state = self.state
        if not self.loop.clock.synced:
            state = "waiting: the clock is not synchronised"
        return {
            "enabled": True,
            "state": state,
            "endpoint": self.fleet.endpoint,
            "bucket": self.fleet.bucket,
            "box": self.box,
            "lag_segments": segments,
            "lag_bytes": nbytes,
            "lag_s": round(waited, 1),
            "confirmed": len(self.confirmed),
            "uploaded": self.uploaded,
            "skipped": self.skipped,
            "bytes_uploaded": self.bytes_uploaded,
            "notes_uploaded": self.notes_uploaded,
            "notes_pending": len(self._notes),
            "error": self.error,
        }

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def close(self) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join(CLOSE_TIMEOUT_S)
        if self.client is not None:
            self.client.close()

    def _report(self, **changes: Any) -> None:
        """From the thread: apply `changes` on the loop."""

        def apply() -> None:
            confirmed = changes.pop("confirm", None)
            if confirmed is not None:
                self.confirmed[confirmed[0]] = confirmed[1]
            for key in ("uploaded", "skipped", "bytes_uploaded", "notes_uploaded"):
                if key in changes:
                    setattr(self, key, getattr(self, key) + changes.pop(key))
            for key, value in changes.items():
                setattr(self, key, value)

        self.loop.post(apply)

    # ---- the upload thread

    def _run(self) -> None:
        # Hashing and sending yield to the loop when the CPU is short: the
        # uploader catches up later, acknowledgements must not wait for it.
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), UPLOADER_NICE)
        except OSError:
            pass
        delay = RETRY_START_S
        listed = False
        store: dict[str, list[str]] = {}
        done: set[str] = set()
        pace = Pacer(self.fleet.max_bytes_per_s, self._stop)
        while not self._stop.is_set():
            if not self._synced:
                self._report(state="waiting: the clock is not synchronised")
                self._wake.wait(IDLE_RESCAN_S)
                self._wake.clear()
                continue
            try:
                if not listed:
                    store = self._list_store()
                    self._put_identity(store, pace)
                    listed = True
                    self._report(listed=True)
                self._upload_notes(pace)
                self._upload_segments(store, done, pace)
                self._report(state="idle", error="")
                delay = RETRY_START_S
            except Stopping:
                return
            except (S3Error, S3Unavailable, OSError, GatewayError) as exc:
                self._report(state="retrying", error=str(exc))
                log.warning(
                    "replication failed; retrying",
                    extra={"fields": {"error": str(exc), "retry_in_s": delay}},
                )
                listed = listed and isinstance(exc, S3Error)  # after an outage: ask again
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, RETRY_CAP_S)
                continue
            self._wake.wait(IDLE_RESCAN_S)
            self._wake.clear()

    def _client(self) -> S3Client:
        assert self.client is not None
        return self.client

    def _list_store(self) -> dict[str, list[str]]:
        """key -> md5 of each locked version the store holds for this box."""
        client = self._client()
        found: dict[str, list[str]] = {}
        self._report(state="listing the store")
        for version in client.list_versions(self.box + "/"):
            if version.delete_marker:
                continue
            mode, _until = client.get_retention(version.key, version.version_id)
            if mode == LOCK_MODE:
                found.setdefault(version.key, []).append(version.etag)
        return found

    def _retain_until(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(days=self.fleet.retain_days)

    def _put_locked(self, key: str, body: bytes | Path, pace: Pacer) -> str:
        """One locked PUT, its retention read back; returns the MD5 the store holds."""
        client = self._client()
        until = self._retain_until()
        version = client.put_object(key, body, lock_mode=LOCK_MODE, retain_until=until, pace=pace)
        mode, retained = client.get_retention(key, version)
        wanted = until - dt.timedelta(seconds=RETAIN_SLACK_S)
        if mode != LOCK_MODE or retained is None or retained < wanted:
            raise GatewayError(
                f"{key} version {version} is not locked as asked ({mode or 'no lock'}, "
                f"until {retained}); the store ignored the lock headers"
            )
        _sha, md5, size = digests(body)
        self._report(uploaded=1, bytes_uploaded=size)
        return md5.hex()

    def _put_identity(self, store: dict[str, list[str]], pace: Pacer) -> None:
        body = json.dumps(self.identity.public.as_json(), sort_keys=True).encode()
        key = identity_key(self.box)
        if hashlib.md5(body).hexdigest() not in store.get(key, []):
            store.setdefault(key, []).append(self._put_locked(key, body, pace))

    def _upload_notes(self, pace: Pacer) -> None:
        while self._notes and not self._stop.is_set():
            seq, note = self._notes[0]
            self._put_locked(checkpoint_key(self.box, seq), note.encode(), pace)
            self._notes.popleft()
            self._report(notes_uploaded=1)

    def _sealed(self) -> list[Path]:
        segments = list_segments(self.ledger_dir)
        durable = self._durable_seq
        return [
            path
            for (_f, path), (next_first, _p) in itertools.pairwise(segments)
            if next_first - 1 <= durable
        ]

    def _upload_segments(self, store: dict[str, list[str]], done: set[str], pace: Pacer) -> None:
        for path in self._sealed():
            if self._stop.is_set():
                raise Stopping
            if path.name in done:
                continue
            facts = segment_facts(path)
            key = segment_key(self.box, path.name)
            meta_key = key + ".json"
            meta = facts.metadata(self.box, self.identity.public.fingerprint)
            have = store.get(key, [])
            if facts.md5 in have and hashlib.md5(meta).hexdigest() in store.get(meta_key, []):
                self._report(skipped=1, confirm=(path.name, facts.md5))
                done.add(path.name)
                continue
            self._report(state=f"uploading {path.name}")
            if facts.md5 not in have:
                store.setdefault(key, []).append(self._put_locked(key, path, pace))
            if hashlib.md5(meta).hexdigest() not in store.get(meta_key, []):
                store.setdefault(meta_key, []).append(self._put_locked(meta_key, meta, pace))
            done.add(path.name)
            self._report(confirm=(path.name, facts.md5))
            release_free_heap()
