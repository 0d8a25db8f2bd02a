"""JSON for the Neo hot path: orjson, with the standard library behind it for what orjson refuses.

Every SSE event of an answer is one JSON document and every Neo call sends and reads one; orjson
parses them in a fraction of ``json``'s time. orjson refuses a few things ``json`` accepts —
``NaN`` / ``Infinity``, numbers beyond a double, lone UTF-16 surrogates — so a refusal is retried
with ``json`` and the relay reads exactly what it read before (such input is rare: Neo's stream
comes from JavaScript's ``JSON.stringify``, which never writes the first two). One difference is
accepted: an integer beyond 64 bits becomes a float, as it already was in the JavaScript that wrote
it.
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
