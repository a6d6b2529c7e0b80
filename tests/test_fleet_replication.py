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


def _verify(ceph, bucket, tmp_path, *extra):
    from fleetsupport import credentials_file, fleet_cli

    creds = credentials_file(tmp_path, ceph)
    done = fleet_cli("verify", "--endpoint", ceph.endpoint, "--bucket", bucket.bucket,
                     "--credentials-file", str(creds), "--json", *extra)  # fmt: skip
    import json

    try:
        return done.returncode, json.loads(done.stdout)
    except ValueError:
        raise AssertionError(done.stdout + done.stderr) from None


def test_two_boxes_verify_and_a_deleted_segment_still_verifies(tmp_path, ceph, bucket):
    a = fleet_gateway(tmp_path / "a", ceph, bucket.bucket, "box-a")
    b = fleet_gateway(tmp_path / "b", ceph, bucket.bucket, "box-b")
    try:
        send(a, 150)
        send(b, 200)
        wait_for(lambda: caught_up(a, 2), CONFIRM_TIMEOUT_S, "box-a to catch up")
        wait_for(lambda: caught_up(b, 2), CONFIRM_TIMEOUT_S, "box-b to catch up")
    finally:
        a.close()
        b.close()
    code, out = _verify(ceph, bucket, tmp_path)
    assert code == 0, out
    assert [r["box"] for r in out["boxes"]] == ["box-a", "box-b"]
    assert all(r["segments"] >= 2 and r["checkpoints"] >= 1 for r in out["boxes"])
    # A delete marker on a segment: the locked version is still there and verified.
    key = next(v.key for v in bucket.list_versions("box-a/segments/") if v.key.endswith(".seg"))
    bucket.delete_object(key)
    code, out = _verify(ceph, bucket, tmp_path)
    assert code == 0, out
    # An anchor from paper: one that is on box-b's chain, one that is not.
    head = out["boxes"][1]
    good = f"box-b:{head['head_seq']}:{head['head_hash'][:16]}"
    code, _ = _verify(ceph, bucket, tmp_path, "--expect", good)
    assert code == 0
    code, out = _verify(ceph, bucket, tmp_path, "--expect", f"box-b:{head['head_seq']}:" + "0" * 16)
    assert code == 1
    assert any("anchor" in f["problem"] for r in out["boxes"] for f in r["findings"])
