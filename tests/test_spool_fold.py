"""The spool's fold: the state rebuilt after a restart equals the live state.

A Hypothesis state machine writes events, reprint and report requests, print
outcomes and routing changes into an in-memory ledger, takes checkpoints, and
restarts at random (from the latest checkpoint, an older one, or none); signed
checkpoints are recorded among them, and each receipt must carry the latest
one recorded before its event (what its paper prints). After
every step the live fold is checked against a model of what is owed, and at
every restart the rebuilt fold must equal the live one: no receipt owed twice,
none forgotten, the same report numbering and last receipt.
"""

from __future__ import annotations

import json

import hypothesis.strategies as st
from blake3 import blake3
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gateway.ledger import entries
from gateway.printing.fold import SpoolFold


def router(event: dict) -> tuple[str, ...]:
    """Type "a" goes to one printer, "b" to two (fan-out), anything else nowhere."""
    return {"a": ("p1",), "b": ("p1", "p2")}.get(event.get("event_type"), ())


class FoldMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger: list[tuple[int, bytes, bytes]] = []  # (seq, payload, chain hash)
        self.live = SpoolFold(router)
        self.checkpoints: list[dict] = []
        self.model_owed: dict[str, int] = {}  # job id -> origin seq
        self.model_routing = False
        self.events: list[int] = []
        self.model_checkpoints: list[int] = []  # seqs of signed_checkpoint entries
        self.model_receipt_checkpoint: dict[str, int | None] = {}  # receipt id -> its entry seq

    def append(self, entry: dict) -> int:
        seq = len(self.ledger) + 1
        payload = entries.encode_value({"received_at": seq, **entry})
        chain = blake3(payload + bytes([seq % 256])).digest()
        self.ledger.append((seq, payload, chain))
        self.live.apply(seq, chain, entries.decode(payload), payload)
        return seq

    @initialize(printing=st.booleans())
    def started(self, printing: bool) -> None:
        self.routing(printing, "started")

    @rule(printing=st.booleans(), name=st.sampled_from(["started", "reloaded"]))
    def routing(self, printing: bool, name: str) -> None:
        self.append({"kind": "system", "name": name, "detail": {"printing": printing}})
        self.model_routing = printing

    @rule(event_type=st.sampled_from(["a", "b", "c"]))
    def event(self, event_type: str) -> None:
        seq = self.append({"kind": "event", "event": {"event_type": event_type}, "flags": []})
        self.events.append(seq)
        if self.model_routing:
            for printer in router({"event_type": event_type}):
                self.model_owed[f"{seq}/{printer}"] = seq
                latest = self.model_checkpoints[-1] if self.model_checkpoints else None
                self.model_receipt_checkpoint[f"{seq}/{printer}"] = latest

    @rule()
    def signed_checkpoint(self) -> None:
        head = len(self.ledger)
        detail = {
            "seq": head,
            "hash": "ab" * 32,
            "origin": "print-gateway/b/0123456789abcdef",
            "key_name": "print-gateway/b",
            "signature": f"sig{head}",
            "reason": "interval",
        }
        seq = self.append({"kind": "system", "name": "signed_checkpoint", "detail": detail})
        self.model_checkpoints.append(seq)

    @precondition(lambda self: self.events)
    @rule(data=st.data())
    def reprint(self, data) -> None:
        event_seq = data.draw(st.sampled_from(self.events))
        origin = len(self.ledger) + 1
        job = f"{origin}/p1"
        self.append({"kind": "reprint", "job": job, "printer": "p1", "event_seq": event_seq})
        self.model_owed[job] = origin

    @rule()
    def report(self) -> None:
        origin = len(self.ledger) + 1
        number = self.live.report_number + 1
        job = f"{origin}/p2"
        self.append(
            {"kind": "report", "job": job, "printer": "p2", "number": number,
             "date": f"2026-11-{number % 28 + 1:02d}", "first_seq": None, "last_seq": None}
        )  # fmt: skip
        self.model_owed[job] = origin

    @precondition(lambda self: self.model_owed)
    @rule(data=st.data(), outcome=st.sampled_from(["printed", "failed", "refused", "cancelled"]))
    def outcome(self, data, outcome: str) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.model_owed)))
        job = self.live.owed[job_id]
        self.append(
            {"kind": "print", "job": job_id, "type": job.type, "printer": job.printer,
             "seqs": list(job.seqs), "outcome": outcome}
        )  # fmt: skip
        del self.model_owed[job_id]

    @rule()
    def checkpoint(self) -> None:
        self.checkpoints.append(self.live.checkpoint())

    @rule(which=st.sampled_from(["latest", "oldest", "none"]))
    def restart(self, which: str) -> None:
        checkpoint = None
        if self.checkpoints and which != "none":
            # As spool.json keeps it.
            checkpoint = json.loads(json.dumps(self.checkpoints[-1 if which == "latest" else 0]))
        rebuilt = SpoolFold(router, checkpoint)
        floor = rebuilt.floor_hint
        rebuilt.fold(item for item in self.ledger if item[0] >= floor)
        assert rebuilt.state() == self.live.state()
        # The restarted spool carries on from the rebuilt state.
        rebuilt.head = len(self.ledger)
        self.live = rebuilt

    @invariant()
    def owed_as_the_model_says(self) -> None:
        assert {j: job.origin for j, job in self.live.owed.items()} == self.model_owed
        for job_id, job in self.live.owed.items():
            if job.type == "receipt":
                carried = job.checkpoint["entry_seq"] if job.checkpoint else None
                assert carried == self.model_receipt_checkpoint[job_id], job_id
        assert self.live.floor() <= min(self.model_owed.values(), default=len(self.ledger) + 1)


