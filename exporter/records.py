"""Target-group records: a msgspec fast path, and pydantic's schema (`schema`) for the quirks.

Quirks handled (see the API description): counts as floats (`2.0`), strings
that say `"null"`, numbers where text is expected, unknown extra fields, and
dates such as `14/Dec/2022 15:16` in the tenant's (unstated) time zone.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Annotated
from zoneinfo import ZoneInfo

import msgspec

from .payload import OTHER_CODE as OTHER_CODE
from .payload import PayloadError as PayloadError
from .payload import error_code as error_code
from .payload import text as text

Text = str | None
# msgspec's reading of a count: a JSON number, finite (1e400 is out of range), not negative.
_Count = Annotated[float, msgspec.Meta(ge=0, le=sys.float_info.max)]
# A code as sent: the API sends most as integers (`"loadType": 1`), exported as text.
_Code = str | int | None
if TYPE_CHECKING:
    from .schema import Record


class TargetGroup(msgspec.Struct, frozen=True, gc=False):
    """One validated target group, ~500 bytes with its strings.

    A msgspec struct decoded straight from the body's bytes: built, compared
    and hashed in C, and untracked by the cyclic GC (its fields are strings,
    numbers and a tuple of strings, which cannot form a cycle). The poller
    keeps none between polls, and only one chunk's while it renders
    (`pipeline`), so nothing is shared between them to save memory.

    Text is kept as sent; normalising it (`text()`), the state (`state`), the
    channels (`channels`) and the codes as text (`load_type`, `source`,
    `target_group_type`, from the `*_sent` fields: an integer is not made text
    when decoded, a microsecond a record, but when a label is written for it,
    once per distinct set of values) happens where they are used.
    """

    id: str
    total_count: _Count = msgspec.field(name="totalCount")
    valid_count: _Count = msgspec.field(name="validcount")
    error_count: _Count = msgspec.field(name="errorcount")
    name: Text = None
    behaviour: Text = None
    target_state: int | float | str | None = msgspec.field(default=None, name="targetState")
    status_value: Text = msgspec.field(default=None, name="statusValue")
    user_group: Text = msgspec.field(default=None, name="userGroup")
    load_type_sent: _Code = msgspec.field(default=None, name="loadType")
    source_sent: _Code = msgspec.field(default=None, name="source")
    target_group_type_sent: _Code = msgspec.field(default=None, name="targetGroupType")
    supported_channels: tuple[str, ...] | str | None = msgspec.field(
        default=None, name="supportedChannels"
    )
    created_on: Text = msgspec.field(default=None, name="createdOn")
    last_updated_on: Text = msgspec.field(default=None, name="lastUpdatedOn")

    @classmethod
    def of(cls, record: Record) -> TargetGroup:
        """A record as pydantic validated it (the slow path) as a target group."""
        return cls(
            record["id"],
            record["totalCount"],
            record["validcount"],
            record["errorcount"],
            record.get("name"),
            record.get("behaviour"),
            record.get("targetState"),
            record.get("statusValue"),
            record.get("userGroup"),
            record.get("loadType"),
            record.get("source"),
            record.get("targetGroupType"),
            record.get("supportedChannels"),
            record.get("createdOn"),
            record.get("lastUpdatedOn"),
        )

    @property
    def state(self) -> int | None:
        """0 in progress, 1 ready, None unknown; statusValue when targetState says neither."""
        value = self.target_state
        if type(value) is int and (value == 0 or value == 1):
            return value  # as the API sends it
        if isinstance(value, str) and value.strip() in ("0", "1"):
            return int(value)
        if isinstance(value, int | float) and not isinstance(value, bool) and value in (0, 1):
            return int(value)
        status = text(self.status_value).strip().lower().replace(" ", "")
        return _STATUSES.get(status)

    @property
    def load_type(self) -> str | None:
        return _code_text(self.load_type_sent)

    @property
    def source(self) -> str | None:
        return _code_text(self.source_sent)

    @property
    def target_group_type(self) -> str | None:
        return _code_text(self.target_group_type_sent)

    @property
    def channels(self) -> str:
        """supportedChannels as one label value: `A,E`."""
        value = self.supported_channels
        if value is None or value == "null":
            return ""
        if isinstance(value, str):
            return value
        return ",".join(value)


def _code_text(value: _Code) -> str | None:
    """A code as text, as pydantic's schema reads it: `1` is `"1"`."""
    return str(value) if isinstance(value, int) else value


# The fast path: records exactly as the API sends them, straight from the bytes.
_GROUPS = msgspec.json.Decoder(list[TargetGroup])
_GROUP = msgspec.json.Decoder(TargetGroup)
_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])


def validate_record(record: object) -> TargetGroup:
    """One record, as the API sends it (a dict), validated by the lax schema."""
    from . import schema  # pydantic: loaded the first time a record needs it

    return TargetGroup.of(schema.validate(record))


