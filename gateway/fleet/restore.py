"""`gateway fleet restore --box NAME`: a new box's ledger continues a replaced box's chain.

On an empty state directory, in full (the default): every replicated segment
of the box is downloaded (one content per segment, or the restore refuses:
run `gateway fleet verify` first), the chain is verified from genesis, a new
segment is started after the last replicated entry, and its first entry, a
`restored` system entry, records where the chain was taken from and which
seqs the store's checkpoints show beyond it (entries that were only on the
old card: they are lost, and `fleet verify` will name those checkpoints as
not on the chain).

With `head_only`, only the head is taken: the latest replicated segment (and
the few before it back to the latest signed checkpoint at or below its last
seq) is downloaded into a scratch directory, never kept. The head is trusted
when (1) the key backup in the state directory, if there is one, is the key
the box published first (`<box>/identity.json`); (2) a checkpoint note signed
by that key lies on the downloaded chain; (3) the downloaded segments chain
frame by frame from that checkpoint to their last entry; and (4) a metadata
version of the latest segment (`.seg.json`) describes exactly those bytes:
BLAKE3, size, first and last seq and hash. The new ledger then starts at
last seq + 1 from that hash (store.start_ledger_at), and its `restored` entry
(head_only: true) vouches for that start to `gateway verify`, as a retention
checkpoint does. docs/fleet.md, "A replaced box", is the procedure.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import nacl.signing
from blake3 import blake3

from gateway.config import Config
from gateway.errors import GatewayError
from gateway.fleet.identity import BOX_KEY_FILE, PublicIdentity
from gateway.fleet.note import NoteError, verify_note
from gateway.fleet.s3 import ObjectVersion, S3Client
from gateway.ledger import entries
from gateway.ledger import format as fmt
from gateway.ledger.store import (
    SEGMENT_MODE,
    Head,
    LedgerWriter,
    SegmentReader,
    TailState,
    list_segments,
    start_ledger_at,
    write_entries,
)
from gateway.ledger.verify import verify_ledger
from gateway.statedir import lock_state_dir

__all__ = ["restore_box"]


def restore_box(
    client: S3Client, box: str, config: Config, head_only: bool = False
) -> dict[str, Any]:
    from gateway.fleet.hq import _distinct, _versions

    lock = lock_state_dir(config.state_dir)
    try:
        ledger_dir = config.ledger_dir
        if list_segments(ledger_dir) or (ledger_dir.is_dir() and any(ledger_dir.iterdir())):
            raise GatewayError(f"{ledger_dir} is not empty: restore needs an empty ledger")
        objects = _versions(client, f"{box}/")
        if head_only:
            detail = _head_only(client, box, objects, config.state_dir)
            start_ledger_at(
                ledger_dir, Head(detail["head_seq"], bytes.fromhex(detail["head_hash"]))
            )
            _append_restored(ledger_dir, config, detail)
            return detail
        seg_keys = sorted(
            k for k in objects if k.startswith(f"{box}/segments/") and k.endswith(".seg")
        )
        if not seg_keys:
            raise GatewayError(f"the store holds no segment of box {box!r}")
        ledger_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        for key in seg_keys:
            contents = _distinct(objects[key])
            if len(contents) > 1:
                raise GatewayError(
                    f"{key} has {len(contents)} different contents: run gateway fleet verify"
                )
            path = ledger_dir / key.rsplit("/", 1)[1]
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SEGMENT_MODE)
            with open(fd, "wb") as f:
                f.write(client.get_object(key, contents[0].version_id))
                f.flush()
                os.fsync(f.fileno())
        result = verify_ledger(ledger_dir, jobs=1)
        if not result.ok:
            raise GatewayError(
                f"the replicated chain does not verify: seq {result.first_bad_seq} in "
                f"{result.file}: {result.reason}"
            )
        notes = [k for k in objects if k.startswith(f"{box}/checkpoints/")]
        latest = max((int(k.rsplit("/", 1)[1].split(".")[0]) for k in notes), default=0)
        detail: dict[str, Any] = {
            "box": box,
            "endpoint": client.host_header,
            "bucket": client.bucket,
            "head_only": False,
            "segments": len(seg_keys),
            "head_seq": result.head_seq,
            "head_hash": result.head_hash.hex(),
            "latest_checkpoint_seq": latest,
            "lost": [result.head_seq + 1, latest] if latest > result.head_seq else None,
        }
        _append_restored(ledger_dir, config, detail, seal=True)
        return detail
    finally:
        os.close(lock)


def _append_restored(
    ledger_dir: Path, config: Config, detail: dict[str, Any], seal: bool = False
) -> None:
    """The `restored` entry, the first of the new box's own."""
    writer = LedgerWriter(
        ledger_dir,
        segment_bytes=config.ledger.segment_bytes,
        per_entry_sync=False,
        clock=time.monotonic,
    )
    writer.open()
    if seal:
        writer.seal_segment()  # the downloaded segments stay exactly as replicated
    payload = entries.encode_record(
        entries.SYSTEM, time.time_ns() // 1000, {"name": "restored", "detail": detail}
    )
    write_entries(writer, [payload])


