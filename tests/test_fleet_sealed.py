"""The replicator's view of sealed segments, kept on the loop at every seal.

Only the segments from the oldest one not yet seen sealed on are looked at
(a seal's cost does not grow with the segments on the card), with the same
answers as a walk over all of them.
"""

from __future__ import annotations

from types import SimpleNamespace

from gateway.fleet.replicate import Replicator
from gateway.ledger import format as fmt


def _replicator(ledger_dir, live: int, durable: int) -> SimpleNamespace:
    return SimpleNamespace(
        ledger_dir=ledger_dir,
        _walk_from="",
        _first_seen={},
        _pending_bytes={},
        _durable_seq=durable,
        _unsettled=False,
        loop=SimpleNamespace(clock=SimpleNamespace(monotonic=lambda: 7.0)),
        ledger=SimpleNamespace(writer=SimpleNamespace(live_segment_name=fmt.segment_name(live))),
    )


def _segment(ledger_dir, first: int, size: int = 100) -> None:
    (ledger_dir / fmt.segment_name(first)).write_bytes(b"x" * size)


def test_sealed_segments_are_seen_once_each_from_where_the_last_look_ended(tmp_path):
    for first in (1, 11, 21, 31, 41):
        _segment(tmp_path, first, size=first)
    (tmp_path / "mark").write_text("not a segment")
    r = _replicator(tmp_path, live=41, durable=45)
    assert Replicator._refresh_sealed(r) is True
    assert sorted(r._first_seen) == [fmt.segment_name(f) for f in (1, 11, 21, 31)]
    assert r._pending_bytes[fmt.segment_name(31)] == 31
    assert r._walk_from == fmt.segment_name(41) and not r._unsettled
    assert Replicator._refresh_sealed(r) is False  # nothing new

    # A roll whose file is written, but the sealed segment's last entries are
    # not durable yet: not sealed, and looked at again.
    _segment(tmp_path, 51)
    r.ledger.writer.live_segment_name = fmt.segment_name(51)
    assert Replicator._refresh_sealed(r) is False and r._unsettled
    r._durable_seq, r._unsettled = 50, False
    assert Replicator._refresh_sealed(r) is True
    assert fmt.segment_name(41) in r._first_seen and r._walk_from == fmt.segment_name(51)

    # A roll staged but not written yet: unsettled until its file exists.
    r.ledger.writer.live_segment_name = fmt.segment_name(61)
    assert Replicator._refresh_sealed(r) is False and r._unsettled

    # Segments before where the last look ended are not looked at again: one
    # removed (retention) changes nothing, and one appearing there is not
    # taken for a new seal (the walk starts at the oldest not yet seen sealed).
    (tmp_path / fmt.segment_name(1)).unlink()
    _segment(tmp_path, 5)
    _segment(tmp_path, 61)
    r._durable_seq, r._unsettled = 60, False
    assert Replicator._refresh_sealed(r) is True
    assert fmt.segment_name(5) not in r._first_seen
    assert sorted(r._first_seen) == [fmt.segment_name(f) for f in (1, 11, 21, 31, 41, 51)]


def test_a_missing_ledger_directory_has_no_sealed_segments(tmp_path):
    r = _replicator(tmp_path / "absent", live=1, durable=0)
    assert Replicator._refresh_sealed(r) is False and r._unsettled
