"""Exposition: exact values and labels, escaping, both formats, gzip stitched once."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import subprocess
import sys
import zlib

import pytest
from helpers import by_id, samples, series, text_of
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tools import require_tool

from exporter import __version__, pipeline
from exporter import body as gzip_body
from exporter import metrics as m
from exporter.exposition import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    Health,
    TenantExposition,
    assemble,
    cut_label,
    empty_group_block,
    escape,
    format_value,
    go_float,
    header,
    render,
    render_groups,
)
from exporter.pipeline import GroupPipeline
from exporter.records import DateParser, validate_record
from exporter.simulator import SEED_RECORDS
from exporter.snapshot import Durations, Lifecycle, StateTracker

HOSTILE = [
    'quote " inside',
    "back\\slash",
    "new\nline",
    "emoji 🚀📈 ünïcödé",
    "x" * 2000,
    'all \\" of\n them \\n',
    "",
]


def health(**overrides: object) -> Health:
    values: dict[str, object] = {
        "tenant": "acme",
        "up": True,
        "last_success": 1_800_000_000.5,
        "poll_duration": 0.25,
        "requests": 7,
        "failures": dict.fromkeys(m.DOCUMENTED_FAILURES, 0) | {("none", "timeout"): 2},
        "invalid": 1,
        "group_counts": {"in_progress": 1, "ready": 2},
    }
    values.update(overrides)
    return Health(**values)  # type: ignore[arg-type]


def samples_for(records: list[dict[str, object]], now: float = 1_800_000_000.0):  # type: ignore[no-untyped-def]
    groups = [validate_record(r) for r in records]
    return StateTracker().observe(groups, now, DateParser("UTC"))


def test_escape() -> None:
    assert escape('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert escape("plain") == "plain"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (2.0, "2"),
        (1671030960.0, "1671030960"),
        (0.25, "0.25"),
        (-3.0, "-3"),
        (1e300, "1e+300"),
        (1.5e9 + 0.25, "1.50000000025e+09"),
    ],
)
def test_format_value(value: float, text: str) -> None:
    assert format_value(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (2.0**53 - 1, "9007199254740991"),  # the largest float every integer below is exact
        (2.0**53, "9.007199254740992e+15"),  # from here on, as the Go clients write it
        (7, "7"),
        (float("nan"), "NaN"),
        (float("inf"), "+Inf"),
        (float("-inf"), "-Inf"),
        (-0.0, "0"),
    ],
)
def test_format_value_edges(value: float, text: str) -> None:
    assert format_value(value) == text


@given(st.floats() | st.integers(-(2**64), 2**64))
def test_go_float_is_prometheus_clients_float_to_go_string(value: float) -> None:
    """Its own copy, so that the poller process does not load prometheus_client for it."""
    from prometheus_client.utils import floatToGoString

    assert go_float(value) == floatToGoString(value)


@pytest.mark.parametrize("openmetrics", [False, True])
def test_a_counter_is_declared_by_its_family_name_in_openmetrics(openmetrics: bool) -> None:
    text = text_of(render(render_groups("acme", []), health()), openmetrics)
    counter = m.API_REQUESTS
    assert counter.name == f"{counter.family}_total"
    declared = counter.family if openmetrics else counter.name
    assert f"# HELP {declared} {counter.help}\n# TYPE {declared} counter\n" in text
    assert f"# TYPE {counter.name if openmetrics else counter.family} " not in text


@pytest.mark.parametrize("openmetrics", [False, True])
def test_seed_groups_exact_values_and_labels(openmetrics: bool) -> None:
    exposition = render(render_groups("acme", samples_for(list(SEED_RECORDS))), health())
    text = text_of(exposition, openmetrics)
    labels = frozenset(
        {
            "tenant": "acme",
            "id": "16705874370001",
            "name": "QA_Segemnt_Customer_ID_20221209120357",
            "behaviour": "S",
        }.items()
    )
    assert series(text, m.TOTAL_RECORDS.name, openmetrics)[labels] == 2
    assert series(text, m.VALID_RECORDS.name, openmetrics)[labels] == 2
    assert series(text, m.ERROR_RECORDS.name, openmetrics)[labels] == 0
    assert series(text, m.STATE.name, openmetrics)[labels] == 1
    assert series(text, m.CREATED.name, openmetrics)[labels] == 1670607180  # 09/Dec/2022 17:33 UTC
    assert series(text, m.LAST_UPDATED.name, openmetrics)[labels] == 1670607180
    assert series(text, m.STATE_SINCE.name, openmetrics)[labels] == 1670607180
    info = series(text, m.INFO.name, openmetrics)
    info_labels = labels | {
        ("status", "Ready"),
        ("user_group", "marketing"),
        ("load_type", "1"),
        ("source", "6"),
        ("target_group_type", "1"),
        ("channels", "A"),
    }
    assert info == {
        info_labels: 1,
        next(k for k in info if ("id", "16710111730000") in k): 1,
    }
    assert series(text, m.UP.name, openmetrics) == {frozenset({("tenant", "acme")}): 1}
    assert series(text, m.INVALID_GROUPS.name, openmetrics) == {frozenset({("tenant", "acme")}): 1}
    counts = series(text, m.GROUPS.name, openmetrics)
    assert {dict(k)["state"]: v for k, v in counts.items()} == {
        "in_progress": 1,
        "ready": 2,
        "unknown": 0,
    }


def test_every_metric_of_the_contract_is_exposed_with_help_and_type() -> None:
    text = text_of(render(render_groups("acme", samples_for(list(SEED_RECORDS))), health()))
    for metric in m.TENANT_FAMILIES:
        assert f"# HELP {metric.name} " in text
        assert f"# TYPE {metric.name} {metric.type}\n" in text
    exposed = {s.name for s in samples(text)}
    assert exposed == {name for metric in m.TENANT_FAMILIES for name in metric.series_names}
    for sample in samples(text):
        metric = next(x for x in m.TENANT_FAMILIES if sample.name in x.series_names)
        le = ("le",) if sample.name.endswith("_bucket") else ()
        assert tuple(sample.labels) == metric.labels + le


def test_failure_counters_include_the_documented_pairs_at_zero() -> None:
    text = text_of(render(render_groups("acme", ()), health()))
    failures = {
        (dict(k)["status"], dict(k)["code"]): v
        for k, v in series(text, m.API_FAILURES.name).items()
    }
    assert failures == dict.fromkeys(m.DOCUMENTED_FAILURES, 0) | {("none", "timeout"): 2}
    assert series(text, m.API_REQUESTS.name) == {frozenset({("tenant", "acme")}): 7}


def test_openmetrics_names_counter_families_without_total_and_ends_with_eof() -> None:
    text = text_of(render(render_groups("acme", ()), health()), openmetrics=True)
    assert "# TYPE webex_campaign_api_requests counter\n" in text
    assert "# TYPE webex_campaign_api_failures counter\n" in text
    assert text.endswith("# EOF\n")
    plain = text_of(render(render_groups("acme", ()), health()))
    assert "# TYPE webex_campaign_api_requests_total counter\n" in plain
    assert "# EOF" not in plain


@pytest.mark.parametrize("openmetrics", [False, True])
def test_hostile_names_round_trip(openmetrics: bool) -> None:
    records = [
        {**SEED_RECORDS[0], "id": f"id-{i}", "name": name, "userGroup": name}
        for i, name in enumerate(HOSTILE)
    ]
    tenant = 'ten"ant\\'
    block = render_groups(tenant, samples_for(records), max_label_length=4096)
    exposition = render(block, health(tenant=tenant))
    text = text_of(exposition, openmetrics)
    names = {
        s.labels["id"]: s.labels["name"]
        for s in samples(text, openmetrics)
        if s.name == m.TOTAL_RECORDS.name
    }
    assert names == {f"id-{i}": name for i, name in enumerate(HOSTILE)}
    tenants = {s.labels["tenant"] for s in samples(text, openmetrics)}
    assert tenants == {'ten"ant\\'}


@pytest.mark.parametrize(
    "odd", ['quote " inside', "back\\slash", "new\nline", "nul\x00byte", "%s%%"]
)
def test_labels_written_for_a_whole_chunk_equal_those_written_group_by_group(odd: str) -> None:
    """Label values are written for a whole chunk at once when none needs normalising or
    cutting, escaping their joined text: that must be what writing each group gives,
    with an odd value among plain ones, a `%` in the tenant, and a `null` beside them."""
    records = [{**SEED_RECORDS[0], "id": f"id-{i}", "name": f"plain_{i}"} for i in range(20)]
    records[7] = {**records[7], "name": odd, "userGroup": odd, "supportedChannels": [odd]}
    records[12] = {**records[12], "behaviour": "null"}
    tenant = 'ten%sant"'
    for chunk in (records[:7] + records[8:12], records[:12], records):  # plain, odd, null
        text = text_of(render(render_groups(tenant, samples_for(chunk)), health(tenant=tenant)))
        served = {
            (s.name, s.labels["id"]): s.labels
            for s in samples(text)
            if s.name in (m.TOTAL_RECORDS.name, m.INFO.name)
        }
        assert len(served) == 2 * len(chunk)
        per_group = {metric.name for metric in m.PER_GROUP}
        group_lines = [line for line in text.splitlines() if line.split("{")[0] in per_group]
        assert len(group_lines) >= 8 * len(chunk)
        assert all(f'{{tenant="{escape(tenant)}",id="id-' in line for line in group_lines)
        if odd in (record["name"] for record in chunk):  # the parser forgives a lone backslash
            assert f',name="{escape(odd)}",' in text
            assert f',user_group="{escape(odd)}",' in text
        for record in chunk:
            for name in (m.TOTAL_RECORDS.name, m.INFO.name):
                labels = served[name, record["id"]]
                assert labels["tenant"] == tenant
                assert labels["name"] == record["name"]
                assert labels["behaviour"] == ("" if record["behaviour"] == "null" else "S")
            info = served[m.INFO.name, record["id"]]
            assert info["user_group"] == record["userGroup"]
            assert info["channels"] == ",".join(record["supportedChannels"])


@pytest.mark.parametrize("field", ["name", "userGroup", "behaviour"])
def test_a_percent_sign_in_one_label_of_one_group_is_written_as_sent(field: str) -> None:
    """A family's lines are one template filled by `%`: a `%` in any label value (of the
    identity, or of info's own labels alone) is doubled first, or the values land in
    the wrong lines."""
    records = [{**SEED_RECORDS[0], "id": f"id-{i}", "name": f"plain_{i}"} for i in range(10)]
    records[3] = {**records[3], field: "100%s %d%%"}
    text = text_of(render(render_groups("acme", samples_for(records)), health(tenant="acme")))
    served = {(s.name, s.labels["id"]): s for s in samples(text) if "id" in s.labels}
    for index, record in enumerate(records):
        info = served[m.INFO.name, record["id"]].labels
        assert (info["name"], info["user_group"]) == (record["name"], record["userGroup"])
        assert info["behaviour"] == record["behaviour"]
        assert served[m.TOTAL_RECORDS.name, f"id-{index}"].value == record["totalCount"]


INFO_LABELS = {
    "status": "statusValue",
    "user_group": "userGroup",
    "load_type": "loadType",
    "source": "source",
    "target_group_type": "targetGroupType",
    "channels": "supportedChannels",
}


@pytest.mark.parametrize("openmetrics", [False, True])
@pytest.mark.parametrize("info_label", list(INFO_LABELS))
def test_hostile_info_labels_round_trip(openmetrics: bool, info_label: str) -> None:
    """Each label of the info series is escaped on its own (one forgotten `escape` breaks
    the whole scrape for Prometheus)."""
    field = INFO_LABELS[info_label]
    records = [
        {**SEED_RECORDS[0], "id": f"id-{i}", field: value} for i, value in enumerate(HOSTILE)
    ]
    exposition = render(
        render_groups("acme", samples_for(records), max_label_length=4096), health()
    )
    text = text_of(exposition, openmetrics)
    served = {
        s.labels["id"]: s.labels[info_label]
        for s in samples(text, openmetrics)
        if s.name == m.INFO.name
    }
    assert served == {f"id-{i}": value for i, value in enumerate(HOSTILE)}


def test_channels_as_a_list_are_joined() -> None:
    record = {**SEED_RECORDS[0], "supportedChannels": ["A", 'E"', "S"]}
    text = text_of(render(render_groups("acme", samples_for([record])), health()))
    (labels,) = series(text, m.INFO.name)
    assert dict(labels)["channels"] == 'A,E",S'


def test_gzip_is_one_valid_member_for_every_decoder() -> None:
    exposition = render(render_groups("acme", samples_for(list(SEED_RECORDS) * 1)), health())
    for body in (exposition.text, exposition.openmetrics):
        plain = body.plain()
        assert gzip.decompress(body.gzipped) == plain
        decoder = zlib.decompressobj(wbits=31)  # a single-member gzip reader, like curl's
        assert decoder.decompress(body.gzipped) == plain
        assert decoder.eof and decoder.unused_data == b""


def test_group_block_is_deflated_once_and_shared_by_formats_and_polls() -> None:
    block = render_groups("acme", samples_for(list(SEED_RECORDS)))
    first = render(block, health(requests=1))
    second = render(block, health(requests=2, up=False))
    for body in (first.text, first.openmetrics, second.text):
        served = {id(part) for part in body.gzip_parts}
        assert all(id(part) in served for part in block.parts)  # the very same bytes
        assert body.length == len(body.plain())
    assert b'api_requests_total{tenant="acme"} 2' in second.text.plain()
    assert b'webex_campaign_up{tenant="acme"} 0' in second.text.plain()


def many(count: int, **change: object) -> list[dict[str, object]]:
    return [
        {**SEED_RECORDS[0], "id": f"g{i}", "name": f"group {i}", "totalCount": float(i), **change}
        for i in range(count)
    ]


def body_of(records: list[dict[str, object]]) -> bytes:
    return json.dumps(records).encode()


def test_a_code_sent_as_a_number_or_as_text_is_one_label_value() -> None:
    """The fast decoder keeps `"loadType": 7` as sent and the label is written from it
    once per distinct set of values: 7 and "7" (two entries of that cache) say the
    same, poll after poll, whichever of them a group sent first."""
    pipe = GroupPipeline("acme")
    codes = {"loadType": 7, "source": "7", "targetGroupType": 0}
    swapped = {"loadType": "7", "source": 7, "targetGroupType": "0"}
    for now, (first, second) in enumerate([(codes, swapped), (swapped, codes)]):
        records = [{**record, **first} for record in many(3)]
        records += [{**record, "id": f"h{i}", **second} for i, record in enumerate(many(3))]
        block = pipe.process(body_of(records), 1_800_000_000.0 + now).block
        info = samples(text_of(render(block, health())))
        codes_seen = {
            (s.labels["load_type"], s.labels["source"], s.labels["target_group_type"])
            for s in info
            if s.name == m.INFO.name
        }
        assert codes_seen == {("7", "7", "0")}
        assert len([s for s in info if s.name == m.INFO.name]) == 6


def test_incremental_render_equals_a_fresh_one_and_reuses_unchanged_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(GroupPipeline, "CHUNK", 128)  # ~47 chunks; 4 of them change
    pipe = GroupPipeline("acme")
    first = pipe.process(body_of(many(6000)), 1_800_000_000.0).block
    records = many(6000)
    records[10]["errorcount"] = 5.0  # a value changes
    records[2500]["name"] = 'renamed "quoted"'  # a label changes
    del records[4000]  # a group goes
    records.append({**records[0], "id": "new", "name": "new group"})  # and one comes
    second = pipe.process(body_of(records), 1_800_000_000.0).block
    again = pipe.process(body_of(records), 1_800_000_000.0).block
    assert [id(part) for part in again.parts] == [id(part) for part in second.parts]
    fresh = render_groups("acme", samples_for(records))
    assert [(f.crc, f.size) for f in second.families] == [(f.crc, f.size) for f in fresh.families]
    plain = render(second, health()).text.plain()
    assert plain == render(fresh, health()).text.plain()
    reused = {id(part) for part in first.parts} & {id(part) for part in second.parts}
    assert len(reused) > len(second.parts) // 2  # most chunks came back untouched
    assert len(reused) < len(second.parts)  # the changed ones did not
    text = plain.decode()  # (string checks: the parser is slow on 48,000 lines)
    assert f'{m.ERROR_RECORDS.name}{{tenant="acme",id="g10",name="group 10",' in text
    assert 'id="g10",name="group 10",behaviour="S"} 5.0\n' in text
    assert 'id="g4000"' not in text
    assert 'name="renamed \\"quoted\\""' in text
    assert 'id="new"' in text


def test_chunks_found_under_the_same_anchor_are_never_taken_for_each_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reuse is exact: a chunk found by its first id is taken only if its records are
    the same bytes."""
    monkeypatch.setattr(GroupPipeline, "CHUNK_MAX", 64)  # 16 chunks, all known as "42"
    monkeypatch.setattr(pipeline, "_ID", re.compile(rb'"id":'))  # every anchor the same
    pipe = GroupPipeline("acme")
    pipe.process(body_of(many(1000)), 1_800_000_000.0)
    records = many(1000)
    records[500]["errorcount"] = 7.0
    block = pipe.process(body_of(records), 1_800_000_000.0).block
    assert (
        render(block, health()).text.plain()
        == render(render_groups("acme", samples_for(records)), health()).text.plain()
    )


