"""relay.neo.fastjson reads and writes what the standard library did, at orjson's speed."""

from __future__ import annotations

import json
import math

import httpx
import pytest

from relay.neo import fastjson


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"text-delta","id":"t1","delta":"héllo \\u2603"}',
        ' [1, 2.5, null, true, "x"] ',
        '{"a":"\\ud800"}',  # a lone surrogate: orjson refuses it, json reads it
        '{"a":Infinity,"b":-Infinity}',  # not JSON, but json.loads read it before
    ],
)
def test_loads_agrees_with_json(text: str) -> None:
    assert fastjson.loads(text) == json.loads(text)
    assert fastjson.loads(text.encode("utf-8", "surrogatepass")) == json.loads(text)


def test_loads_nan_like_json() -> None:
    assert math.isnan(fastjson.loads('{"a":NaN}')["a"])


@pytest.mark.parametrize("text", ["", "not json", "{", "[DONE]"])
def test_loads_refuses_what_json_refuses(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the contract is "a ValueError"
        fastjson.loads(text)


@pytest.mark.parametrize(
    "value",
    [{"message": "héllo ☃", "n": 1, "ok": True, "none": None, "list": [1.5]}, {"big": 2**70}],
)
def test_dumps_writes_the_bytes_httpx_json_did(value: object) -> None:
    assert fastjson.dumps(value) == httpx.Request("POST", "http://x", json=value).content
