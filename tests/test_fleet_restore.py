"""`gateway fleet restore --head-only` against a real Ceph RGW: a replaced box takes up
only the chain head, checked against a signed checkpoint, and its chain continues in the
bucket; a non-empty ledger and a head whose checks fail are refused.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from fleetsupport import (
    CONFIRM_TIMEOUT_S,
    caught_up,
    credentials_file,
    fleet_cli,
    fleet_gateway,
    send,
    status,
    wait_for,
)
from gatewayproc import GatewayProcess, run_gateway_command

from gateway.fleet.s3 import Credentials, S3Client

pytestmark = pytest.mark.fleet


def _dead_box(tmp_path: Path, ceph, bucket) -> GatewayProcess:
    """box-a replicates four segments or more, then its card dies (kill -9).

    Two bursts: a seal's checkpoint signs the newest entry at the time, in the
    new live segment; the first burst's notes are on sealed, replicated
    segments once the second burst has sealed them.
    """
    old = fleet_gateway(tmp_path / "old", ceph, bucket.bucket, "box-a")
    try:
        send(old, 150)
        wait_for(lambda: caught_up(old, 2), CONFIRM_TIMEOUT_S, "replication")
        send(old, 150, start=150)
        wait_for(lambda: caught_up(old, 4), CONFIRM_TIMEOUT_S, "replication")
    finally:
        old.kill()
    return old


def _new_box(tmp_path: Path, old: GatewayProcess, bucket_name: str | None = None) -> Path:
    """The replacement's configuration and the old key's backup, on an empty state dir."""
    new_dir = tmp_path / "new"
    (new_dir / "state").mkdir(parents=True)
    shutil.copy(old.state_dir / "box.ed25519", new_dir / "state" / "box.ed25519")
    config = yaml.safe_load(old.config_path.read_text())
    config["state_dir"] = str(new_dir / "state")
    if bucket_name is not None:
        config["fleet"]["bucket"] = bucket_name
    path = new_dir / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _out(done) -> str:
    return (done.stdout + done.stderr).decode(errors="replace")


def _restore(config: Path, *extra: str):
    return fleet_cli("restore", "--config", str(config), "--box", "box-a", *extra)


def _fleet_verify(tmp_path, ceph, bucket) -> tuple[int, dict]:
    creds = credentials_file(tmp_path, ceph)
    done = fleet_cli("verify", "--endpoint", ceph.endpoint, "--bucket", bucket.bucket,
                     "--credentials-file", str(creds), "--json")  # fmt: skip
    try:
        return done.returncode, json.loads(done.stdout)
    except ValueError:
        raise AssertionError(done.stdout + done.stderr) from None


def _ledger_files(config: Path) -> dict[str, bytes]:
    ledger = Path(yaml.safe_load(config.read_text())["state_dir"]) / "ledger"
    if not ledger.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in sorted(ledger.iterdir()) if p.is_file()}


def test_head_only_restore_continues_the_chain(tmp_path, ceph, bucket):
    old = _dead_box(tmp_path, ceph, bucket)
    config = _new_box(tmp_path, old)
    done = _restore(config, "--head-only", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    detail = json.loads(done.stdout)
    head = detail["head_seq"]
    assert detail["head_only"] is True and detail["key_from"] == "key backup", detail
    assert detail["segments"] >= 2 and 1 <= detail["segments_downloaded"] < detail["segments"]
    assert 0 < detail["checkpoint_seq"] <= head
    assert detail["earlier"] == {"prefix": "box-a/segments/", "first_seq": 1, "last_seq": head}
    # Only the new ledger's first segment is on the card: after the head, from its hash.
    files = _ledger_files(config)
    segments = sorted(n for n in files if n.endswith(".seg"))
    assert segments == [f"{head + 1:020d}.seg"], segments
    # `gateway verify` starts from the restored head and says where the rest is.
    done = run_gateway_command("verify", "--json", "--config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    verified = json.loads(done.stdout)
    assert verified["from"]["seq"] == head and verified["from"]["hash"] == detail["head_hash"]
    assert verified["from"]["checkpoint_seq"] == head + 1
    assert verified["from"]["restored_from"]["bucket"] == bucket.bucket
    assert verified["head"]["seq"] == head + 1 and verified["entries"] == 1
    done = run_gateway_command("verify", "--config", str(config))
    assert done.returncode == 0 and "restored head at seq" in _out(done), _out(done)
    done = run_gateway_command("export", "--config", str(config), "--from-seq", str(head + 1))
    first = json.loads(done.stdout.splitlines()[0])
    assert first["seq"] == head + 1 and first.get("name") == "restored", first
    assert first["detail"]["head_only"] is True and first["detail"]["head_seq"] == head
    # The new box runs on and replicates; the bucket's chain runs from genesis
    # through the old box's segments into the new box's.
    overrides = yaml.safe_load(config.read_text())
    overrides.pop("ingest", None)
    new = GatewayProcess(config.parent, **overrides)
    try:
        send(new, 150, start=1000)
        wait_for(lambda: caught_up(new, 2), CONFIRM_TIMEOUT_S, "the new box")
        assert status(new)["replication"]["skipped"] == 0  # it held none of the old segments
    finally:
        new.close()
    done = run_gateway_command("verify", "--json", "--config", str(config))
    assert done.returncode == 0, done.stdout
    assert json.loads(done.stdout)["head"]["seq"] > head + 150
    keys = {v.key for v in bucket.list_versions("box-a/segments/")}
    assert f"box-a/segments/{head + 1:020d}.seg" in keys
    code, out = _fleet_verify(tmp_path, ceph, bucket)
    (report,) = out["boxes"]
    # The new box's sealed segments (its live one is not replicated yet) verify
    # on top of the old box's, in one chain from genesis.
    assert report["head_seq"] > head + 1 and report["segments"] > detail["segments"], report
    # As after a full restore: only the old box's checkpoints over entries it
    # never replicated (its live segment, lost with the card) are off the chain.
    lost = detail["lost"]
    for f in report["findings"]:
        assert "does not pass through" in f["problem"] or "fork" in f["problem"], f
        assert lost and lost[0] <= f["seq"] <= lost[1], (f, lost)
    assert code == (1 if report["findings"] else 0)


def test_restore_refuses_a_ledger_that_is_not_empty(tmp_path, ceph, bucket):
    old = _dead_box(tmp_path, ceph, bucket)
    config = _new_box(tmp_path, old)
    done = _restore(config, "--head-only")
    assert done.returncode == 0, done.stdout + done.stderr
    before = _ledger_files(config)
    assert before
    for extra in (("--head-only",), ()):  # head-only and full alike
        done = _restore(config, *extra)
        assert done.returncode != 0
        assert "not empty" in _out(done), _out(done)
        assert _ledger_files(config) == before
    # A stray file alone is enough: restore never writes next to something unknown.
    ledger = Path(yaml.safe_load(config.read_text())["state_dir"]) / "ledger"
    shutil.rmtree(ledger)
    ledger.mkdir()
    (ledger / "notes.txt").write_text("kept\n")
    done = _restore(config, "--head-only")
    assert done.returncode != 0 and "not empty" in _out(done), _out(done)
    assert sorted(p.name for p in ledger.iterdir()) == ["notes.txt"]


def _copy_box(ceph, src: S3Client, name: str, change: dict[str, bytes]) -> S3Client:
    """A new bucket holding box-a's latest objects, with `change` (key -> body) put instead."""
    dst = S3Client(ceph.endpoint, name, Credentials(ceph.access_key, ceph.secret_key))
    dst.create_bucket(object_lock=True)
    for v in src.list_versions("box-a/"):
        if v.is_latest and not v.delete_marker:
            dst.put_object(v.key, change.get(v.key, src.get_object(v.key, v.version_id)))
    return dst