def _published_key(
    client: S3Client, box: str, objects: dict[str, list[ObjectVersion]], state_dir: Path
) -> tuple[PublicIdentity, str]:
    """The key the box published first, checked against the key backup when there is one.

    Returns (key, where it is trusted from: "key backup" or "store").
    """
    from gateway.fleet.hq import _distinct

    key_obj = f"{box}/identity.json"
    versions = _distinct(objects.get(key_obj, []))
    if not versions:
        raise GatewayError(f"{key_obj} is missing: the box's key is unknown")
    data = json.loads(client.get_object(key_obj, versions[0].version_id))
    published = PublicIdentity(box, base64.b64decode(data["public_key"]))
    try:
        seed = (state_dir / BOX_KEY_FILE).read_bytes()
    except FileNotFoundError:
        return published, "store"
    if len(seed) != 32:
        raise GatewayError(f"{state_dir / BOX_KEY_FILE} is not a 32-byte key")
    backup = bytes(nacl.signing.SigningKey(seed).verify_key)
    if backup != published.public_key:
        raise GatewayError(
            f"the key backup in {state_dir} is not the key box {box!r} published first "
            f"({published.fingerprint[:16]}): this is another box's key, or the box's "
            "key was replaced"
        )
    return published, "key backup"


def _walk(paths: list[Path], wanted: int) -> tuple[Head, bytes | None]:
    """Walk segments in order, checking every frame and link; (last entry, hash at `wanted`).

    The first segment's header is taken as given (its prev_hash is checked by
    whatever vouches for `wanted`); every later header must continue the chain.
    """
    head: Head | None = None
    at_wanted: bytes | None = None
    for path in paths:
        with SegmentReader(path) as reader:
            try:
                header = reader.read_header()
            except (EOFError, fmt.HeaderDamaged) as exc:
                raise GatewayError(f"{path.name}: {exc or 'header incomplete'}") from None
            if header.first_seq != fmt.parse_segment_name(path.name):
                raise GatewayError(f"{path.name}: the header's first_seq is not its name's")
            start = Head(header.first_seq - 1 - header.skipped, header.prev_hash)
            if head is None:
                head = start
            elif header.skipped or start != head:
                raise GatewayError(f"{path.name} does not continue the chain of the one before")
            if head.seq == wanted:
                at_wanted = head.hash
            prev = head.hash
            for _offset, seq, stored, digest in reader.frames():
                if fmt.chain_hash(prev, stored) != digest:
                    raise GatewayError(f"{path.name}: the chain hash of seq {seq} does not match")
                prev = bytes(digest)
                head = Head(seq, prev)
                if seq == wanted:
                    at_wanted = prev
            if reader.tail != TailState.CLEAN:
                raise GatewayError(f"{path.name}: {reader.damage or reader.tail + ' tail'}")
    assert head is not None
    return head, at_wanted


