"""JSON request bodies: DRF's parser with a nesting limit, and the same rules for raw bodies."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import IO, Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.settings import api_settings
from rest_framework.utils.json import strict_constant

MAX_NESTING = 64
# A string literal, or an unterminated one up to the end: brackets inside strings do not nest.
# Each character matches one branch only, so the scan is linear even on hostile input.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"?', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def nests_deeper_than(text: str, limit: int) -> bool:
    """Whether arrays and objects in JSON ``text`` open more than ``limit`` levels deep."""
    depth = 0
    for bracket in _BRACKET.finditer(_STRING.sub("", text)):
        if bracket.group() in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth = max(depth - 1, 0)  # a stray closer is the decoder's error to report
    return False


def loads(body: bytes | str, *, strict: bool | None = None) -> Any:
    """The JSON value of a request body; ParseError (a 400) if it is not JSON or nests too deep.

    The depth is checked before decoding: Python's decoder recurses once per level and
    would raise RecursionError (a 500) on a body of many thousands of ``[``.
    """
    try:
        text = body.decode() if isinstance(body, bytes) else body
    except UnicodeDecodeError:
        raise ParseError("JSON parse error - the body is not UTF-8.") from None
    if nests_deeper_than(text, MAX_NESTING):
        raise ParseError(
            f"JSON parse error - arrays and objects nest deeper than {MAX_NESTING} levels."
        )
    strict = api_settings.STRICT_JSON if strict is None else strict
    try:
        return json.loads(text, parse_constant=strict_constant if strict else None)
    except ValueError as exc:
        raise ParseError(f"JSON parse error - {exc}") from None


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing bodies nested deeper than MAX_NESTING."""

    def parse(
        self,
        stream: IO[bytes],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        """The body's JSON value; ParseError (400) when it cannot be read as bounded JSON."""
        charset = parsers.get_encoding(parser_context or {})
        try:
            text = stream.read().decode(charset)
        except UnicodeDecodeError:
            raise ParseError(f"JSON parse error - the body is not {charset}.") from None
        return loads(text, strict=self.strict)
