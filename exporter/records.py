"""Target-group records: pydantic models that accept the payload's quirks.

Quirks handled (see the API description): counts as floats (`2.0`), strings
that say `"null"`, numbers where text is expected, unknown extra fields, and
dates such as `14/Dec/2022 15:16` in the tenant's (unstated) time zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import pydantic_core
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError


def _text(value: Any) -> Any:
    """Free text: JSON null and the string "null" both mean empty."""
    if value is None or value == "null":
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return value


def _identifier(value: Any) -> Any:
    value = _text(value)
    if isinstance(value, str) and not value.strip():
        raise ValueError("empty id")
    return value


def _channels(value: Any) -> Any:
    if value is None or value == "null":
        return []
    if isinstance(value, str):
        return [part for part in value.split(",") if part]
    return value


def _state(value: Any) -> Any:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return value
    return None  # an unknown state is kept as unknown, not rejected


Text = Annotated[str, BeforeValidator(_text)]
Count = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class TargetGroup(BaseModel):
    """One record of `GET {base}/target-groups`; fields the exporter uses only."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    id: Annotated[str, BeforeValidator(_identifier)]
    name: Text
    behaviour: Text = ""
    total_count: Count = Field(alias="totalCount")
    valid_count: Count = Field(alias="validcount")
    error_count: Count = Field(alias="errorcount")
    target_state: Annotated[int | None, BeforeValidator(_state)] = Field(None, alias="targetState")
    status_value: Text = Field("", alias="statusValue")
    user_group: Text = Field("", alias="userGroup")
    load_type: Text = Field("", alias="loadType")
    source: Text = ""
    target_group_type: Text = Field("", alias="targetGroupType")
    supported_channels: Annotated[list[Text], BeforeValidator(_channels)] = Field(
        default_factory=list, alias="supportedChannels"
    )
    created_on: Text = Field("", alias="createdOn")
    last_updated_on: Text = Field("", alias="lastUpdatedOn")

    @property
    def state(self) -> int | None:
        """0 in progress, 1 ready, None unknown; statusValue when targetState is absent."""
        if self.target_state is not None:
            return self.target_state
        status = self.status_value.strip().lower().replace(" ", "")
        return {"inprogress": 0, "ready": 1}.get(status)


_GROUP_LIST: TypeAdapter[list[TargetGroup]] = TypeAdapter(list[TargetGroup])


class PayloadError(Exception):
    """The body is not a JSON list of records."""

    def __init__(self, reason: str, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class ParsedPayload:
    groups: list[TargetGroup]
    invalid: int
    """Records skipped as malformed, duplicate ids included."""
    problems: tuple[str, ...]
    """A short reason per skipped record (for one log line per poll that skipped any)."""


def parse_payload(body: bytes) -> ParsedPayload:
    """Parse a response body into target groups, skipping malformed records.

    The fast path validates the whole body in one pass (pydantic-core parses
    the JSON itself); only a body with bad records is walked record by record.
    """
    try:
        return _dedupe(_GROUP_LIST.validate_json(body), invalid=0, problems=())
    except ValidationError:
        pass
    try:
        data = pydantic_core.from_json(body)
    except ValueError:
        raise PayloadError("body is not valid JSON") from None
    if isinstance(data, dict):
        code = data.get("code")
        if code is not None:
            raise PayloadError("error object in place of the list", code=_text(code) or None)
        raise PayloadError("JSON object in place of the list")
    if not isinstance(data, list):
        raise PayloadError(f"JSON {type(data).__name__} in place of the list")
    groups: list[TargetGroup] = []
    problems: list[str] = []
    for index, item in enumerate(data):
        try:
            groups.append(TargetGroup.model_validate(item))
        except ValidationError as exc:
            problems.append(f"record {index}: {_summary(exc)}")
    return _dedupe(groups, invalid=len(problems), problems=tuple(problems))


def _summary(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "record"
    return f"{where}: {error['msg']}"


def _dedupe(groups: list[TargetGroup], invalid: int, problems: tuple[str, ...]) -> ParsedPayload:
    """Keep the first record of each id; later duplicates count as invalid."""
    seen: set[str] = set()
    unique: list[TargetGroup] = []
    duplicates: list[str] = []
    for group in groups:
        if group.id in seen:
            duplicates.append(f"duplicate id {group.id}")
            continue
        seen.add(group.id)
        unique.append(group)
    if not duplicates:
        return ParsedPayload(groups, invalid, problems)
    return ParsedPayload(unique, invalid + len(duplicates), problems + tuple(duplicates))


_DATE = re.compile(r"\s*(\d{1,2})/([A-Za-z]{3})/(\d{4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*")
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}


class DateParser:
    """`14/Dec/2022 15:16` in the tenant's time zone -> Unix seconds, cached.

    Dates have minute precision, so a tenant repeats the same strings a lot; the
    cache keeps parsing out of the way of large polls.
    """

    _CACHE_LIMIT = 200_000

    def __init__(self, timezone: str) -> None:
        self._zone = ZoneInfo(timezone)
        self._cache: dict[str, float | None] = {}

    def __call__(self, text: str) -> float | None:
        if not text:
            return None
        try:
            return self._cache[text]
        except KeyError:
            pass
        if len(self._cache) >= self._CACHE_LIMIT:
            self._cache.clear()
        value = self._cache[text] = self._parse(text)
        return value

    def _parse(self, text: str) -> float | None:
        match = _DATE.fullmatch(text)
        if match is None:
            return None
        day, month_name, year, hour, minute, second = match.groups()
        month = _MONTHS.get(month_name.lower())
        if month is None:
            return None
        try:
            moment = datetime(
                int(year),
                month,
                int(day),
                int(hour),
                int(minute),
                int(second or 0),
                tzinfo=self._zone,
            )
        except ValueError:
            return None
        return moment.timestamp()
