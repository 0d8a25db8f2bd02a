"""What one chunk says besides the answer text: progress labels, TIL approvals, source passages.

Split out of ``relay.neo.chunks`` (whose docstring names this seam): the assembler folds chunks
into a reply; these functions read a single chunk's parts — a tool's name or a status-like
``data-*`` part into the short label a Teams "informative" update shows (never tool inputs or
outputs), a ``data-*`` part into a technician-in-the-loop approval request (how Neo announces one
is undocumented, neo-chat-api.md §b item 18, so it is recognised defensively), a source chunk into
its passage. Like the assembler, nothing here raises on odd input: it returns None.
"""

from __future__ import annotations

import re
from typing import Any

from relay.domain import ApprovalRequest

MAX_LABEL = 120
_STATUS_KEYS = ("status", "phase", "label", "title", "message", "text")
_IDLE_STATUSES = {"done", "complete", "completed", "finished", "idle", "ok", "success", "ready"}
_TIL_TYPES = {"data-til", "data-approval", "data-til-request", "data-approval-request"}
_TIL_ID_KEYS = ("til_request_id", "tilRequestId")
_TIL_GENERIC_ID_KEYS = ("til_request_id", "tilRequestId", "request_id", "requestId", "id")


def _clean(text: str) -> str:
    return " ".join(text.split())


def humanize_tool_name(name: str) -> str:
    """``getWeather`` → ``get weather``; ``search_tickets`` / ``kb.search-docs`` likewise."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    return _clean(re.sub(r"[^A-Za-z0-9]+", " ", spaced)).lower()


_SEARCH_VERBS = ("search", "find", "lookup", "look up", "query")


def tool_label(tool_name: str, title: str | None = None) -> str | None:
    """The progress label for a tool, in words a user understands.

    The tool's ``title`` when the agent gave one ("Searching documentation…"); else a search
    tool reads "Searching <what>…" and any other "Running <Readable name>…" ("getWeather" →
    "Running Get weather…"), never the raw identifier.
    """
    if title and title.strip():
        text = _clean(title)
        text = text[0].upper() + text[1:]
        return (text if text[-1] in ".!?…:" else f"{text}…")[:MAX_LABEL]
    words = humanize_tool_name(tool_name)
    if not words:
        return None
    for verb in _SEARCH_VERBS:
        if words == verb or words.startswith(verb + " "):
            rest = words[len(verb) :].strip()
            return f"Searching {rest}…"[:MAX_LABEL] if rest else "Searching…"
    return f"Running {words[0].upper()}{words[1:]}…"[:MAX_LABEL]


def status_label(data: Any) -> str | None:
    """A label from a status-like ``data-*`` payload (``{"phase": "searching"}`` → "Searching…").

    Only a short (≤ 120 chars) string under status/phase/label/title/message/text qualifies;
    values that mean "finished" (done, complete, …) produce no label.
    """
    if not isinstance(data, dict):
        return None
    for key in _STATUS_KEYS:
        value = data.get(key)
        if not isinstance(value, str):
            continue
        text = _clean(value)
        if not text or len(text) > MAX_LABEL or text.lower().rstrip(".!") in _IDLE_STATUSES:
            continue
        text = text[0].upper() + text[1:]
        if text[-1] not in ".!?…:" and len(text) < MAX_LABEL:
            text += "…"
        return text
    return None


def _id_value(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text or None


_SNIPPET_KEYS = ("snippet", "excerpt", "summary", "description")


def snippet(chunk: dict[str, Any]) -> str | None:
    """A passage of a source, if the agent sent one: the SDK has no field for it, so it is
    looked for on the chunk and one level into ``providerMetadata`` (per provider)."""
    places = [chunk]
    meta = chunk.get("providerMetadata")
    if isinstance(meta, dict):
        places += [v for v in meta.values() if isinstance(v, dict)]
    for place in places:
        for key in _SNIPPET_KEYS:
            value = place.get(key)
            if isinstance(value, str) and value.strip():
                return _clean(value)
    return None


def til_request_from_data(part_type: str, data: Any) -> ApprovalRequest | None:
    """Recognise a Neo TIL (technician-in-the-loop) approval carried in a ``data-*`` part.

    How Neo announces a pending TIL in a chat turn is undocumented (neo-chat-api.md §b item 18),
    so this accepts, defensively:

    1. ``data-til``, ``data-approval``, ``data-til-request`` or ``data-approval-request`` whose
       ``data`` is an object with an id under ``til_request_id``, ``tilRequestId``,
       ``request_id``, ``requestId`` or ``id`` — or whose ``data`` is itself the id (str / int);
    2. any other ``data-*`` whose ``data`` object has ``til_request_id`` or ``tilRequestId``;
    3. any other ``data-*`` whose ``data`` object has ``type`` ``"til"`` or ``"approval"``
       (case-insensitive) and an id under ``id``, ``request_id`` or ``requestId``.

    Ids may be strings or integers (``TilRequest.id`` is an integer). The description is the first
    string of ``description``, ``title``, ``message``. The result's ``approval_id`` is
    ``"til-<id>"``.
    """
    request_id: str | None = None
    description: str | None = None
    if isinstance(data, dict):
        if part_type in _TIL_TYPES:
            keys: tuple[str, ...] = _TIL_GENERIC_ID_KEYS
        elif any(k in data for k in _TIL_ID_KEYS):
            keys = _TIL_ID_KEYS
        elif str(data.get("type", "")).lower() in ("til", "approval"):
            keys = ("id", "request_id", "requestId")
        else:
            return None
        request_id = next((v for k in keys if (v := _id_value(data.get(k)))), None)
        description = next(
            (
                _clean(v)
                for k in ("description", "title", "message")
                if isinstance(v := data.get(k), str)
            ),
            None,
        )
    elif part_type in _TIL_TYPES:
        request_id = _id_value(data)
    if request_id is None:
        return None
    return ApprovalRequest(
        approval_id=f"til-{request_id}", til_request_id=request_id, description=description
    )