def test_large_block_round_trips() -> None:
    # More than CHUNK_MAX groups: cut into chunks whatever the ids hash to.
    count = GroupPipeline.CHUNK_MAX + 1000
    records = [{**SEED_RECORDS[0], "id": f"g{i}", "name": f"group {i}"} for i in range(count)]
    block = GroupPipeline("acme").process(body_of(records), 1_800_000_000.0).block
    text = text_of(render(block, health()))
    assert len(by_id(text, m.TOTAL_RECORDS.name)) == count
    headers = sum(len(header(metric).encode()) for metric in m.PER_GROUP)
    assert block.size == len(text.encode()) - len(_tail_of(text)) - headers
    assert len(block.parts) > 8  # cut into chunks
    assert text.count(f"\n{m.TOTAL_RECORDS.name}{{") == count  # each group once


def _tail_of(text: str) -> bytes:
    return text[text.index("# HELP webex_campaign_target_groups ") :].encode()


def test_plain_pieces_stream_in_bounded_pieces() -> None:
    records = [{**SEED_RECORDS[0], "id": f"g{i}", "name": f"group {i}"} for i in range(2000)]
    body = render(render_groups("acme", samples_for(records)), health()).text
    pieces = list(body.plain_pieces(piece=4096))
    assert max(len(p) for p in pieces) <= 4096
    assert b"".join(pieces) == body.plain()
    assert len(b"".join(pieces)) == body.length


