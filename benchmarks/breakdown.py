"""`python -m benchmarks.breakdown`: where the CPU of a poll goes, step by step, in one process.

The full benchmark (`python -m benchmarks`) measures whole processes from outside. This
takes the exporter's poll apart, on the case of issue 14's CPU target (every group
changed before every poll): over the same `ChurningTenant` bodies, the whole of
`GroupPipeline.process`, then each of its steps alone, in order, each fed what the step
before it made: splitting the body into records, hashing them, reading every record
with msgspec, the state tracker, rendering the text and deflating it. Beside it the
collector variant of the obvious exporter's poll (`json.loads`, then `Custom.update`).
Medians of CPU time (`time.process_time`) over `--polls` bodies, each side with its own
garbage-collector settings: the exporter's steps with the collector disabled, as its
poller runs them (it collects between polls), the obvious exporter's with Python's.

What it is for: how far a change inside the poll could go (rendering at scrape time
leaves the steps before rendering; a tracker and renderer outside Python leave at least
the steps around them; any exporter that serves deflated text made at poll time pays at
least the deflating). The fetch and the hand-over to the serving process are
outside it: the full run's CPU per poll includes them. The three (the whole poll, its
steps, the collector's poll) run one after the other on each body, in an order that turns
from poll to poll: each leaves the caches to the next.

The steps alone write the same text as the pipeline (the smoke test checks it), in
chunks of `GroupPipeline.CHUNK` records (the pipeline cuts chunks of that size on
average, at content-defined points).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import time
import zlib
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry

from benchmarks.obvious import Custom
from benchmarks.payload import ChurningTenant
from exporter import metrics as m
from exporter.body import Segment
from exporter.exposition import BlockRenderer
from exporter.pipeline import GroupPipeline, _keys
from exporter.records import DateParser, decode_records, split_records
from exporter.snapshot import StateTracker

EXPORTER_STEPS = (
    ("split", "splitting the body into records (msgspec.Raw views)"),
    ("hash", "hashing each record's bytes"),
    ("decode", "reading every record (msgspec, TargetGroup)"),
    ("track", "the state tracker (StateTracker.plan and commit)"),
    ("render", "rendering the text (BlockRenderer.texts)"),
    ("deflate", "deflating it (ISA-L level 1, with its CRC-32)"),
    ("free", "freeing the chunk's records, samples and texts"),
)
COLLECTOR_STEPS = (
    ("loads", "json.loads"),
    ("update", "Custom.update: a tuple of labels and values per record"),
)


class _Steps:
    """The exporter's poll as separate steps, each timed alone; the state is kept across
    polls as the pipeline keeps it (tracker, renderer, date parser)."""

    def __init__(self, tenant: str) -> None:
        self.tracker = StateTracker()
        self.renderer = BlockRenderer(tenant)
        self.parse_date = DateParser("UTC")

    def poll(self, body: bytes, now: float) -> tuple[dict[str, float], list[bytes]]:
        """CPU seconds per step, and each family's text (all chunks, in order). A chunk
        goes through every step before the next one starts, as in the pipeline: the
        whole poll's records at once would be read from further than the caches."""
        laps = _Laps([name for name, _ in EXPORTER_STEPS])
        tracker = self.tracker
        problems: list[str] = []
        texts: list[list[bytes]] = []
        records = split_records(body)
        assert isinstance(records, list), "the churning tenant's body is a list of records"
        laps.lap("split")
        tracker.begin()
        laps.lap("track")
        size = GroupPipeline.CHUNK
        for start in range(0, len(records), size):
            chunk = records[start : start + size]
            keys = _keys(chunk)
            laps.lap("hash")
            groups = decode_records(chunk, start, problems)
            laps.lap("decode")
            samples = tracker.commit(tracker.plan(groups, now, self.parse_date, problems, keys))
            laps.lap("track")
            made = self.renderer.texts(samples)[0]
            laps.lap("render")
            segments = [Segment.of(text) for text in made]
            laps.lap("deflate")
            texts.append(made)  # kept for the check: the pipeline frees them here
            del chunk, keys, groups, samples, segments
            laps.lap("free")
        tracker.end(now)
        laps.lap("track")
        assert not problems, problems
        families = [b"".join(chunk[f] for chunk in texts) for f in range(len(m.PER_GROUP))]
        return laps.seconds, families


class _Laps:
    """CPU seconds per name: each lap is the time since the one before."""

    def __init__(self, names: list[str]) -> None:
        self.seconds = dict.fromkeys(names, 0.0)
        self._last = time.process_time()

    def lap(self, name: str) -> None:
        now = time.process_time()
        self.seconds[name] += now - self._last
        self._last = now


