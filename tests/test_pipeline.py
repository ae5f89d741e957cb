"""The chunk-by-chunk pipeline serves, poll after poll, what rendering each poll from
scratch serves, and redoes only what changed (issue 14)."""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Callable
from typing import Any

import pytest

from benchmarks.payload import ChurningTenant
from exporter import pipeline
from exporter.exposition import DEFAULT_MAX_LABEL_LENGTH, GroupBlock, render_groups
from exporter.pipeline import GroupPipeline, Processed
from exporter.records import DateParser, PayloadError, parse_payload
from exporter.snapshot import StateTracker, count_by_state


def text(block: GroupBlock) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    return b"".join(inflater.decompress(bytes(part)) for part in block.parts)


def small(pipe: GroupPipeline, chunk: int = 8, chunk_max: int = 32) -> GroupPipeline:
    """Many chunks from a few hundred groups."""
    pipe.CHUNK, pipe.CHUNK_MAX = chunk, chunk_max
    return pipe


def mutate(records: list[dict[str, Any]], rng: random.Random) -> None:
    """What a tenant (or a broken API) does between polls besides updating groups."""
    for _ in range(rng.randrange(0, 5)):
        index = rng.randrange(len(records))
        kind = rng.randrange(8)
        if kind == 0:
            del records[index]
        elif kind == 1:  # a duplicate id
            records.insert(rng.randrange(len(records)), dict(records[index]))
        elif kind == 2:
            records[index] = dict(records[index], validcount=-1)  # skipped as invalid
        elif kind == 3:
            records[index] = dict(records[index], createdOn=None)  # a line fewer
        elif kind == 4:
            records[index] = dict(records[index], targetState=7, statusValue="odd")
        elif kind == 5:
            records[index] = dict(records[index], name="x" * 3000)  # cut to the cap
        elif kind == 6:  # a new group
            records.insert(index, dict(records[index], id=f"new-{rng.random()}"))
        else:  # two groups swap places
            other = rng.randrange(len(records))
            records[index], records[other] = records[other], records[index]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_every_poll_serves_what_rendering_it_from_scratch_serves(seed: int) -> None:
    rng = random.Random(seed)
    tenant = ChurningTenant(400, 0.03, seed=seed)
    pipe = small(GroupPipeline("acme"))
    tracker, dates = StateTracker(), DateParser("UTC")
    for poll in range(10):
        tenant.step()
        records = json.loads(tenant.body())
        mutate(records, rng)
        body = json.dumps(records).encode()
        now = 1_700_000_000.0 + 60 * poll
        got = pipe.process(body, now)
        reference = parse_payload(body)
        samples = tracker.observe(reference.groups, now, dates)
        want = render_groups("acme", samples)
        assert text(got.block) == text(want), f"poll {poll}"
        assert [(f.crc, f.size) for f in got.block.families] == [
            (f.crc, f.size) for f in want.families
        ]
        assert (got.block.groups, got.block.truncated) == (want.groups, want.truncated)
        assert got.counts == count_by_state(samples)
        assert got.invalid == reference.invalid
        assert sorted(got.problems) == sorted(reference.problems)
        assert pipe.tracker.lifecycle == tracker.lifecycle


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records decoded by the pipeline, per call of `process`."""
    decoded: list[int] = []
    one, many = pipeline.decode_record, pipeline.decode_records

    def count_one(*args: Any) -> Any:
        decoded[-1] += 1
        return one(*args)

    def count_many(items: Any, *args: Any) -> Any:
        decoded[-1] += len(items)
        return many(items, *args)

    monkeypatch.setattr(pipeline, "decode_record", count_one)
    monkeypatch.setattr(pipeline, "decode_records", count_many)
    return decoded


def run(pipe: GroupPipeline, decoded: list[int], body: bytes, now: float) -> Processed:
    decoded.append(0)
    return pipe.process(body, now)


class Reference:
    """Each poll rendered from scratch, with the state tracker's memory of the same polls."""

    def __init__(self, max_label_length: int = DEFAULT_MAX_LABEL_LENGTH) -> None:
        self.tracker, self.dates = StateTracker(), DateParser("UTC")
        self.max_label_length = max_label_length

    def text(self, body: bytes, now: float) -> bytes:
        samples = self.tracker.observe(parse_payload(body).groups, now, self.dates)
        return text(render_groups("acme", samples, self.max_label_length))