def test_unparseable_dates_leave_out_only_the_timestamp_series() -> None:
    record = {**SEED_RECORDS[0], "createdOn": "yesterday", "lastUpdatedOn": None}
    text = text_of(render(render_groups("acme", samples_for([record])), health()))
    names = {s.name for s in samples(text)}
    assert m.CREATED.name not in names
    assert m.LAST_UPDATED.name not in names
    assert m.TOTAL_RECORDS.name in names
    assert m.STATE_SINCE.name in names


def _lifecycle() -> Lifecycle:
    durations = Durations.empty().observe(45.0).observe(420.0).observe(100_000.0)
    return Lifecycle(
        transitions=Lifecycle().transitions
        | {("S", "in_progress", "ready"): 3, ('x"y', "ready", "unknown"): 1},
        durations={**Lifecycle().durations, "S": durations},
    )


@pytest.mark.parametrize("openmetrics", [False, True])
def test_lifecycle_counter_and_histogram_in_both_formats(openmetrics: bool) -> None:
    text = text_of(render(render_groups("acme", ()), health(lifecycle=_lifecycle())), openmetrics)
    transitions = {
        (s.labels["behaviour"], s.labels["from"], s.labels["to"]): s.value
        for s in samples(text, openmetrics)
        if s.name == m.TRANSITIONS.name
    }
    assert len(transitions) == 13  # 6 pairs for S and D at 0 or more, and the one seen
    assert transitions[("S", "in_progress", "ready")] == 3
    assert transitions[("D", "in_progress", "ready")] == 0
    assert transitions[('x"y', "ready", "unknown")] == 1
    name = m.IMPORT_DURATION.name
    buckets = {
        (s.labels["behaviour"], s.labels["le"]): s.value
        for s in samples(text, openmetrics)
        if s.name == name + "_bucket"
    }
    bounds = [*(str(float(b)) for b in m.IMPORT_DURATION_BUCKETS), "+Inf"]
    assert [buckets[("S", le)] for le in bounds] == [1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3]
    assert [buckets[("D", le)] for le in bounds] == [0] * 13
    sums = series(text, name + "_sum", openmetrics)
    counts = series(text, name + "_count", openmetrics)
    s_labels = frozenset({("tenant", "acme"), ("behaviour", "S")})
    assert sums[s_labels] == 100_465.0
    assert counts[s_labels] == 3
    assert counts[frozenset({("tenant", "acme"), ("behaviour", "D")})] == 0
    family = m.TRANSITIONS.family if openmetrics else m.TRANSITIONS.name
    assert f"# TYPE {family} counter\n" in text
    assert f"# TYPE {name} histogram\n" in text


