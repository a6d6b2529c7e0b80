"""Replication to a real Ceph RGW with Object Lock: what reaches the store, locked, and once.

Each test runs real `gateway run` processes with small segments, replicating
into a fresh bucket of the session's Ceph store (tests/cephrgw.py).
"""

from __future__ import annotations

import pytest
from fleetsupport import (
    CONFIRM_TIMEOUT_S,
    caught_up,
    fleet_gateway,
    send,
    status,
    wait_for,
)

from gateway.fleet.s3 import S3Error

pytestmark = pytest.mark.fleet


def _locked_versions(bucket, prefix):
    out = {}
    for v in bucket.list_versions(prefix):
        if v.delete_marker:
            continue
        out.setdefault(v.key, []).append((v.version_id, bucket.get_retention(v.key, v.version_id)))
    return out


def test_segments_and_checkpoints_reach_the_store_locked(tmp_path, ceph, bucket):
    box = fleet_gateway(tmp_path / "a", ceph, bucket.bucket, "box-a")
    try:
        send(box, 250)
        st = wait_for(lambda: caught_up(box, 3), CONFIRM_TIMEOUT_S, "replication to catch up")
        assert st["error"] == "" and st["skipped"] == 0
        segments = sorted(p.name for p in (box.state_dir / "ledger").glob("*.seg"))
        sealed = segments[:-1]
        assert len(sealed) >= 3
        found = _locked_versions(bucket, "box-a/")
        for name in sealed:
            for key in (f"box-a/segments/{name}", f"box-a/segments/{name}.json"):
                assert key in found, f"{key} missing; store has {sorted(found)}"
                assert len(found[key]) == 1  # sent once
                ((_vid, (mode, until)),) = found[key]
                assert mode == "COMPLIANCE" and until is not None
        notes = [k for k in found if k.startswith("box-a/checkpoints/")]
        assert notes, "no checkpoint reached the store"
        assert "box-a/identity.json" in found
        # The store refuses to delete a locked version or to shorten its lock.
        key = f"box-a/segments/{sealed[0]}"
        vid, (_mode, until) = found[key][0]
        with pytest.raises(S3Error) as refused:
            bucket.delete_object(key, vid)
        assert refused.value.status == 403
        import datetime as dt

        with pytest.raises(S3Error):
            bucket.put_retention(key, vid, "COMPLIANCE", until - dt.timedelta(hours=1), True)
        assert status(box)["health"] == "ok"
    finally:
        box.close()


def test_a_restart_sends_nothing_again(tmp_path, ceph, bucket):
    box = fleet_gateway(tmp_path / "a", ceph, bucket.bucket, "box-a")
    try:
        send(box, 150)
        first = wait_for(lambda: caught_up(box, 2), CONFIRM_TIMEOUT_S, "replication")
        box.stop()
        box.start()
        st = wait_for(lambda: caught_up(box, first["confirmed"]), CONFIRM_TIMEOUT_S, "relisting")
        assert st["skipped"] >= first["confirmed"]
        before = {k: len(v) for k, v in _locked_versions(bucket, "box-a/segments/").items()}
        assert all(n == 1 for n in before.values()), before
    finally:
        box.close()
