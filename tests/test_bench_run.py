"""The benchmark runners' pure helpers: target verdicts, per-scenario gateway figures,
the soak's flatness rule and the ledger curves' growth rule.

No gateway and no load run here; these check the arithmetic behind the reported
figures, which a benchmark run cannot check for itself.
"""

from __future__ import annotations

import math

import pytest

from bench import curves, soak
from bench.run import ProcStats, Snapshot, amplification, gateway_window, met, target_row
from gateway.ledger import format as fmt

# ---------------------------------------------------------------- targets


@pytest.mark.parametrize(
    ("value", "op", "goal", "expected"),
    [
        (100_000, ">=", 100_000, True),
        (99_999, ">=", 100_000, False),
        (10.0, "<=", 10.0, True),
        (10.01, "<=", 10.0, False),
        (1.0, "<", 1.0, False),
        (0.99, "<", 1.0, True),
        (None, ">=", 1, False),
        (math.nan, "<=", 1.3, False),
    ],
)
def test_met(value, op, goal, expected):
    assert met(value, op, goal) is expected


def test_target_row_verdicts():
    assert target_row("x", ">=", 5, 6, "6").endswith("| yes |")
    assert target_row("x", ">=", 5, 4, "4").endswith("| **NO** |")
    assert target_row("x", ">=", 5, None, "-").endswith("| not measured |")
    assert target_row("verify entries/s", ">=", 500_000, 1, "1").startswith(
        "| verify entries/s (>=) | 500,000 |"
    )


# ---------------------------------------------------------------- gateway figures


def snap(t: float, cpu: float, written: int, head: int, syncs: int, ledger: int) -> Snapshot:
    return Snapshot(
        proc=ProcStats(t=t, cpu_s=cpu, rss_kb=40 * 1024, hwm_kb=50 * 1024, write_bytes=written),
        head_seq=head,
        syncs=syncs,
        batches=syncs,
        sync_ms={"p50": 1.0, "p99": 2.0},
        index_lag=0,
        ledger_bytes=ledger,
        device_bytes=None,
    )


def test_gateway_window():
    s0 = snap(t=100.0, cpu=10.0, written=1_000, head=50, syncs=7, ledger=4_096)
    s1 = snap(t=110.0, cpu=12.0, written=301_000, head=1_050, syncs=107, ledger=304_096)
    w = gateway_window(s0, s1, events=1_000, load_s=5.0)
    assert w["cpu_s_per_100k"] == pytest.approx(200.0)  # 2 s for 1,000 events
    assert w["us_per_event"] == pytest.approx(2_000.0)
    assert w["disk_bytes_per_event"] == pytest.approx(300.0)
    assert w["entries"] == 1_000
    assert w["syncs"] == 100
    assert w["syncs_per_s"] == pytest.approx(20.0)  # over the load, not the whole window
    assert w["events_per_sync"] == pytest.approx(10.0)
    assert w["hwm_mb"] == 50.0
    assert w["device_bytes"] is None
    assert amplification({"gw": w}) == pytest.approx(1.0)


def test_gateway_window_without_events_or_syncs():
    s = snap(t=1.0, cpu=1.0, written=0, head=5, syncs=3, ledger=64)
    w = gateway_window(s, s, events=0, load_s=0.0)
    assert w["cpu_s_per_100k"] is None
    assert w["disk_bytes_per_event"] is None
    assert w["syncs_per_s"] is None
    assert w["events_per_sync"] is None
    assert math.isnan(amplification({"gw": w}))


# ---------------------------------------------------------------- soak


def test_slope_mb_per_min():
    assert soak.slope_mb_per_min([(0, 30.0), (60, 31.0), (120, 32.0)]) == pytest.approx(1.0)
    assert soak.slope_mb_per_min([(0, 30.0), (600, 30.0)]) == pytest.approx(0.0)
    assert soak.slope_mb_per_min([(0, 30.0)]) is None
    assert soak.slope_mb_per_min([(5, 30.0), (5, 31.0)]) is None


def test_summarise_leaves_out_the_first_minute():
    t0 = 1_000.0
    samples = [(t0 - 5, 20.0)]  # before the load
    samples += [(t0 + t, 30.0 + (8.0 if t < 60 else 0.0)) for t in range(0, 61, 10)]
    samples += [(t0 + t, 31.0) for t in range(70, 601, 10)]
    samples += [(t0 + 700, 99.0)]  # after the load
    s = soak.summarise(samples, t0, t0 + 600)
    assert s["before_mb"] == 20.0
    assert s["start_mb"] == 38.0
    assert s["warm_mb"] == 30.0
    assert s["end_mb"] == 31.0
    assert s["max_mb"] == 38.0
    assert s["rise_mb"] == pytest.approx(1.0)
    assert s["slope_mb_per_min"] < soak.FLAT_SLOPE_MB_PER_MIN
    assert s["flat"]


def test_summarise_sees_a_leak():
    t0 = 0.0
    samples = [(float(t), 30.0 + t / 60) for t in range(0, 601, 10)]  # 1 MB per minute
    s = soak.summarise(samples, t0, 600.0)
    assert s["slope_mb_per_min"] == pytest.approx(1.0)
    assert s["rise_mb"] == pytest.approx(9.0)
    assert not s["flat"]


@pytest.mark.parametrize(
    ("rise", "slope", "flat"),
    [(4.9, 0.49, True), (5.0, 0.1, False), (1.0, 0.5, False), (None, 0.1, False), (1, None, False)],
)
def test_is_flat(rise, slope, flat):
    assert soak.is_flat(rise, slope) is flat


def test_by_minute():
    samples = [(t, 30.0 + t / 600) for t in range(0, 200, 10)]
    assert soak.by_minute(samples, 0.0, 150.0) == "0: 30.0, 1: 30.1, 2: 30.2"


# ---------------------------------------------------------------- curves


def test_parse_sizes():
    assert curves.parse_sizes("64,512,2048") == (64, 512, 2048)
    for bad in ("", "64,64", "512,64", "0", "-1,5"):
        with pytest.raises(ValueError):
            curves.parse_sizes(bad)


def test_growth_follows_the_writers_rotation():
    header = fmt.SEGMENT_HEADER_BYTES
    seg = curves.SEGMENT_BYTES
    # Fits: the segment and the ledger grow by the frame.
    assert curves.growth(header, 1_000, 700) == (header + 700, 1_700)
    assert curves.growth(seg - 700, 5_000, 700) == (seg, 5_700)
    # Does not fit: a new segment, whose header counts too.
    assert curves.growth(seg - 699, 5_000, 700) == (header + 700, 5_000 + header + 700)
    # A segment holding no frame yet takes even an oversized one.
    assert curves.growth(header, header, seg) == (header + seg, header + seg)