def _head_only(
    client: S3Client, box: str, objects: dict[str, list[ObjectVersion]], state_dir: Path
) -> dict[str, Any]:
    """The replicated head of `box`, checked (module docstring), and the restored entry's detail."""
    from gateway.fleet.hq import _distinct

    prefix = f"{box}/segments/"
    segs = sorted(
        (fmt.parse_segment_name(k[len(prefix) :]), k)
        for k in objects
        if k.startswith(prefix) and fmt.parse_segment_name(k[len(prefix) :]) is not None
    )
    if not segs:
        raise GatewayError(f"the store holds no segment of box {box!r}")
    key, key_from = _published_key(client, box, objects, state_dir)
    last_first, last_key = segs[-1]
    metas = [
        json.loads(client.get_object(last_key + ".json", v.version_id))
        for v in _distinct(objects.get(last_key + ".json", []))
    ]
    if not metas:
        raise GatewayError(f"{last_key}.json is missing: the head is not described")
    if len(metas) > 1:  # the box writes one deterministic metadata object per segment
        raise GatewayError(
            f"{last_key}.json has {len(metas)} different versions: run gateway fleet verify"
        )
    notes_prefix = f"{box}/checkpoints/"
    note_seqs = sorted(
        (int(k[len(notes_prefix) :].split(".")[0]), k)
        for k in objects
        if k.startswith(notes_prefix) and k[len(notes_prefix) :].split(".")[0].isdigit()
    )
    with tempfile.TemporaryDirectory(prefix="fleet-restore-") as scratch:

        def download(seg_key: str) -> Path:
            contents = _distinct(objects[seg_key])
            if len(contents) > 1:
                raise GatewayError(
                    f"{seg_key} has {len(contents)} different contents: run gateway fleet verify"
                )
            path = Path(scratch) / seg_key.rsplit("/", 1)[1]
            path.write_bytes(client.get_object(seg_key, contents[0].version_id))
            return path

        # The latest segment's own chain gives the head; the anchor is the latest
        # checkpoint the box signed at or below it.
        last_path = download(last_key)
        last_body = last_path.read_bytes()
        head, _unused = _walk([last_path], 0)
        below = [(seq, k) for seq, k in note_seqs if seq <= head.seq]
        if not below:
            raise GatewayError(
                f"no checkpoint of box {box!r} at or below seq {head.seq}: nothing signed "
                "vouches for the head; restore in full (without --head-only)"
            )
        cp_seq, cp_key = below[-1]
        signed: set[bytes] = set()
        for version in _distinct(objects[cp_key]):
            try:
                signed.add(verify_note(client.get_object(cp_key, version.version_id), key).hash)
            except NoteError as exc:
                raise GatewayError(f"{cp_key}: checkpoint refused: {exc}") from None
        if len(signed) != 1:
            raise GatewayError(f"{cp_key}: two checkpoints sign different heads (a fork)")
        # From the segment that holds the checkpoint's seq (its header holds seq
        # first - 1) to the latest: usually the latest alone.
        holder = max((f for f, _k in segs if f - 1 <= cp_seq), default=segs[0][0])
        needed = [k for f, k in segs if f >= holder]
        paths = [download(k) for k in needed[:-1]] + [last_path]
        walked, at_cp = _walk(paths, cp_seq)
    if walked != head or at_cp is None or at_cp not in signed:
        raise GatewayError(
            f"the replicated chain does not pass through the signed checkpoint at seq {cp_seq} "
            f"({cp_key})"
        )
    facts = {
        "first_seq": last_first,
        "first_prev_hash": fmt.decode_segment_header(last_body).prev_hash.hex(),
        "last_seq": head.seq,
        "last_hash": head.hash.hex(),
        "blake3": blake3(last_body).hexdigest(),
        "bytes": len(last_body),
        "key_fingerprint": key.fingerprint,
    }
    if not any(all(m.get(k) == v for k, v in facts.items()) for m in metas):
        raise GatewayError(
            f"no metadata version of {last_key} ({last_key}.json) describes the segment: "
            f"it holds seqs {last_first} to {head.seq}, last hash {head.hash.hex()[:16]}, "
            f"BLAKE3 {facts['blake3'][:16]}, {len(last_body)} bytes"
        )
    latest = note_seqs[-1][0]
    return {
        "box": box,
        "endpoint": client.host_header,
        "bucket": client.bucket,
        "head_only": True,
        "segments": len(segs),
        "segments_downloaded": len(needed),
        "head_seq": head.seq,
        "head_hash": head.hash.hex(),
        "head_segment": last_key,
        "checkpoint_seq": cp_seq,
        "key_fingerprint": key.fingerprint,
        "key_from": key_from,
        # Where the entries before the new ledger are: the store's copies.
        "earlier": {"prefix": prefix, "first_seq": segs[0][0], "last_seq": head.seq},
        "latest_checkpoint_seq": latest,
        "lost": [head.seq + 1, latest] if latest > head.seq else None,
    }
