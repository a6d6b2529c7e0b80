"""Box identity and signed checkpoints: the key, the C2SP note, when the gateway signs.

Pure tests of the note (every byte that matters changes the verdict), the
identity file, and an in-process gateway on a FakeClock: a checkpoint every
interval while entries arrive (none while idle), one at a clean stop, each
verifiable with `gateway verify --checkpoint`.
"""

from __future__ import annotations

import os
import socket
import stat

import pytest
from gatewayproc import run_gateway_command
from inproc import pump, settle

from gateway.clock import FakeClock
from gateway.config import CheckpointsConfig, Config, IngestConfig
from gateway.errors import GatewayError
from gateway.fleet.identity import (
    BOX_KEY_FILE,
    BOX_PUBLIC_FILE,
    box_name,
    load_identity,
    load_public,
    parse_vkey,
)
from gateway.fleet.note import (
    EM_DASH,
    NoteError,
    note_from_entry,
    parse_note,
    sign_checkpoint,
    verify_note,
)
from gateway.ledger import entries
from gateway.ledger.store import LedgerReader
from gateway.service import Gateway

HEAD = bytes(range(32))


@pytest.fixture
def identity(tmp_path):
    return load_identity(tmp_path, "branch-1")


# ---------------------------------------------------------------- identity


def test_the_key_is_made_once_private_and_kept(tmp_path):
    first = load_identity(tmp_path, "b")
    mode = stat.S_IMODE(os.stat(tmp_path / BOX_KEY_FILE).st_mode)
    assert mode == 0o600
    again = load_identity(tmp_path, "b")
    assert again.public == first.public
    assert load_public(tmp_path) == first.public
    assert stat.S_IMODE(os.stat(tmp_path / BOX_PUBLIC_FILE).st_mode) == 0o640


def test_box_names_are_safe_prefixes():
    assert box_name("Branch 12 / Main St.") == "Branch-12---Main-St"
    assert box_name("ok.name_1") == "ok.name_1"
    assert box_name("") == box_name(socket.gethostname())
    assert len(box_name("x" * 200)) == 63


def test_verifier_key_round_trips_and_is_checked(identity):
    assert parse_vkey(identity.public.vkey) == identity.public
    name, _kid, key = identity.public.vkey.split("+", 2)
    with pytest.raises(GatewayError):
        parse_vkey(f"{name}+00000000+{key}")  # wrong key ID
    with pytest.raises(GatewayError):
        parse_vkey("print-gateway/x+1234")


# ---------------------------------------------------------------- the note


def test_a_note_is_the_c2sp_form_and_verifies(identity):
    note = sign_checkpoint(identity, 42, HEAD)
    text, sigs = note.split("\n\n")
    origin, size, _encoded = text.split("\n")
    assert origin == identity.public.origin and size == "42"
    assert sigs.startswith(f"{EM_DASH} {identity.public.key_name} ") and sigs.endswith("\n")
    checkpoint = verify_note(note, identity.public)
    assert (checkpoint.seq, checkpoint.hash) == (42, HEAD)
    assert checkpoint.short().startswith("checkpoint 42:0001020304050607 sig ")


@pytest.mark.parametrize(
    "change",
    [
        lambda n: n.replace("\n42\n", "\n43\n"),  # another head seq
        lambda n: n.replace("AAEC", "AQEC", 1),  # another head hash
        # the signature, inside it: its last character before the padding holds
        # unused bits, which a change there may leave the decoded bytes the same
        lambda n: n[:-10] + ("A" if n[-10] != "A" else "B") + n[-9:],
        lambda n: n.replace("print-gateway/branch-1/", "print-gateway/branch-2/", 1),
    ],
    ids=["seq", "hash", "signature", "origin"],
)
def test_any_change_to_a_note_is_refused(identity, change):
    note = sign_checkpoint(identity, 42, HEAD)
    changed = change(note)
    assert changed != note
    with pytest.raises(NoteError):
        verify_note(changed, identity.public)


def test_a_note_by_another_key_is_refused(tmp_path, identity):
    (tmp_path / "other").mkdir()
    other = load_identity(tmp_path / "other", "branch-1")
    note = sign_checkpoint(other, 1, HEAD)
    with pytest.raises(NoteError, match="not signed by"):
        verify_note(note, identity.public)


@pytest.mark.parametrize(
    "bad",
    ["", "a\n1\n", "o\n01\nAAAA\n\n\u2014 k AAAAAAAA\n", "o\n1\n!!\n\n\u2014 k AAAAAAAA\n",
     "o\n1\nAAAA\n\n\u2014 k AAAAAAAA\n", "o\x01\n1\n" + "A" * 44 + "\n\n\u2014 k AAAAAAAA\n"],
)  # fmt: skip
def test_malformed_notes_are_refused(bad):
    with pytest.raises(NoteError):
        parse_note(bad)


