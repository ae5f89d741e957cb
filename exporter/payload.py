"""What both processes know of a payload without decoding one (so without msgspec,
which only the poller process loads): text as exported, error codes as label values,
and the error of a body that is no list of records. `records` decodes."""

from __future__ import annotations

import re


def text(value: str | None) -> str:
    """A text field as exported: JSON null and the API's string "null" both mean empty."""
    return "" if value is None or value == "null" else value


OTHER_CODE = "other"
_NUMERIC_CODE = re.compile(r"[0-9]{1,6}")


def error_code(value: object) -> str | None:
    """The `code` of an error object as a label value: `1001`, not `1001.0`.

    A label must come from a bounded vocabulary whatever the API sends (a
    misbehaving API could echo the request's key as its code): a number of up
    to six digits is kept, anything else becomes `other`.
    """
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e7:
        value = int(value)
    code = str(value).strip()
    if not code:
        return None
    return code if _NUMERIC_CODE.fullmatch(code) else OTHER_CODE


class PayloadError(Exception):
    """The body is not a JSON list of records."""

    def __init__(self, reason: str, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