TestFold = FoldMachine.TestCase
TestFold.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_a_version_one_checkpoint_means_routing_was_on_at_its_floor():
    fold = SpoolFold(router, {"version": 1, "floor": 5})
    assert fold.routing and fold.head == 4
    made = fold.apply(5, b"h" * 32, {"kind": "event", "event": {"event_type": "a"}}, b"payload")
    assert [job.id for job in made] == ["5/p1"]


def test_a_receipt_is_owed_only_for_events_received_while_routing_was_on():
    fold = SpoolFold(router)
    assert fold.apply(1, b"h" * 32, {"kind": "event", "event": {"event_type": "a"}}) == []
    fold.apply(2, b"h" * 32, {"kind": "system", "name": "started", "detail": {"printing": True}})
    assert len(fold.apply(3, b"h" * 32, {"kind": "event", "event": {"event_type": "b"}})) == 2


def test_a_receipt_carries_the_latest_signed_checkpoint_before_its_event():
    fold = SpoolFold(router)
    fold.apply(1, b"h" * 32, {"kind": "system", "name": "started", "detail": {"printing": True}})
    assert (
        fold.apply(2, b"h" * 32, {"kind": "event", "event": {"event_type": "a"}})[0].checkpoint
        is None
    )
    detail = {"seq": 2, "hash": "ab" * 32, "origin": "print-gateway/b/0123456789abcdef",
              "key_name": "print-gateway/b", "signature": "c2ln", "reason": "interval"}  # fmt: skip
    fold.apply(3, b"h" * 32, {"kind": "system", "name": "signed_checkpoint", "detail": detail})
    (job,) = fold.apply(4, b"h" * 32, {"kind": "event", "event": {"event_type": "a"}})
    assert job.checkpoint == {"entry_seq": 3, **{k: detail[k] for k in detail if k != "reason"}}
    # The hint at a floor of 4 starts a rebuilt fold with the checkpoint of seq 3.
    hint = fold.checkpoint()
    assert hint["floor"] == 2 and hint["signed_checkpoint"] is None
    fold.apply(5, b"h" * 32, {"kind": "print", "job": "2/p1", "outcome": "printed",
                              "type": "receipt", "seqs": [2], "printer": "p1"})  # fmt: skip
    hint = fold.checkpoint()
    assert hint["floor"] == 4 and hint["signed_checkpoint"]["entry_seq"] == 3
    rebuilt = SpoolFold(router, hint)
    rebuilt.apply(4, b"h" * 32, {"kind": "event", "event": {"event_type": "a"}})
    assert rebuilt.owed["4/p1"].checkpoint == job.checkpoint