def test_head_only_restore_refuses_a_head_whose_checks_fail(tmp_path, ceph, bucket):
    old = _dead_box(tmp_path, ceph, bucket)
    keys = sorted(v.key for v in bucket.list_versions("box-a/segments/"))
    last = [k for k in keys if k.endswith(".seg")][-1]
    meta = json.loads(bucket.get_object(last + ".json"))
    notes = sorted(v.key for v in bucket.list_versions("box-a/checkpoints/"))
    # The note that vouches for the head: the latest at or below the last segment's last seq.
    anchor = [n for n in notes if int(n.rsplit("/", 1)[1][:20]) <= meta["last_seq"]][-1]
    note = bucket.get_object(anchor).decode()
    sig_line = note.rstrip("\n").rsplit("\n", 1)[1]
    forged_sig = sig_line[:-8] + ("AAAAAAA=" if not sig_line.endswith("AAAAAAA=") else "BBBBBBB=")
    cases = {
        # The metadata claims another head than the segment holds.
        "meta-hash": ({last + ".json": json.dumps({**meta, "last_hash": "0" * 64}).encode()},
                      "no metadata version"),
        "meta-seq": ({last + ".json": json.dumps({**meta, "last_seq": meta["last_seq"] + 5})
                      .encode()}, "no metadata version"),
        # The checkpoint's signature does not verify with the box's key.
        "note": ({anchor: note.replace(sig_line, forged_sig).encode()}, "checkpoint refused"),
    }  # fmt: skip
    for n, (case, (change, expected)) in enumerate(cases.items()):
        dst = _copy_box(ceph, bucket, f"{bucket.bucket}-{n}", change)
        try:
            config = _new_box(tmp_path / case, old, dst.bucket)
            done = _restore(config, "--head-only")
            out = _out(done)
            assert done.returncode != 0 and expected in out, (case, out)
            assert not any(n.endswith(".seg") for n in _ledger_files(config)), case
        finally:
            dst.close()
    # In the box's own bucket: a second, different metadata version of the head
    # segment (the box writes exactly one) is refused too.
    bucket.put_object(last + ".json", json.dumps({**meta, "last_hash": "0" * 64}).encode())
    config = _new_box(tmp_path / "second-version", old)
    done = _restore(config, "--head-only")
    out = _out(done)
    assert done.returncode != 0 and "different versions" in out, out
    # A key backup that is not the box's published key is refused.
    config = _new_box(tmp_path / "other-key", old)
    Path(yaml.safe_load(config.read_text())["state_dir"], "box.ed25519").write_bytes(b"\x07" * 32)
    done = _restore(config, "--head-only")
    out = _out(done)
    assert done.returncode != 0 and "not the key box 'box-a' published first" in out, out
