"""Frame ages at each hand-off (pipeline/ages.py): percentiles from 1 ms buckets, merged threads, a window."""

from __future__ import annotations

from pipeline.ages import BUCKETS, AgeCounts, FrameAges, summaries


def test_percentiles_come_from_the_buckets_and_the_maximum_is_exact() -> None:
    ages = FrameAges()
    ages.add_all([100.0 - ms / 1000.0 for ms in range(1, 101)], now=100.0)  # ages of 1..100 ms
    summary = AgeCounts.of([ages]).summary()
    assert summary["frames"] == 100
    assert 50.0 <= summary["p50"] <= 52.0 and 90.0 <= summary["p90"] <= 92.0 and 99.0 <= summary["p99"] <= 100.0
    assert abs(summary["max"] - 100.0) < 0.01


def test_threads_merge_and_a_window_counts_only_its_own_frames() -> None:
    a, b = FrameAges(), FrameAges()
    for _ in range(10):
        a.add(0.005)
    before = {"preprocess": AgeCounts.of([a, b])}
    for _ in range(30):
        b.add(0.040)
    a.add(9.0)  # far past the last bucket: counted there, its age kept as the maximum
    after = {"preprocess": AgeCounts.of([a, b]), "published": AgeCounts.of([FrameAges()])}
    window = summaries(after, before)
    assert list(window) == ["preprocess"], "a hop with no frames is left out"
    assert window["preprocess"]["frames"] == 31
    assert window["preprocess"]["p50"] == 41.0 and window["preprocess"]["max"] == 9000.0
    b.add(0.070)  # the oldest before a window does not stand as the window's maximum
    before = {"preprocess": AgeCounts.of([a, b])}
    b.add(0.0123)
    assert summaries({"preprocess": AgeCounts.of([a, b])}, before)["preprocess"]["max"] == 13.0
    assert summaries(after)["preprocess"]["frames"] == 41
    assert sum(AgeCounts.of([a]).counts) == 11 and len(AgeCounts.of([a]).counts) == BUCKETS
