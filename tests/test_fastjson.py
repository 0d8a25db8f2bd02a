"""relay.fastjson reads and writes what the standard library did, at orjson's speed."""

from __future__ import annotations

import json
import math

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay import fastjson


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


@pytest.mark.parametrize(
    "value",
    [
        {"shown_text": 'héllo ☃ \n"quoted" \\ tab\t', "sequence": 3, "closed": False},
        {"at": 1765000000.123, "none": None, "list": [1, 2.5, "x"]},
    ],
)
def test_dumps_text_writes_what_the_journal_wrote(value: object) -> None:
    journal = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert fastjson.dumps_text(value) == journal


@pytest.mark.parametrize("value", [{"a": "\ud800"}, {1: "x"}, {"big": 2**70}])
def test_dumps_text_falls_back_to_json_for_what_orjson_refuses(value: object) -> None:
    journal = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert fastjson.dumps_text(value) == journal


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_dumps_text_reads_back_as_json_wrote_it(value: object) -> None:
    journal = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert json.loads(fastjson.dumps_text(value)) == json.loads(journal)