def test_a_poll_decodes_only_the_records_that_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = counting(monkeypatch)
    tenant, reference = ChurningTenant(300, 0.0), Reference()
    pipe = small(GroupPipeline("acme"), chunk=16, chunk_max=64)
    first = run(pipe, decoded, tenant.body(), 1.0)
    assert decoded == [300]
    assert text(first.block) == reference.text(tenant.body(), 1.0)
    run(pipe, decoded, tenant.body(), 2.0)
    assert decoded[-1] == 0  # nothing changed: every chunk reused as it was
    reference.text(tenant.body(), 2.0)
    tenant.changed_per_step = 3
    tenant.step()
    changed = run(pipe, decoded, tenant.body(), 3.0)
    assert decoded[-1] == 3  # spliced into their chunks
    assert text(changed.block) == reference.text(tenant.body(), 3.0) != text(first.block)


def test_a_chunk_keeps_each_records_key_in_eight_bytes_for_the_next_poll() -> None:
    """The keys kept between polls are the hashes of the records' bytes, in an array of
    8-byte items (as int objects they took 3 MB more at 100,000 groups)."""
    tenant = ChurningTenant(300, 0.0)
    pipe = small(GroupPipeline("acme"), chunk=16, chunk_max=64)
    pipe.process(tenant.body(), 1.0)
    records = json.loads(tenant.body())
    kept = list(pipe._last.values())
    assert sum(len(chunk.keys) for chunk in kept) == len(records) == 300
    for chunk in kept:
        assert (chunk.keys.typecode, chunk.keys.itemsize) == ("q", 8)
    sent = [
        json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() for record in records
    ]
    assert [key for chunk in kept for key in chunk.keys] == [hash(record) for record in sent]


def test_a_line_of_64_kib_or_more_spliced_into_a_chunk_of_short_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Line lengths are kept in 2 bytes while every line is shorter than 64 KiB; a splice
    that brings a longer one (a label cap raised that far) keeps them in 4, and the next
    splice still finds every line where it is."""
    decoded = counting(monkeypatch)
    records = json.loads(ChurningTenant(40, 0.0).body())
    pipe = small(GroupPipeline("acme", max_label_length=1 << 20), chunk=1 << 30, chunk_max=1000)
    reference = Reference(max_label_length=1 << 20)
    polls: list[Callable[[], None]] = [
        lambda: None,
        lambda: records[5].update(totalCount=records[5]["totalCount"] + 1),  # lengths measured
        lambda: records[5].update(name="n" * 70_000),  # a line over 64 KiB spliced in
        lambda: records[30].update(errorcount=records[30]["errorcount"] + 1),  # after it
        lambda: records[5].update(name="short again"),
    ]
    for now, change in enumerate(polls, 1):
        change()
        body = json.dumps(records).encode()
        got = run(pipe, decoded, body, float(now))
        assert text(got.block) == reference.text(body, float(now))
        if now > 1:
            assert decoded[-1] == 1  # spliced, not rendered whole
    (chunk,) = pipe._last.values()
    assert chunk.lengths is not None
    assert {lengths.typecode for lengths in chunk.lengths} == {"I"}


def test_chunks_are_cut_again_only_when_groups_come_or_go(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last poll's chunk spans stand while no group is added or removed (no look for
    every record's id); a group added, or one replaced at a chunk's start, cuts them again
    by the rule, as a fresh pipeline would; a group replaced inside a chunk is served
    right either way."""
    looks: list[int] = []
    pattern = pipeline._ID

    class Counting:
        def findall(self, body: bytes) -> list[bytes]:
            looks.append(1)
            return pattern.findall(body)

        def search(self, record: bytes) -> Any:
            return pattern.search(record)

    monkeypatch.setattr(pipeline, "_ID", Counting())
    records = json.loads(ChurningTenant(300, 0.0).body())
    pipe, reference = small(GroupPipeline("acme"), chunk=16, chunk_max=64), Reference()

    def poll(now: float) -> list[pipeline._Span]:
        body = json.dumps(records).encode()
        assert text(pipe.process(body, now).block) == reference.text(body, now)
        return pipe._spans

    spans = poll(1.0)
    assert len(looks) == 1 and len(spans) > 4
    records[5] = dict(records[5], totalCount=records[5]["totalCount"] + 1)
    assert poll(2.0) is spans and len(looks) == 1  # updated only: the same spans
    inside = next(i for i in range(1, 300) if all(i != start for start, _, _ in spans))
    records[inside] = dict(records[inside], id="replaced-inside")
    assert poll(3.0) is spans and len(looks) == 1  # served right, cut as before
    records.insert(7, dict(records[7], id="new"))
    fresh = small(GroupPipeline("acme"), chunk=16, chunk_max=64)
    fresh.process(json.dumps(records).encode(), 4.0)
    assert poll(4.0) == fresh._spans and len(looks) == 3  # cut again by the rule
    start = pipe._spans[2][0]
    records[start] = dict(records[start], id="replaced-at-a-start")
    poll(5.0)
    assert len(looks) == 4