def test_lifecycle_series_pass_promtool() -> None:
    # promtool reads the text format only; the OpenMetrics parser above checks the other.
    promtool = require_tool("promtool")
    exposition = render(
        render_groups("acme", samples_for(list(SEED_RECORDS))), health(lifecycle=_lifecycle())
    )
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=text_of(exposition),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_long_label_values_are_cut_visibly_and_counted() -> None:
    huge = "n" * 5_000_000  # a 5 MB group name
    records = [
        {**SEED_RECORDS[0], "id": "big", "name": huge, "source": "s" * 2000},
        {**SEED_RECORDS[0], "id": "big2", "name": huge + "2"},
        {**SEED_RECORDS[0], "id": "small", "name": "é" * 300},  # 600 bytes: fits
    ]
    block = render_groups("acme", samples_for(records), max_label_length=1024)
    assert block.truncated == 3  # two names and a source
    exposition = render(block, health(truncated=block.truncated))
    text = text_of(exposition)
    assert len(text) < 100_000
    by_name = {s.labels["id"]: s.labels for s in samples(text) if s.name == m.INFO.name}
    for labels in by_name.values():
        assert all(len(value.encode()) <= 1024 for value in labels.values())
    big, big2 = by_name["big"]["name"], by_name["big2"]["name"]
    assert big.startswith("nnnn") and big2.startswith("nnnn")
    assert big != big2  # the hash after the mark keeps them apart
    assert "…" in big and by_name["big"]["source"].startswith("sss")
    assert by_name["small"]["name"] == "é" * 300
    assert series(text, m.TRUNCATED_LABELS.name) == {frozenset({("tenant", "acme")}): 3.0}


