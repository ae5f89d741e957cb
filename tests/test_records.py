"""Record parsing: the API's example, its quirks, and malformed records that are skipped."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import msgspec
import pytest
from helpers import text_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter import records, schema
from exporter.exposition import Health, render, render_groups
from exporter.records import DateParser, PayloadError, parse_payload, text, validate_record
from exporter.simulator import SEED_RECORDS
from exporter.snapshot import StateTracker


def body(records: object) -> bytes:
    return json.dumps(records).encode()


def reading(group: records.TargetGroup) -> dict[str, object]:
    """Every field of a group, its codes as the text they are exported as: msgspec keeps
    an integer code as sent (`1`), pydantic's schema makes it text (`"1"`)."""
    fields = msgspec.structs.asdict(group)
    for name in ("load_type", "source", "target_group_type"):
        del fields[f"{name}_sent"]
        fields[name] = getattr(group, name)
    return fields


def readings(parsed: records.ParsedPayload) -> tuple[object, ...]:
    return [reading(group) for group in parsed.groups], parsed.invalid, parsed.problems


def test_seed_example_parses_exactly() -> None:
    parsed = parse_payload(body(list(SEED_RECORDS)))
    assert parsed.invalid == 0
    first, second = parsed.groups
    assert first.id == "16710111730000"
    assert first.name == "sks_aap_campaign_14Dec_20221214094613"
    assert first.behaviour == "S"
    assert (first.total_count, first.valid_count, first.error_count) == (0, 0, 0)
    assert first.state == 1
    assert first.status_value == "Ready"
    assert first.user_group == "marketing"
    assert (first.load_type, first.source, first.target_group_type) == ("0", "6", "0")
    assert first.channels == "A"
    assert first.created_on == "14/Dec/2022 15:16"
    assert second.total_count == 2.0
    assert second.load_type == "1"


@pytest.mark.parametrize(
    ("change", "state"),
    [
        ({"targetState": 0}, 0),
        ({"targetState": "1"}, 1),
        ({"targetState": 1.0}, 1),
        ({"targetState": 7}, 1),  # unknown code: statusValue "Ready" decides
        ({"targetState": 7, "statusValue": "Archived"}, None),
        ({"targetState": None, "statusValue": "Inprogress"}, 0),
        ({"targetState": None, "statusValue": "ready"}, 1),
        ({"targetState": None, "statusValue": "Queued"}, None),
    ],
)
def test_state_from_target_state_then_status(change: dict[str, object], state: int | None) -> None:
    record = {**SEED_RECORDS[0], **change}
    assert parse_payload(body([record])).groups[0].state == state


def test_quirks_are_tolerated() -> None:
    record = {
        **SEED_RECORDS[0],
        "id": 16710111730000,
        "userGroup": "null",
        "totalCount": "5.0",
        "supportedChannels": "A,E",
        "brandNewField": {"nested": True},
    }
    group = parse_payload(body([record])).groups[0]
    assert group.id == "16710111730000"
    assert text(group.user_group) == ""
    assert group.total_count == 5
    assert group.channels == "A,E"


@pytest.mark.parametrize(
    "broken",
    [
        {"id": None},
        {"id": ""},
        {"totalCount": "many"},
        {"validcount": -1},
        {"errorcount": None},
        {"name": ["not", "text"]},
    ],
)
def test_malformed_record_is_skipped_and_counted(broken: dict[str, object]) -> None:
    records = [SEED_RECORDS[0], {**SEED_RECORDS[1], **broken}]
    parsed = parse_payload(body(records))
    assert [g.id for g in parsed.groups] == ["16710111730000"]
    assert parsed.invalid == 1
    assert parsed.problems[0].startswith("record 1:")


def test_non_objects_in_list_are_invalid_records() -> None:
    parsed = parse_payload(body([SEED_RECORDS[0], 42, "x", None]))
    assert len(parsed.groups) == 1
    assert parsed.invalid == 3


