"""Shared fixtures of the micro-benchmarks, and a per-item table printed after the run.

Most benchmarks handle a batch of events per call (`corpus.BATCH`), because one event
takes a few microseconds and the timer's own overhead would otherwise weigh in. The
`items_per_call` fixture turns such a call's min and median into per-item costs (stored
in `extra_info` and printed in a table after pytest-benchmark's), to compare with the
per-event budget: about 10 µs of CPU per event for everything the gateway does, on the
development machine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from bench.micro.corpus import Corpus, build_corpus


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    return build_corpus()


# (benchmark name, items per call, min and median µs per item, items/s, MB/s or None)
_SUMMARY: list[tuple[str, int, float, float, float, float | None]] = []


@pytest.fixture
def items_per_call(benchmark, request) -> Iterator[Callable[..., None]]:
    """Call with the number of items (and optionally bytes) one benchmarked call handles.

    After the test, a call's min and median are divided by it: `extra_info` gets
    `items_per_call`, `per_item_us` and `items_per_s` (from the median),
    `per_item_min_us` (and `mb_per_s`), and the summary table shows them.
    """
    declared: list[tuple[int, int | None]] = []

    def declare(count: int, nbytes: int | None = None) -> None:
        declared.append((count, nbytes))

    yield declare
    if not declared or benchmark.stats is None:  # benchmarks disabled, or the test failed
        return
    count, nbytes = declared[-1]
    stats = benchmark.stats.stats
    median_us, min_us = stats.median / count * 1e6, stats.min / count * 1e6
    mb_per_s = nbytes / stats.median / 1e6 if nbytes else None
    benchmark.extra_info.update(
        items_per_call=count,
        per_item_us=round(median_us, 3),
        per_item_min_us=round(min_us, 3),
        items_per_s=round(count / stats.median),
    )
    if mb_per_s is not None:
        benchmark.extra_info["mb_per_s"] = round(mb_per_s, 1)
    _SUMMARY.append((request.node.name, count, min_us, median_us, count / stats.median, mb_per_s))


def pytest_terminal_summary(terminalreporter) -> None:
    if not _SUMMARY:
        return
    width = max(len(row[0]) for row in _SUMMARY)
    terminalreporter.section("per item (a call's time / items per call; rates from the median)")
    terminalreporter.write_line(
        f"{'benchmark':<{width}}  {'items':>6}  {'min µs':>9}  {'median µs':>9}"
        f"  {'items/s':>11}  {'MB/s':>7}"
    )
    for name, count, min_us, median_us, rate, mb_per_s in _SUMMARY:
        mb = f"{mb_per_s:7.1f}" if mb_per_s is not None else ""
        terminalreporter.write_line(
            f"{name:<{width}}  {count:>6}  {min_us:>9.3f}  {median_us:>9.3f}  {rate:>11,.0f}  {mb}"
        )