@pytest.mark.parametrize("limit", [16, 17, 18, 19, 100])
def test_cut_values_fit_the_limit_in_utf8_bytes(limit: int) -> None:
    for value in ("🚀" * 300, "a" * 300, "aé" * 300):
        cut = cut_label(value, limit)
        assert cut is not None and len(cut.encode()) <= limit
        assert value.startswith(cut.split("…")[0])
    assert cut_label("a" * 16, 16) is None


def test_a_cut_value_ends_with_the_mark_and_eight_hex_digits_of_the_whole() -> None:
    value = "x" * 2000
    digest = hashlib.blake2b(value.encode(), digest_size=4).hexdigest()
    cut = cut_label(value, 100)
    assert cut == "x" * (100 - len("…".encode()) - 8) + "…" + digest


@settings(max_examples=300, deadline=None)
@given(tenant=st.text(min_size=1, max_size=40), name=st.text(max_size=80), id_=st.text(max_size=40))
def test_any_label_value_round_trips_through_the_official_parsers(
    tenant: str, name: str, id_: str
) -> None:
    record = {**SEED_RECORDS[0], "id": id_, "name": name, "userGroup": name}
    try:
        expected_id = validate_record(record).id  # the id as validated (stripped)
    except ValidationError:
        assume(False)  # an id of blanks is an invalid record, never rendered
    block = render_groups(tenant, samples_for([record]))
    exposition = render(block, health(tenant=tenant))
    for openmetrics in (False, True):
        info = [
            s
            for s in samples(text_of(exposition, openmetrics), openmetrics)
            if s.name == m.INFO.name
        ]
        assert len(info) == 1
        labels = info[0].labels
        expected_name = "" if name == "null" else name
        assert (labels["tenant"], labels["id"]) == (tenant, expected_id)
        assert (labels["name"], labels["user_group"]) == (expected_name, expected_name)