def test_duplicate_ids_keep_the_first_and_count_the_rest() -> None:
    dup = {**SEED_RECORDS[0], "name": "second copy"}
    parsed = parse_payload(body([SEED_RECORDS[0], dup, SEED_RECORDS[1], dup]))
    assert [g.name for g in parsed.groups] == [SEED_RECORDS[0]["name"], SEED_RECORDS[1]["name"]]
    assert parsed.invalid == 2


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", None),
        (b'[{"id": "1", "name": "trunc', None),
        (b'{"items": []}', None),
        (b'"just a string"', None),
        (b'{"code": 1001, "description": "Invalid JSON"}', "1001"),
        (b'{"code": "498", "description": "expired"}', "498"),
    ],
)
def test_bodies_that_are_not_a_list_fail_the_poll(payload: bytes, code: str | None) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_payload(payload)
    assert caught.value.code == code


def test_empty_list_is_a_valid_empty_tenant() -> None:
    parsed = parse_payload(b"[]")
    assert (parsed.groups, parsed.invalid) == ([], 0)


@pytest.mark.parametrize(
    ("zone", "text", "expected"),
    [
        ("UTC", "14/Dec/2022 15:16", datetime(2022, 12, 14, 15, 16, tzinfo=UTC)),
        ("Asia/Kolkata", "14/Dec/2022 15:16", datetime(2022, 12, 14, 9, 46, tzinfo=UTC)),
        ("Europe/Berlin", "01/Jul/2023 00:05", datetime(2023, 6, 30, 22, 5, tzinfo=UTC)),
        ("UTC", "1/jan/2024 7:05:09", datetime(2024, 1, 1, 7, 5, 9, tzinfo=UTC)),
    ],
)
def test_dates_in_the_tenant_zone(zone: str, text: str, expected: datetime) -> None:
    assert DateParser(zone)(text) == expected.timestamp()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "null",
        "2022-12-14T15:16:00Z",
        "31/Feb/2022 10:00",
        "1/Foo/2022 1:00",
        "14/Dec/2022 15:75",
    ],
)
def test_unparseable_dates_are_absent(text: str) -> None:
    assert DateParser("UTC")(text) is None


def many(count: int) -> list[dict[str, object]]:
    return [{**SEED_RECORDS[0], "id": f"g{i}", "name": f"group {i}"} for i in range(count)]


@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")])
def test_large_lists_parse_whole(separators: tuple[str, str]) -> None:
    payload = json.dumps(many(3000), separators=separators).encode()
    parsed = parse_payload(payload)
    assert [g.id for g in parsed.groups] == [f"g{i}" for i in range(3000)]
    assert parsed.invalid == 0


def test_bad_records_far_down_the_list_keep_their_index() -> None:
    items: list[object] = many(300)
    items[250] = {"id": "broken"}
    items[251] = "not a record"
    parsed = parse_payload(body(items))
    assert parsed.invalid == 2
    assert parsed.problems[0].startswith("record 250:")
    assert parsed.problems[1].startswith("record 251:")
    assert len(parsed.groups) == 298


@pytest.mark.parametrize(
    "trap",
    [
        {"name": 'tricky "}, {" name'},
        {"extra": [{"a": 1}, {"b": 2}] * 40},
    ],
)
def test_records_with_json_inside_parse_like_others(trap: dict[str, object]) -> None:
    items = many(300)
    for index in range(0, 300, 7):
        items[index] = {**items[index], **trap}
    parsed = parse_payload(body(items))
    assert [g.id for g in parsed.groups] == [f"g{i}" for i in range(300)]
    assert parsed.groups[0].name == items[0]["name"]


def test_truncated_large_body_still_fails_the_poll() -> None:
    with pytest.raises(PayloadError):
        parse_payload(body(many(300))[:-500])


def test_the_documented_types_take_the_fast_path_with_codes_as_text() -> None:
    """Integer codes (`"loadType": 1`) read as text by the fast decoder, as by pydantic."""
    record = {**SEED_RECORDS[1], "loadType": 1, "source": 6, "targetGroupType": None}
    (fast,) = records._GROUPS.decode(body([record]))
    assert (fast.load_type, fast.source, fast.target_group_type) == ("1", "6", None)
    assert fast.load_type_sent == 1  # made text when a label is written, not when decoded
    assert reading(fast) == reading(validate_record(record))