def test_a_skipped_record_is_reported_at_every_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = counting(monkeypatch)
    records = json.loads(ChurningTenant(50, 0.0).body())
    records[10]["validcount"] = -1
    body = json.dumps(records).encode()
    pipe = small(GroupPipeline("acme"))
    first = run(pipe, decoded, body, 1.0)
    again = run(pipe, decoded, body, 2.0)
    assert first.invalid == again.invalid == 1
    assert first.problems == again.problems and "record 10" in first.problems[0]
    assert 0 < decoded[-1] < 50  # its chunk is decoded again, not the others
    assert text(first.block) == text(again.block)


def test_a_body_that_is_no_list_changes_nothing() -> None:
    tenant = ChurningTenant(80, 0.5)
    pipe = small(GroupPipeline("acme"))
    before = pipe.process(tenant.body(), 1.0)
    lifecycle = pipe.tracker.lifecycle
    with pytest.raises(PayloadError):
        pipe.process(b'{"code": 1001}', 2.0)
    after = pipe.process(tenant.body(), 3.0)
    assert text(after.block) == text(before.block)
    assert pipe.tracker.lifecycle is lifecycle


def test_a_body_only_pydantic_reads_is_rendered_whole_and_then_reused_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded = counting(monkeypatch)
    body = ChurningTenant(40, 0.0).body()
    odd = body.replace(b'"totalCount":', b'"totalCount": NaN, "x":', 1)  # not JSON to msgspec
    pipe = small(GroupPipeline("acme"))
    result = run(pipe, decoded, odd, 1.0)
    assert result.invalid == 1 and result.block.groups == 39
    assert decoded[-1] == 0  # pydantic read it whole
    run(pipe, decoded, body, 2.0)
    assert decoded[-1] == 40  # nothing kept from a body read whole
    run(pipe, decoded, body, 3.0)
    assert decoded[-1] == 0


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.update(createdOn=None),  # a line fewer in one family
        lambda r: r.update(name="y" * 3000),  # a label cut
        lambda r: r.update(id="another"),  # another group in its place
    ],
)
def test_a_change_a_splice_cannot_take_renders_the_chunk_whole(
    change: Callable[[dict[str, Any]], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded = counting(monkeypatch)
    records = json.loads(ChurningTenant(60, 0.0).body())
    reference = Reference()
    pipe = small(GroupPipeline("acme"), chunk=1 << 30, chunk_max=1000)  # one chunk
    body = json.dumps(records).encode()
    run(pipe, decoded, body, 1.0)
    reference.text(body, 1.0)
    change(records[7])
    body = json.dumps(records).encode()
    got = run(pipe, decoded, body, 2.0)
    assert decoded[-1] == 1 + 60  # the splice looked at the one record, then gave up
    assert text(got.block) == reference.text(body, 2.0)