def test_health_series_exactly() -> None:
    """The series outside the group block, byte for byte, in both formats."""
    failures = {("429", "429"): 2, ("none", "timeout"): 1, ("200", 'a"b'): 0}
    state = health(
        tenant='ac"me',
        up=False,
        last_success=1_800_000_000.5,
        failures=failures,
        requests=7,
        invalid=3,
        group_counts={"ready": 2},
    )
    exposition = render(render_groups('ac"me', ()), state)
    python = ".".join(str(part) for part in sys.version_info[:3])
    t = 'tenant="ac\\"me"'
    samples_text = [
        f'webex_campaign_target_groups{{{t},state="in_progress"}} 0',
        f'webex_campaign_target_groups{{{t},state="ready"}} 2',
        f'webex_campaign_target_groups{{{t},state="unknown"}} 0',
        f"webex_campaign_up{{{t}}} 0",
        f"webex_campaign_last_poll_success_timestamp_seconds{{{t}}} 1.8000000005e+09",
        f"webex_campaign_poll_duration_seconds{{{t}}} 0.25",
        f"webex_campaign_invalid_target_groups{{{t}}} 3",
        f"webex_campaign_truncated_label_values{{{t}}} 0",
        f'webex_campaign_exporter_build_info{{{t},version="{__version__}",'
        f'python_version="{python}"}} 1',
        f"webex_campaign_api_requests_total{{{t}}} 7",
        f'webex_campaign_api_failures_total{{{t},status="200",code="a\\"b"}} 0',
        f'webex_campaign_api_failures_total{{{t},status="429",code="429"}} 2',
        f'webex_campaign_api_failures_total{{{t},status="none",code="timeout"}} 1',
    ]
    families = [
        m.GROUPS,
        m.UP,
        m.LAST_POLL_SUCCESS,
        m.POLL_DURATION,
        m.INVALID_GROUPS,
        m.TRUNCATED_LABELS,
        m.BUILD_INFO,
        m.API_REQUESTS,
        m.API_FAILURES,
    ]
    for openmetrics in (False, True):
        text = text_of(exposition, openmetrics)
        start = text.index(f"# HELP {m.GROUPS.name} ")
        # the lifecycle families (tested above) follow the health series
        end = text.index(f"# HELP {m.TRANSITIONS.family if openmetrics else m.TRANSITIONS.name} ")
        tail = text[start:end].splitlines()
        assert [line for line in tail if not line.startswith("#")] == samples_text
        names = [metric.family if openmetrics else metric.name for metric in families]
        assert [line for line in tail if line.startswith("# HELP")] == [
            f"# HELP {name} {metric.help}" for name, metric in zip(names, families, strict=True)
        ]
        assert [line for line in tail if line.startswith("# TYPE")] == [
            f"# TYPE {name} {metric.type}" for name, metric in zip(names, families, strict=True)
        ]
        assert text.endswith("# EOF\n") is openmetrics


