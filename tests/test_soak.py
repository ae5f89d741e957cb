"""A shortened soak: a few hundred polls with random faults; nothing lost, nothing leaked."""

from __future__ import annotations

from benchmarks.soak import soak


def test_soak_loses_nothing_and_leaks_nothing() -> None:
    # A request timeout no healthy poll comes near even on busy cores; the few `slow`
    # faults each cost that long.
    report = soak(polls=200, interval=0.01, fault_share=0.3, seed=3, timeout=3.0)
    assert report.polls >= 200
    assert sum(report.failures_injected.values()) > 20
    assert report.failures_counted == report.failures_injected
    assert report.crashes == 0
    assert report.exit_code == 0
    assert report.end.fds <= report.start.fds + 2
    assert report.end.threads <= report.start.threads + 1
    assert report.end.rss_kib < report.start.rss_kib * 1.5