@pytest.mark.parametrize(
    "record",
    [
        {"id": "  padded  "},  # pydantic strips it
        {"id": 42},  # a number where text is expected
        {"userGroup": 7, "loadType": 1.5},
        {"totalCount": "5.0"},
        {"supportedChannels": [1, 2]},
        {"targetState": True},
    ],
)
def test_quirks_msgspec_refuses_are_read_by_pydantic(record: dict[str, object]) -> None:
    payload = body([SEED_RECORDS[0], {**SEED_RECORDS[1], **record}])
    parsed = parse_payload(payload)
    assert parsed.invalid == 0
    assert list(map(reading, parsed.groups)) == [
        reading(validate_record(r)) for r in json.loads(payload)
    ]


def test_a_blank_id_is_invalid_whichever_decoder_reads_it() -> None:
    parsed = parse_payload(body([SEED_RECORDS[0], {**SEED_RECORDS[1], "id": " \t"}]))
    assert [g.id for g in parsed.groups] == [SEED_RECORDS[0]["id"]]
    assert parsed.problems == ("record 1: id: String should have at least 1 character",)


def test_a_key_sent_twice_counts_its_last_value_in_both_decoders() -> None:
    one = json.dumps(SEED_RECORDS[0])[:-1]
    payload = f'[{one}, "totalCount": 9.0}}]'.encode()
    assert parse_payload(payload).groups[0].total_count == 9.0
    assert pydantic_reading(payload).groups[0].total_count == 9.0


def pydantic_reading(payload: bytes) -> records.ParsedPayload:
    """The reference: the whole body read by the pydantic schema alone."""
    groups: list[records.TargetGroup] = []
    problems: list[str] = []
    records._parse_with_pydantic(payload, groups, problems)
    return records._dedupe(groups, len(problems), tuple(problems))


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=8,
)
FIELDS = [*schema.Record.__annotations__, "unknownField"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from(FIELDS), JSON, min_size=1, max_size=4))
def test_any_json_in_any_field_is_accepted_or_counted_invalid(changes: dict[str, object]) -> None:
    record = {**SEED_RECORDS[0], **changes}
    parsed = parse_payload(body([record, SEED_RECORDS[1]]))
    assert len(parsed.groups) + parsed.invalid == 2
    assert parsed.groups[-1].id == SEED_RECORDS[1]["id"]
    # Whatever was accepted goes through the rest of the pipeline and parses back.
    samples = StateTracker().observe(parsed.groups, 1_800_000_000.0, DateParser("Europe/Berlin"))
    exposition = render(render_groups("acme", samples), health_of(parsed.invalid))
    families = list(parse_text(text_of(exposition)))
    assert any(family.name == "webex_campaign_target_group_total_records" for family in families)


def health_of(invalid: int) -> Health:
    return Health("acme", True, 1.0, 0.1, 1, {}, invalid)


def test_problems_name_the_record_the_field_and_what_is_wrong() -> None:
    """The examples the `invalid_records` log line shows an operator."""
    good = {"id": "a", "totalCount": 1, "validcount": 1, "errorcount": 0}
    parsed = parse_payload(
        body([good, {**good, "id": "b", "totalCount": "x"}, {"id": "c"}, 5, good])
    )
    assert parsed.invalid == 4
    assert parsed.problems == (
        "record 1: totalCount: Input should be a valid number, unable to parse string as a number",
        "record 2: totalCount: Field required",
        "record 3: record: Input should be a valid dictionary",
        "duplicate id a",
    )


@pytest.mark.parametrize(
    ("payload", "reason", "code"),
    [
        (b'{"items": []}', "JSON object in place of the list", None),
        (b'"groups"', "JSON str in place of the list", None),
        (b"<html>", "body is not valid JSON", None),
        (
            b'{"code": 1001, "description": "Invalid JSON"}',
            "error object in place of the list",
            "1001",
        ),
    ],
)
def test_payload_errors_say_why(payload: bytes, reason: str, code: str | None) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_payload(payload)
    assert (str(caught.value), caught.value.reason, caught.value.code) == (reason, reason, code)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=4), max_size=3))
def test_the_fast_path_reads_any_list_as_pydantic_does(changes: list[dict[str, object]]) -> None:
    """msgspec never accepts what pydantic refuses, nor reads it differently."""
    items = [{**SEED_RECORDS[index % 2], **change} for index, change in enumerate(changes)]
    payload = body(items)
    assert readings(parse_payload(payload)) == readings(pydantic_reading(payload))