def test_a_health_without_timings_leaves_their_series_out() -> None:
    text = text_of(render(render_groups("acme", ()), health(last_success=None, poll_duration=None)))
    names = {s.name for s in samples(text)}
    assert m.LAST_POLL_SUCCESS.name not in names
    assert m.POLL_DURATION.name not in names
    assert f"# TYPE {m.POLL_DURATION.name} gauge" in text  # the family is still declared


def test_gzip_length_is_the_bytes_sent() -> None:
    exposition = render(render_groups("acme", samples_for(list(SEED_RECORDS))), health())
    extra = b"process_open_fds 7\n"
    bodies = [exposition.text, exposition.openmetrics]
    bodies += [exposition.select(openmetrics, extra) for openmetrics in (False, True)]
    for body in bodies:
        assert body.gzip_length == len(body.gzipped)
        assert body.gzip_length < body.length  # and it is compressed


def test_metric_declarations_drive_the_per_group_series() -> None:
    """Each per-group family is exposed in declaration order, with the declared label
    names, and per group the value and label values its declaration reads."""
    seeds = samples_for(list(SEED_RECORDS))
    text = text_of(render(render_groups("acme", seeds), health()))
    families = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    per_group = [metric.name for metric in m.PER_GROUP]
    assert families[: len(per_group)] == per_group
    for metric in m.PER_GROUP:
        assert metric.value is not None
        found = series(text, metric.name)
        expected = {}
        for sample in seeds:
            labels = {"tenant": "acme"}
            for label in (*m.GROUP_IDENTITY, *metric.attributes):
                labels[label.name] = label.read(sample.group)
            assert set(labels) == set(metric.labels)
            value = metric.value(sample)
            if value is not None:
                expected[frozenset(labels.items())] = value
        assert found == expected, metric.name