@dataclass(frozen=True)
class ParsedPayload:
    groups: list[TargetGroup]
    invalid: int
    """Records skipped as malformed, duplicate ids included."""
    problems: tuple[str, ...]
    """A short reason per skipped record (for one log line per poll that skipped any)."""


Body = bytes | bytearray


def parse_payload(body: Body) -> ParsedPayload:
    """Parse a response body into target groups, skipping malformed records.

    Two decoders, one schema. msgspec decodes the body's bytes (no str copy,
    no intermediate dicts) into `TargetGroup` structs when every record has
    the types the API documents, which is the case poll after poll. Whatever
    it refuses is decided by pydantic, the `Record` schema's lax reading
    (numbers as text, text as numbers, stray whitespace in an id) and the
    source of the `problems` wording: a record msgspec refuses is validated
    alone by pydantic; a body msgspec cannot read as a list at all is left to
    pydantic whole, which says why it is not one. msgspec never accepts a
    record pydantic refuses, nor reads one differently (tests/test_records.py
    checks both).
    """
    groups: list[TargetGroup] = []
    problems: list[str] = []
    try:
        groups = _GROUPS.decode(body)
    except msgspec.ValidationError:
        _parse_each(body, groups, problems)
    except msgspec.DecodeError:
        _parse_with_pydantic(body, groups, problems)
    else:
        if not _clean_ids(groups):
            groups = []
            _parse_each(body, groups, problems)
    return _dedupe(groups, len(problems), tuple(problems))


def _clean_id(group: TargetGroup) -> bool:
    """Not empty, nothing for pydantic's schema to strip: msgspec's reading stands."""
    id_ = group.id
    return bool(id_) and not id_[0].isspace() and not id_[-1].isspace()


def _clean_ids(groups: list[TargetGroup]) -> bool:
    """`_clean_id` of every group, in C passes."""
    ids = list(map(_ID_OF, groups))
    return (
        all(ids)
        and not any(map(str.isspace, map(_FIRST, ids)))
        and not any(map(str.isspace, map(_LAST, ids)))
    )


_ID_OF = attrgetter("id")
_FIRST, _LAST = itemgetter(0), itemgetter(-1)


def _parse_each(body: Body, groups: list[TargetGroup], problems: list[str]) -> None:
    """A list with records msgspec refuses: each of those goes to pydantic alone."""
    try:
        items = _RAW_LIST.decode(body)
    except msgspec.ValidationError:
        _parse_with_pydantic(body, groups, problems)  # not a list: pydantic says what it is
        return
    for index, item in enumerate(items):
        group = decode_record(item, index, problems)
        if group is not None:
            groups.append(group)


def split_records(body: Body) -> list[msgspec.Raw] | ParsedPayload:
    """The body's records, each its own bytes (undecoded, a view of the body), or, for a
    body msgspec cannot read as a list (not JSON to it, or not a list), pydantic's
    parse of it whole. Raises PayloadError when the body is no list of records at all."""
    try:
        return _RAW_LIST.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        groups: list[TargetGroup] = []
        problems: list[str] = []
        _parse_with_pydantic(body, groups, problems)
        return ParsedPayload(groups, len(problems), tuple(problems))


def decode_records(
    items: Sequence[msgspec.Raw], start: int, problems: list[str]
) -> list[TargetGroup]:
    """Records of `split_records` from index `start` on: decoded as one list when msgspec
    takes them all as they are (the usual case), else one by one (`decode_record`)."""
    try:
        groups = _GROUPS.decode(b"[" + b",".join(items) + b"]")
    except msgspec.ValidationError:
        pass
    else:
        if _clean_ids(groups):
            return groups
    decoded = (decode_record(item, start + offset, problems) for offset, item in enumerate(items))
    return [group for group in decoded if group is not None]


def decode_record(item: msgspec.Raw, index: int, problems: list[str]) -> TargetGroup | None:
    """One record of `split_records`: msgspec's reading, or pydantic's when msgspec
    refuses it; None (and a problem) when pydantic refuses it too."""
    try:
        group = _GROUP.decode(item)
    except msgspec.ValidationError:
        pass
    else:
        if _clean_id(group):
            return group
    groups: list[TargetGroup] = []
    _validate_one(index, _lax_json(bytes(item)), groups, problems)
    return groups[0] if groups else None


def _lax_json(data: Body) -> object:
    from . import schema

    return schema.from_json(data)


def _validate_one(index: int, item: object, groups: list[TargetGroup], problems: list[str]) -> None:
    from . import schema

    try:
        groups.append(validate_record(item))
    except schema.ValidationError as exc:
        problems.append(f"record {index}: {schema.summary(exc)}")