# ---------------------------------------------------------------- on the box


def _gateway(tmp_path, clock):
    config = Config(
        state_dir=tmp_path / "state",
        name="branch-1",
        ingest=IngestConfig(listen=("127.0.0.1:0",)),
        checkpoints=CheckpointsConfig(interval_s=300),
    )
    gw = Gateway(config, clock=clock)
    return gw, gw.start()[0]


def _signed(ledger_dir):
    found = []
    for seq, payload, _h in LedgerReader(ledger_dir).entries():
        value = entries.decode(payload)
        if value["kind"] == "system" and value["name"] == "signed_checkpoint":
            found.append((seq, value["detail"]))
    return found


def _send(address, n):
    with socket.create_connection(address, timeout=10) as c:
        c.sendall(b"".join(b'{"event_type":"t","i":%d}\n' % i for i in range(n)))


def test_checkpoints_every_interval_while_entries_arrive_and_at_stop(tmp_path):
    clock = FakeClock()
    gw, address = _gateway(tmp_path, clock)
    try:
        _send(address, 3)
        pump(gw, lambda: gw.intake.stats.events == 3)
        settle(gw)
        clock.advance(301)
        pump(gw, lambda: gw.fleet.checkpoints.signed == 1)
        settle(gw)
        # Idle: nothing arrives but the checkpoint itself, so no more are made.
        clock.advance(301)
        for _ in range(20):
            gw.loop.run_once(max_wait=0.01)
        assert gw.fleet.checkpoints.signed == 1
        _send(address, 2)
        pump(gw, lambda: gw.intake.stats.events == 5)
        clock.advance(301)
        pump(gw, lambda: gw.fleet.checkpoints.signed == 2)
        settle(gw)
        assert gw.status()["checkpoint"]["latest_seq"] > 0
        _send(address, 1)  # after the last checkpoint: the stop signs it
        pump(gw, lambda: gw.intake.stats.events == 6)
    finally:
        gw.request_stop()
        gw._finish()
    found = _signed(gw.config.ledger_dir)
    assert [d["reason"] for _s, d in found] == ["interval", "interval", "stop"]
    public = load_public(gw.config.state_dir)
    hashes = {seq: h for seq, _p, h in LedgerReader(gw.config.ledger_dir).entries()}
    last = max(hashes)
    for entry_seq, detail in found:
        checkpoint = verify_note(note_from_entry(detail), public)
        assert checkpoint.seq == entry_seq - 1  # the head just before its own entry
        assert checkpoint.hash == hashes[checkpoint.seq]
    assert found[-1][0] == last - 1  # the stop's checkpoint, then `stopped`


def test_verify_checkpoint_command(tmp_path):
    clock = FakeClock()
    gw, address = _gateway(tmp_path, clock)
    _send(address, 2)
    pump(gw, lambda: gw.intake.stats.events == 2)
    gw.request_stop()
    gw._finish()
    state = gw.config.state_dir
    note = (state / "fleet" / "checkpoint.note").read_text()
    good = tmp_path / "good.note"
    good.write_text(note)
    done = run_gateway_command("verify", "--state", str(state), "--checkpoint", str(good))
    assert done.returncode == 0, done.stdout + done.stderr
    assert b"on the chain" in done.stdout
    # Signed by this key, but over a head this chain does not hold.
    fake = tmp_path / "fake.note"
    fake.write_text(sign_checkpoint(gw.fleet.identity, 3, HEAD))
    done = run_gateway_command("verify", "--state", str(state), "--checkpoint", str(fake))
    assert done.returncode == 1 and b"ANCHOR MISSED" in done.stdout
    # A note whose signature is broken.
    broken = tmp_path / "broken.note"
    origin, size, rest = note.split("\n", 2)
    broken.write_text(f"{origin}\n{int(size) - 1}\n{rest}")
    done = run_gateway_command("verify", "--state", str(state), "--checkpoint", str(broken))
    assert done.returncode == 1 and b"CHECKPOINT REFUSED" in done.stdout
    done = run_gateway_command("identity", "--state", str(state), "--json")
    assert done.returncode == 0 and b'"fingerprint"' in done.stdout


def test_the_status_page_shows_the_box_key_and_the_latest_checkpoint():
    from gateway.render.languages import render
    from gateway.render.templates import status_page

    status = {
        "ledger": {"entries": 5, "head_seq": 5, "head_hash": "ab" * 32},
        "identity": {"box": "branch-1", "fingerprint": "1123050291ded24c" + "0" * 48},
        "checkpoint": {
            "latest_seq": 4,
            "latest_short": "checkpoint 4:4b3e4a69c6dbd135 sig 7a2c71c2",
        },
    }
    text = render(status_page("branch-1", status), "text", 48).decode()
    assert "branch-1 1123050291ded24c" in text
    assert "checkpoint: 4:4b3e4a69c6dbd135 sig 7a2c71c2" in text