@contextlib.contextmanager
def _gc_off() -> Iterator[None]:
    """The garbage collector off, as the exporter's poller runs (it collects between polls)."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def breakdown(groups: int, polls: int, seed: int = 4) -> dict[str, Any]:
    """Median CPU seconds of the whole poll and of each step, over `polls` bodies of
    `groups` groups, every group changed before each; and the last poll's texts (per
    family) as the pipeline and as the steps wrote them."""
    tenant = ChurningTenant(groups, 1.0, seed)
    bodies = []
    for _ in range(polls + 1):  # the first primes every state: the tracker, the caches
        tenant.step()
        bodies.append(tenant.body())
    pipeline = GroupPipeline("bench")
    steps = _Steps("bench")
    collector = Custom(CollectorRegistry())
    times: dict[str, list[float]] = {
        name: [] for name, _ in (("process", ""), *EXPORTER_STEPS, *COLLECTOR_STEPS)
    }
    last: dict[str, Any] = {}

    def whole(body: bytes, now: float) -> dict[str, float]:
        with _gc_off():
            laps = _Laps(["process"])
            last["processed"] = pipeline.process(body, now)
            laps.lap("process")
        return laps.seconds

    def stepwise(body: bytes, now: float) -> dict[str, float]:
        with _gc_off():
            seconds, last["families"] = steps.poll(body, now)
        return seconds

    def obvious(body: bytes, now: float) -> dict[str, float]:
        # The obvious exporter keeps the garbage collector as Python ships it.
        laps = _Laps([name for name, _ in COLLECTOR_STEPS])
        records = json.loads(body)
        laps.lap("loads")
        collector.update(records)
        laps.lap("update")
        return laps.seconds

    # Each runs right after another, whose work leaves the caches to it: the order turns
    # from poll to poll, so that none is always first or always after the same one.
    order = (whole, stepwise, obvious)
    for index, body in enumerate(bodies):
        now = 1_800_000_000.0 + 60 * index
        seconds: dict[str, float] = {}
        for measured in order[index % 3 :] + order[: index % 3]:
            seconds.update(measured(body, now))
        if index:
            for name, value in seconds.items():
                times[name].append(value)
    processed, families = last["processed"], last["families"]
    assert processed is not None and families is not None
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "groups": groups,
        "polls": polls,
        "groups_rendered": processed.block.groups,
        "cpu_s": medians,
        "cpu_s_samples": times,
        "pipeline_families": [_inflate(family.parts) for family in processed.block.families],
        "step_families": families,
    }


def _inflate(parts: tuple[bytes | bytearray | memoryview, ...]) -> bytes:
    return zlib.decompressobj(-zlib.MAX_WBITS).decompress(b"".join(parts))


def table(result: dict[str, Any]) -> str:
    """The medians as a Markdown table, with each step's share of the whole poll and the
    whole poll's ratio to the collector's."""
    cpu = result["cpu_s"]
    whole = cpu["process"]
    collector = cpu["loads"] + cpu["update"]
    steps = sum(cpu[name] for name, _ in EXPORTER_STEPS)
    deflate = cpu["deflate"]
    rendering = cpu["render"] + deflate
    python_core = cpu["track"] + cpu["render"]

    def row(label: str, seconds: float, of: float) -> str:
        return f"| {label} | {seconds * 1000:.1f} | {seconds / of:.0%} |"

    lines = [
        f"Where a poll's CPU goes: {result['groups']:,} groups, every group changed,"
        f" median of {result['polls']} polls, one process (no fetch, no hand-over; the"
        " exporter's steps with the GC off, as its poller runs them, the collector's with"
        " Python's GC)",
        "",
        "| step | CPU ms | share |",
        "|---|---:|---:|",
        row("exporter: GroupPipeline.process, whole", whole, whole),
        *(row(f"- {label}", cpu[name], whole) for name, label in EXPORTER_STEPS),
        row("- the steps alone, summed", steps, whole),
        row("- the whole less the steps summed", whole - steps, whole),
        row("collector: its poll, whole", collector, collector),
        *(row(f"- {label}", cpu[name], collector) for name, label in COLLECTOR_STEPS),
        "",
        f"The exporter's poll against the collector's: {whole / collector:.2f}x."
        f" Without rendering and deflating: {(whole - rendering) / collector:.2f}x."
        f" Without the tracker and rendering (the most a native tracker and renderer could"
        f" take off): {(whole - python_core) / collector:.2f}x."
        f" Deflating alone, in C already (what any exporter pays that serves text deflated"
        f" at poll time): {deflate * 1000:.1f} ms, {deflate / collector:.2f}x.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.breakdown", description=__doc__)
    parser.add_argument("--groups", type=int, default=10_000, help="groups per body")
    parser.add_argument("--polls", type=int, default=11, help="polls timed (after one)")
    parser.add_argument("--output", help="write the medians and samples as JSON here")
    args = parser.parse_args(argv)
    result = breakdown(args.groups, args.polls)
    print(table(result))
    if args.output:
        kept = {key: value for key, value in result.items() if not key.endswith("_families")}
        with open(args.output, "w", encoding="utf-8") as out:
            json.dump(kept, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
