"""`gateway fleet restore --box NAME`: a new box's ledger continues a replaced box's chain.

On an empty state directory: every replicated segment of the box is
downloaded (one content per segment, or the restore refuses: run `gateway
fleet verify` first), the chain is verified from genesis, a new segment is
started after the last replicated entry, and its first entry, a `restored`
system entry, records where the chain was taken from and which seqs the
store's checkpoints show beyond it (entries that were only on the old card:
they are lost, and `fleet verify` will name those checkpoints as not on the
chain). docs/fleet.md, "A replaced box", is the procedure.
"""

from __future__ import annotations

import os
import time
from typing import Any

from gateway.config import Config
from gateway.errors import GatewayError
from gateway.fleet.s3 import S3Client
from gateway.ledger import entries
from gateway.ledger.store import SEGMENT_MODE, LedgerWriter, list_segments, write_entries
from gateway.ledger.verify import verify_ledger
from gateway.statedir import lock_state_dir

__all__ = ["restore_box"]


def restore_box(client: S3Client, box: str, config: Config) -> dict[str, Any]:
    from gateway.fleet.hq import _distinct, _versions

    lock = lock_state_dir(config.state_dir)
    try:
        ledger_dir = config.ledger_dir
        if list_segments(ledger_dir):
            raise GatewayError(f"{ledger_dir} already holds a ledger: restore needs an empty one")
        objects = _versions(client, f"{box}/")
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
            "segments": len(seg_keys),
            "head_seq": result.head_seq,
            "head_hash": result.head_hash.hex(),
            "latest_checkpoint_seq": latest,
            "lost": [result.head_seq + 1, latest] if latest > result.head_seq else None,
        }
        writer = LedgerWriter(
            ledger_dir,
            segment_bytes=config.ledger.segment_bytes,
            per_entry_sync=False,
            clock=time.monotonic,
        )
        writer.open()
        writer.seal_segment()  # the downloaded segments stay exactly as replicated
        payload = entries.encode_record(
            entries.SYSTEM, time.time_ns() // 1000, {"name": "restored", "detail": detail}
        )
        write_entries(writer, [payload])
        return detail
    finally:
        os.close(lock)
