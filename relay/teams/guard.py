"""Inbound validation: what a request body must be before the relay trusts any of it.

``POST /api/messages`` is public: anyone can send it anything, and a body that makes the relay
raise answers 500 with a traceback — or worse, reaches Neo and a store with content no later step
can handle. Found by fuzzing 1,500 mutated activities (issue 16): JSON nested ~1,000 levels deep
raised ``RecursionError`` inside ``json.loads``, escaped lone surrogates (``"\\ud800"``) raised
``UnicodeEncodeError`` when an id was hashed or the text written to SQLite, a missing ``serviceUrl``
skipped the allow-list, a conversation id of ``..`` walked the reply up the connector's URL path,
and a 10 KB id reached Neo before failing at the connector. So, before authentication, any store
or any Neo call, this module:

- bounds the JSON nesting depth *before* the parser recurses (:func:`load_body`);
- repairs text that is not valid Unicode: a lone surrogate becomes U+FFFD (a user's emoji pair,
  escaped or not, is already one code point after parsing and is untouched);
- requires the ids the relay keys and addresses by to be strings of sane length and charset, never
  ``.`` or ``..`` (:func:`check_activity`), and a ``serviceUrl`` that is an absolute http(s) URL.

Every refusal is an :class:`relay.errors.InboundError` carrying the 4xx status to answer.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from relay.errors import InboundError

MAX_DEPTH = 32  # a Teams activity nests ~6 levels (an Adaptive Card submit value a few more)
MAX_ID_CHARS = 512  # channel thread ids with ;messageid= are ~100 chars; Entra ids 36
MAX_URL_CHARS = 2048

# A JSON string literal (escapes included), and the structural brackets that remain without them.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_INNERMOST = re.compile(rb"\[\]|\{\}")
# \uD800-\uDFFF written as a JSON escape: the only way a lone surrogate can enter (raw bytes that
# encode one are not valid UTF-8 and fail to decode).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Control characters (C0, DEL, C1) and lone surrogates never belong in an id.
_BAD_ID_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def json_depth_exceeds(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """True if the JSON text in ``raw`` nests arrays/objects more than ``limit`` levels deep.

    Strings are removed first (a bracket inside one is text), then innermost ``[]``/``{}`` pairs
    are peeled off one level per pass: whatever is left after ``limit`` passes is deeper than
    ``limit`` (or unbalanced, which the parser refuses anyway). No recursion, and the passes run
    over the brackets alone, so an ordinary activity costs two regex scans of its bytes.
    """
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", raw))
    for _ in range(limit):
        if not brackets:
            return False
        peeled = _INNERMOST.sub(b"", brackets)
        if peeled == brackets:
            return False  # unbalanced: invalid JSON, which the parser refuses (RecursionError too)
        brackets = peeled
    return bool(brackets)


def load_body(raw: bytes, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Parse a request body into a JSON object, refusing what the relay could not handle."""
    if json_depth_exceeds(raw, max_depth):
        raise InboundError(f"body nests deeper than {max_depth} levels")
    try:
        body: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InboundError("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InboundError("body must be a JSON object")
    if _SURROGATE_ESCAPE.search(raw):
        repaired: dict[str, Any] = repair_text(body)
        return repaired
    return body


def repair_text(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings (keys too) replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [repair_text(v) for v in value]
    if isinstance(value, dict):
        return {repair_text(k): repair_text(v) for k, v in value.items()}
    return value


def _field(body: dict[str, Any], *path: str) -> Any:
    value: Any = body
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def check_id(value: Any, name: str, *, required: bool) -> None:
    """An id the relay keys, hashes or puts in a URL: a short, printable, non-dot string."""
    if value is None:
        if required:
            raise InboundError(f"{name} is missing")
        return
    if not isinstance(value, str) or not value.strip():
        raise InboundError(f"{name} must be a non-empty string")
    if len(value) > MAX_ID_CHARS:
        raise InboundError(f"{name} is longer than {MAX_ID_CHARS} characters")
    if value in (".", "..") or _BAD_ID_CHARS.search(value):
        raise InboundError(f"{name} has characters an id cannot have")


def check_service_url(value: Any) -> str:
    """The activity's ``serviceUrl``: present, an absolute http(s) URL without credentials."""
    if value is None:
        raise InboundError("serviceUrl is missing")
    if not isinstance(value, str) or len(value) > MAX_URL_CHARS or _BAD_ID_CHARS.search(value):
        raise InboundError("serviceUrl must be a URL string")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise InboundError("serviceUrl is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InboundError("serviceUrl must be an absolute http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise InboundError("serviceUrl must not carry credentials")
    return value


def check_activity(body: dict[str, Any]) -> None:
    """The fields every non-ping activity must have in a usable shape (400 otherwise)."""
    kind = body.get("type")
    if not isinstance(kind, str) or not kind or len(kind) > 64:
        raise InboundError("activity has no type")
    if kind == "ping":
        return
    check_service_url(body.get("serviceUrl"))
    check_id(_field(body, "conversation", "id"), "conversation.id", required=True)
    check_id(body.get("id"), "id", required=False)
    check_id(body.get("replyToId"), "replyToId", required=False)
    check_id(_field(body, "recipient", "id"), "recipient.id", required=False)
    check_id(_field(body, "from", "id"), "from.id", required=False)
    check_id(_field(body, "from", "aadObjectId"), "from.aadObjectId", required=False)
    check_id(_field(body, "conversation", "tenantId"), "conversation.tenantId", required=False)
    channel = body.get("channelId")
    if channel is not None and (not isinstance(channel, str) or len(channel) > 64):
        raise InboundError("channelId must be a short string")
