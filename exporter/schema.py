"""The lax reading of a target-group record: pydantic's schema of the API's quirks.

`records.parse_payload` reads the body with msgspec; whatever msgspec refuses
comes here, record by record, to be read as pydantic reads it and to have
its problems worded. This module is imported only then: pydantic stays out of
the poller process while the API sends what it documents.
"""

from __future__ import annotations

from typing import Annotated, NotRequired

import pydantic_core
from pydantic import ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError
from typing_extensions import TypedDict

__all__ = ["Record", "ValidationError", "from_json", "summary", "validate"]

Count = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Text = str | None


class Record(TypedDict):
    """The schema of one record as the API sends it: the fields the exporter uses.

    The reference reading, and the lax one: numbers become strings where text
    is expected, numeric strings and floats are accepted for counts, an id is
    stripped, unknown fields are ignored. `TargetGroup` reads the same records
    faster when their types are the documented ones; this schema decides the
    rest and words the problems.
    """

    __pydantic_config__ = ConfigDict(extra="ignore", coerce_numbers_to_str=True)  # type: ignore[misc]

    id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    totalCount: Count
    validcount: Count
    errorcount: Count
    name: NotRequired[Text]
    behaviour: NotRequired[Text]
    targetState: NotRequired[int | float | str | None]
    statusValue: NotRequired[Text]
    userGroup: NotRequired[Text]
    loadType: NotRequired[Text]
    source: NotRequired[Text]
    targetGroupType: NotRequired[Text]
    supportedChannels: NotRequired[tuple[str, ...] | str | None]
    createdOn: NotRequired[Text]
    lastUpdatedOn: NotRequired[Text]


_RECORD: TypeAdapter[Record] = TypeAdapter(Record)


def validate(record: object) -> Record:
    """One record as the API sends it (a dict, a list, anything) read by the schema;
    ValidationError when it is not one."""
    return _RECORD.validate_python(record)


def from_json(data: bytes | bytearray) -> object:
    """JSON as pydantic reads it (ValueError when it is not JSON)."""
    return pydantic_core.from_json(data)


def summary(exc: ValidationError) -> str:
    """The first problem of a record, as `field: message`."""
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "record"
    return f"{where}: {error['msg']}"
