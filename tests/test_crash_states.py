"""Acknowledged only after fdatasync: checked on the real syscalls of a running gateway.

A real `gateway run` under strace (tests/crashsim.py) takes acknowledged events
from three clients across several segments. On its trace: every acknowledgement
must follow a completed sync of the bytes it stands for (and of the directory
entry of a new segment), and in every crash state built from the trace (the
files a power cut may leave, docs/ledger-format.md "Power cuts") recovery must
keep each acknowledged event at its seq. Mutant builds, patched inside the
gateway process by tests/faultinject, show that both checks can fail.
GATEWAY_FAULTS=full (make test-faults) checks many more crash states.
"""

from __future__ import annotations

import os
import time

import pytest
from crashsim import (
    SECTOR,
    Run,
    Summary,
    assert_trace_matches_disk,
    check_ack_order,
    check_all,
    run_traced,
)

from gateway.ledger import entries
from gateway.ledger import mark as hwm
from gateway.ledger.store import LedgerWriter, list_segments, write_entries

FULL = os.environ.get("GATEWAY_FAULTS") == "full"
# A few hundred crash states in the default suite (about 5 s); in the full run
# every window between syncs, each with 30 random subsets (about a minute).
BUDGET, SUBSETS = (20_000, 30) if FULL else (300, 2)


@pytest.fixture(scope="module")
def today(tmp_path_factory) -> Run:
    return run_traced(tmp_path_factory.mktemp("today"))


@pytest.fixture(scope="module")
def today_states(today, tmp_path_factory) -> Summary:
    summary = check_all(today, tmp_path_factory.mktemp("states"), BUDGET, SUBSETS)
    print(
        f"\ncrash states: {summary.states} from {summary.windows} windows in "
        f"{summary.seconds:.1f} s (trace run {today.seconds:.1f} s, {len(today.trace.acks)} "
        f"acks, {len(today.trace.ops)} file operations); findings {len(summary.findings)}; "
        f"refused starts over a torn new segment {len(summary.refused_torn_new_segment)}"
    )
    return summary


def test_the_trace_accounts_for_every_byte_on_disk(today):
    assert_trace_matches_disk(today)
    kinds = {op.kind for op in today.trace.ops}
    assert {"create", "write", "sync", "dirsync", "mkdir"} <= kinds, kinds
    segments = sum(1 for op in today.trace.ops if op.kind == "create")
    assert segments >= 3, f"only {segments} segments: the run must cross segment boundaries"
    assert len(today.trace.acks) == len(today.sent.expected) == 900


def test_every_acknowledgement_follows_the_sync_that_covers_it(today):
    findings = check_ack_order(today.trace, today.gateway.state_dir / "ledger")
    assert findings == [], "\n".join(findings[:10])


def test_no_crash_state_loses_or_reuses_an_acknowledged_seq(today_states):
    assert today_states.states >= (1000 if FULL else 250), today_states.states
    assert today_states.acks_checked > 0
    assert today_states.findings == [], "\n".join(
        f"{label}: {finding}" for label, finding in today_states.findings[:20]
    )


def test_a_power_cut_while_a_segment_is_created_never_stops_the_next_start(tmp_path):
    ledger = tmp_path / "ledger"
    writer = LedgerWriter(ledger, segment_bytes=64 * 1024).open()
    payload = entries.encode_system(0, "test", {"pad": "x" * 200})
    mark_before = (ledger / hwm.MARK_FILE).read_bytes()
    while len(list_segments(ledger)) < 2:
        mark_before = (ledger / hwm.MARK_FILE).read_bytes()
        write_entries(writer, [payload] * 8, batch=8)
    first_seq, newest = list_segments(ledger)[-1]
    # The crash states' case: the segment's creating write was not synced (so
    # nothing in it was acknowledged, and the high-water mark that follows that
    # sync was never written) and of its sectors only the second arrived.
    (ledger / hwm.MARK_FILE).write_bytes(mark_before)
    data = newest.read_bytes()
    assert len(data) > 2 * SECTOR
    torn = bytes(SECTOR) + data[SECTOR : 2 * SECTOR]
    newest.write_bytes(torn)
    recovered = LedgerWriter(ledger, segment_bytes=64 * 1024).open()
    assert recovered.damage is None
    assert recovered.next_seq == first_seq
    assert recovered.recovery is not None
    assert recovered.recovery.removed_segments == [newest.name]
    (kept,) = (ledger / "quarantine").iterdir()
    assert kept.read_bytes() == torn  # the evidence is kept


def test_a_bad_header_on_a_segment_the_mark_covers_is_damage_not_a_torn_creation(tmp_path):
    ledger = tmp_path / "ledger"
    writer = LedgerWriter(ledger, segment_bytes=64 * 1024).open()
    payload = entries.encode_system(0, "test", {"pad": "x" * 200})
    while len(list_segments(ledger)) < 2:
        write_entries(writer, [payload] * 8, batch=8)
    first_seq, newest = list_segments(ledger)[-1]
    data = newest.read_bytes()
    newest.write_bytes(bytes(SECTOR) + data[SECTOR:])
    recovered = LedgerWriter(ledger, segment_bytes=64 * 1024).open()
    assert recovered.damage is not None
    assert recovered.damage.first_seq == first_seq
    assert recovered.next_seq > writer.next_seq - 1  # no acknowledged seq given again
    assert newest.exists()


MUTANTS = {
    "mutant_no_fdatasync": "with no sync of",
    "mutant_ack_before_sync": "with no sync of",
    "mutant_no_dirsync": "before the directory entry of create",
}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_the_trace_check_fails_on_a_mutant(tmp_path, mutant):
    run = run_traced(tmp_path, hooks=(mutant,), events_each=100)
    findings = check_ack_order(run.trace, run.gateway.state_dir / "ledger")
    assert findings, f"{mutant}: the trace check found nothing"
    assert any(MUTANTS[mutant] in f for f in findings), findings[:3]


@pytest.mark.parametrize("mutant", ["mutant_ack_before_sync", "mutant_no_dirsync"])
def test_crash_states_name_the_event_a_mutant_loses(tmp_path, mutant):
    run = run_traced(tmp_path, hooks=(mutant,), events_each=100)
    started = time.monotonic()
    summary = check_all(run, tmp_path / "states", budget=100)
    lost = [f for _label, f in summary.findings if f.startswith("acknowledged seq ")]
    assert lost, f"{mutant}: no crash state lost an acknowledged event"
    # The finding names the seq and the client's event it acknowledged.
    assert " (client " in lost[0] and lost[0].endswith("missing"), lost[0]
    assert time.monotonic() - started < 60