def test_dates_answered_from_the_recent_ones_match_a_fresh_parse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(DateParser, "_RECENT_LIMIT", 3)
    dates = DateParser("Europe/Berlin")
    strings = ["14/Dec/2022 15:16", "null", "01/Jul/2023 00:05", "bad", "14/Dec/2022 15:16"] * 3
    assert [dates(s) for s in strings] == [DateParser("Europe/Berlin")(s) for s in strings]
    assert len(dates._recent) <= 3


def test_a_body_only_pydantic_reads_keeps_its_good_records_and_words_the_bad_ones() -> None:
    """NaN is not JSON to msgspec; pydantic reads the body, and refuses the NaN count."""
    good = {"id": "1", "totalCount": 2, "validcount": 1, "errorcount": 1}
    body = b"[" + json.dumps(good).encode() + b',{"id":"2","totalCount":NaN,"validcount":1}]'
    parsed = parse_payload(body)
    assert [group.id for group in parsed.groups] == ["1"]
    assert parsed.problems == ("record 1: totalCount: Input should be a finite number",)


def test_a_nested_problem_says_where_in_the_record(monkeypatch: pytest.MonkeyPatch) -> None:
    good = {"id": "1", "totalCount": 2, "validcount": 1, "errorcount": 1}
    body = json.dumps([{**good, "supportedChannels": ["A", {"x": 1}]}]).encode()
    assert parse_payload(body).problems == (
        "record 0: supportedChannels.tuple[str, ...].1: Input should be a valid string",
    )


def test_records_as_documented_never_reach_the_lax_schema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """msgspec's reading stands for ids without blanks around them: pydantic is not asked."""

    def refuse(*_args: object) -> None:
        raise AssertionError("the lax schema was asked")

    monkeypatch.setattr(records, "_validate_one", refuse)
    body = json.dumps(
        [{"id": f"id {n}", "totalCount": 1, "validcount": 1, "errorcount": 0} for n in range(3)]
    ).encode()
    assert [group.id for group in parse_payload(body).groups] == ["id 0", "id 1", "id 2"]


class CountingParser(DateParser):
    """Counts the parses that miss the recent answers, and those the fast path cannot take."""

    def __init__(self) -> None:
        super().__init__("UTC")
        self.parses = 0
        self.slow = 0

    def _parse(self, value: str | None) -> float | None:
        self.parses += 1
        return super()._parse(value)

    def _slow(self, value: str) -> float | None:
        self.slow += 1
        return super()._slow(value)


def test_dates_in_the_api_form_take_the_fast_path_and_repeats_are_remembered() -> None:
    parse = CountingParser()
    values = [f"14/Dec/2022 15:{minute:02d}" for minute in range(60)]
    assert [parse(value) for value in values] == [1671030000.0 + 60 * m for m in range(60)]
    assert (parse.parses, parse.slow) == (60, 1)  # one slow parse: the hour's start
    assert parse(values[7]) == 1671030420.0
    assert parse.parses == 60  # answered from the recent ones
    assert parse("null") is None and parse("") is None and parse(None) is None
    assert parse.slow == 1
    assert parse("14/Dec/2022 15:ab") is None  # the API's length, not its form
    assert parse("14/Dec/2022 15:60") is None


def test_codes_sent_as_integers_are_read_as_text_by_the_fast_path() -> None:
    record = {
        "id": "1",
        "totalCount": 1,
        "validcount": 1,
        "errorcount": 0,
        "behaviour": "S",
        "statusValue": "Ready",
        "userGroup": "ops",
        "loadType": 1,
        "source": "web",
        "targetGroupType": 2,
        "supportedChannels": ["E", "S"],
    }
    (group,) = parse_payload(json.dumps([record]).encode()).groups
    fields = (
        "behaviour",
        "status_value",
        "user_group",
        "load_type",
        "source",
        "target_group_type",
        "supported_channels",
    )
    assert [getattr(group, name) for name in fields] == [
        "S",
        "Ready",
        "ops",
        "1",
        "web",
        "2",
        ("E", "S"),
    ]
