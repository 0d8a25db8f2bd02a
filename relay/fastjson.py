"""JSON on the hot paths: orjson, with the standard library behind it for what orjson refuses.

Every SSE event of an answer is one JSON document, every Neo call sends and reads one, and every
journal write of a turn (the delivery record before each Teams update, the tail's notes) encodes
one; orjson does each in a fraction of ``json``'s time. orjson refuses a few things ``json``
accepts — ``NaN`` / ``Infinity``, numbers beyond a double, lone UTF-16 surrogates, non-string
keys — so a refusal is retried with ``json`` and the relay reads and writes exactly what it did
before (such input is rare: Neo's stream comes from JavaScript's ``JSON.stringify``, which never
writes the first two). Two differences are accepted: an integer beyond 64 bits read becomes a
float, as it already was in the JavaScript that wrote it, and a NaN / infinite float *written* by
orjson is ``null`` (``json`` wrote ``NaN``, which is not JSON).
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(data: str | bytes) -> Any:
    """Parse one JSON document; ``ValueError`` if neither parser accepts it."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, as httpx's ``json=`` wrote it (``ensure_ascii=False``, no spaces)."""
    try:
        return orjson.dumps(value)
    except TypeError:  # e.g. an int beyond 64 bits, a non-str key
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def dumps_text(value: Any) -> str:
    """:func:`dumps` as ``str``: the journal's JSON columns and Redis fields (``json.dumps(...,
    ensure_ascii=False, separators=(",", ":"))`` before, so user text stays readable there)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