def _parse_with_pydantic(body: Body, groups: list[TargetGroup], problems: list[str]) -> None:
    """What msgspec cannot read (not JSON to it, or not a list): pydantic's verdict.

    Each record is validated as a Python object, as `_parse_each` does, so that
    both read a number sent as an id the same way (`0.0` -> `"0.0"`).
    """
    try:
        data = _lax_json(body)
    except ValueError:
        raise PayloadError("body is not valid JSON") from None
    if isinstance(data, dict):
        code = data.get("code")
        if code is not None:
            raise PayloadError("error object in place of the list", code=error_code(code))
        raise PayloadError("JSON object in place of the list")
    if not isinstance(data, list):
        raise PayloadError(f"JSON {type(data).__name__} in place of the list")
    for index, item in enumerate(data):
        _validate_one(index, item, groups, problems)


def _dedupe(groups: list[TargetGroup], invalid: int, problems: tuple[str, ...]) -> ParsedPayload:
    """Keep the first record of each id; later duplicates count as invalid."""
    if len({group.id for group in groups}) == len(groups):
        return ParsedPayload(groups, invalid, problems)  # the usual case, checked in C
    seen: set[str] = set()
    unique: list[TargetGroup] = []
    duplicates: list[str] = []
    for group in groups:
        if group.id in seen:
            duplicates.append(f"duplicate id {group.id}")
            continue
        seen.add(group.id)
        unique.append(group)
    return ParsedPayload(unique, invalid + len(duplicates), problems + tuple(duplicates))


_UNSEEN = object()
_STATUSES = {"inprogress": 0, "ready": 1}
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_DATE = re.compile(r"\s*(\d{1,2})/([A-Za-z]{3})/(\d{4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*")


class DateParser:
    """`14/Dec/2022 15:16` in the tenant's time zone -> Unix seconds.

    Fast path for the API's exact form (`DD/Mon/YYYY HH:MM`): slice it and add
    the minutes to the cached start of that local hour, so a 100,000-group poll
    costs one dict lookup per date; DST is exact because offsets only change
    on the hour. Anything else goes through the regular expression. In front
    of both, the answers for the last few thousand strings: the groups that
    change in a poll were mostly updated in the same few minutes.
    """

    _CACHE_LIMIT = 100_000
    _RECENT_LIMIT = 4096

    def __init__(self, timezone: str) -> None:
        # datetime's own UTC is an order of magnitude faster than ZoneInfo("UTC").
        self._zone: tzinfo = UTC if timezone in ("UTC", "Etc/UTC") else ZoneInfo(timezone)
        self._hours: dict[str, float | None] = {}
        self._recent: dict[str | None, float | None] = {}

    def __call__(self, value: str | None) -> float | None:
        stamp = self._recent.get(value, _UNSEEN)
        if stamp is not _UNSEEN:
            return stamp  # type: ignore[return-value]
        if len(self._recent) >= self._RECENT_LIMIT:
            self._recent.clear()
        stamp = self._recent[value] = self._parse(value)
        return stamp

    def many(self, values: list[str | None]) -> list[float | None]:
        """`self(value)` for each value; those answered from the recent ones in C."""
        found = list(map(self._recent.get, values, repeat(_UNSEEN)))
        if _UNSEEN in found:
            for index, stamp in enumerate(found):
                if stamp is _UNSEEN:
                    found[index] = self(values[index])
        return found  # type: ignore[return-value]

    def _parse(self, value: str | None) -> float | None:
        if not value or value == "null":
            return None
        if len(value) != 17 or value[14] != ":":
            return self._slow(value)
        hour = value[:14]  # "14/Dec/2022 15": few distinct ones, even in a large tenant
        try:
            start = self._hours[hour]
        except KeyError:
            start = self._hour_start(hour)
        minute = value[15:]
        if start is None or not minute.isdigit() or minute > "59":
            return self._slow(value)
        return start + 60 * int(minute)

    def _hour_start(self, hour: str) -> float | None:
        if len(self._hours) >= self._CACHE_LIMIT:
            self._hours.clear()
        start = self._hours[hour] = self._slow(hour + ":00")
        return start

    def _slow(self, value: str) -> float | None:
        match = _DATE.fullmatch(value)
        if match is None:
            return None
        day, month_name, year, hour, minute, second = match.groups()
        return self._timestamp(
            int(year), month_name, int(day), int(hour), int(minute), int(second or 0)
        )

    def _timestamp(
        self, year: int, month_name: str, day: int, hour: int, minute: int, second: int
    ) -> float | None:
        month = _MONTHS.get(month_name.lower())
        if month is None:
            return None
        try:
            moment = datetime(year, month, day, hour, minute, second, tzinfo=self._zone)
        except ValueError:
            return None
        return moment.timestamp()