@pytest.mark.parametrize("length", [0, 1, 7, 4096, (1 << 18) + 1, 3_000_001])
def test_combined_checksums_are_the_checksum_of_the_texts_joined(length: int) -> None:
    """crc(A + B + ...) from each text's CRC and length alone, empty texts included."""
    a = b"webex_campaign_up 1\n" * 50
    b = bytes(range(256)) * (length // 256) + bytes(length % 256)
    texts = [a, b, b"", b[: length // 3], a]
    checksums = [gzip_body.Checksum(zlib.crc32(text), len(text)) for text in texts]
    assert gzip_body.combine(checksums) == (zlib.crc32(b"".join(texts)), sum(map(len, texts)))


def test_the_empty_block_holds_no_series_and_renders_to_headers_and_health() -> None:
    """What a tenant serves before its first poll: no per-group samples at all."""
    block = empty_group_block()
    assert (block.groups, block.size, block.parts) == (0, 0, ())
    text = text_of(render(block, health()))
    for metric in m.PER_GROUP:
        assert series(text, metric.name) == {}
    assert f"# TYPE {m.TOTAL_RECORDS.name} gauge" in text


def test_series_read_at_scrape_time_join_the_same_gzip_stream() -> None:
    exposition = render(render_groups("acme", samples_for([SEED_RECORDS[0]])), health())
    extra = b"process_open_fds 7\n"
    text = exposition.select(False, extra).plain()
    assert text == exposition.text.plain() + extra
    openmetrics = exposition.select(True, extra).plain()
    assert openmetrics.endswith(extra + b"# EOF\n")
    assert openmetrics.count(b"# EOF") == 1
    assert exposition.select(False, extra).content_type == TEXT_CONTENT_TYPE
    assert exposition.select(True, extra).content_type == OPENMETRICS_CONTENT_TYPE


def test_a_long_value_shared_by_several_groups_counts_once_per_group() -> None:
    """The info labels of groups with the same attributes are written once and reused;
    each reuse of a cut value counts as a cut value."""
    source = "s" * 2000
    records = [{**SEED_RECORDS[0], "id": f"g{n}", "source": source} for n in range(3)]
    block = render_groups("acme", samples_for(records), max_label_length=1024)
    assert block.truncated == 3


def test_cut_values_add_up_over_chunks_and_reach_the_health_series(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(GroupPipeline, "CHUNK_MAX", 1)  # a chunk per group
    records = [{**SEED_RECORDS[0], "id": f"g{n}", "source": "s" * 2000} for n in range(3)]
    block = GroupPipeline("acme", max_label_length=1024).process(body_of(records), 0.0).block
    assert (block.truncated, block.groups) == (3, 3)
    tenant = TenantExposition.of(block, health())  # the count comes from the block
    assert (tenant.health.truncated, tenant.groups) == (3, 3)
    text = text_of(render(block, health()))
    assert series(text, m.TRUNCATED_LABELS.name) == {frozenset({("tenant", "acme")}): 3}


def test_a_tenant_with_other_health_keeps_its_groups() -> None:
    """The poller process died: the last groups are served with up 0."""
    block = render_groups("acme", samples_for([SEED_RECORDS[0]]))
    tenant = TenantExposition.of(block, health())
    down = tenant.with_health(health(up=False))
    assert down.health.up is False
    assert down.families[: len(m.PER_GROUP)] == tenant.families[: len(m.PER_GROUP)]
    assert (down.groups, down.tenant) == (tenant.groups, "acme")
    text = text_of(assemble([down]))
    assert series(text, m.UP.name) == {frozenset({("tenant", "acme")}): 0}
    assert len(by_id(text, m.TOTAL_RECORDS.name)) == 1
