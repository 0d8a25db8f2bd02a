"""Citations, the "AI generated" label and feedback buttons, as the plain JSON Teams expects.

All three hang off one root ``https://schema.org/Message`` entity (reference §6.4): a second root
entity is a 400, more than 20 citations is a 400, an empty ``appearance`` is a 400. The Agents SDK
drops the AI label when a reply has no citations (§1.2); here the entity is always built, with the
``citation`` key left out when there is nothing to cite. Citation positions are 1-based indexes
into the reply's sources, so a ``[n]`` the model wrote and the ``[n]`` we append mean the same
source.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from relay.domain import Source
from relay.teams.markdown import (
    Fence,
    append_paragraph,
    close_open_fence,
    is_fence_close,
    match_fence_open,
    strip_code_spans,
)

__all__ = [
    "MAX_CITATIONS",
    "ai_message_entity",
    "build_citations",
    "citation_markers",
    "feedback_channel_data",
    "feedback_comment",
]

MAX_CITATIONS = 20  # per message; more is a 400 (§6.4)
_NAME_MAX = 80  # appearance.name (§6.4)
_ABSTRACT_MAX = 160  # appearance.abstract (§6.4)
_KEYWORD_MAX = 28  # each of at most 3 keywords (§6.4)
_URL_MAX = 2048  # longer URLs are dropped: they would only eat the ~100 KB message budget (§6.1)

# "[3]" but not the text of a link "[3](https://...)".
_MARKER = re.compile(r"\[(\d{1,3})\](?!\()")


def _truncate(text: str, limit: int) -> str:
    text = " ".join(text.split())  # names and abstracts are single-line in the citation popup
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def citation_markers(text: str) -> list[int]:
    """Every ``[n]`` in ``text`` outside code, in order (``arr[1]`` in a code block is not one)."""
    found: list[int] = []
    fence: Fence | None = None
    for line in text.split("\n"):
        if fence is not None:
            if is_fence_close(line, fence):
                fence = None
            continue
        fence = match_fence_open(line)
        if fence is None:
            found.extend(int(m.group(1)) for m in _MARKER.finditer(strip_code_spans(line)))
    return found


def _https_url(url: str | None) -> str | None:
    """Only absolute http(s) URLs are linked: a ``javascript:`` or ``file:`` source never is."""
    if not url or len(url) > _URL_MAX:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme in ("http", "https") and parts.netloc else None


def _citation(position: int, source: Source) -> dict[str, Any]:
    url = _https_url(source.url)
    host = urlsplit(url).hostname if url else None
    title = (source.title or "").strip()
    name = title or (source.filename or "").strip() or host or f"Source {position}"
    # The popup shows the name as its headline and the abstract under it, and links the URL:
    # the abstract is a passage of the source when the agent sent one, else the title (a URL
    # there only repeats the link); never empty (§6.4).
    abstract = source.snippet or title or source.filename or host or name
    appearance: dict[str, Any] = {
        "@type": "DigitalDocument",
        "name": _truncate(name, _NAME_MAX),
        "abstract": _truncate(abstract, _ABSTRACT_MAX),
    }
    if url:
        appearance["url"] = url
    keywords = [k for k in (host, source.media_type) if k]
    if keywords:
        appearance["keywords"] = [_truncate(k, _KEYWORD_MAX) for k in keywords[:3]]
    return {"@type": "Claim", "position": position, "appearance": appearance}


def _source_key(source: Source) -> str:
    return source.url or source.title or source.filename or source.source_id


def build_citations(text: str, sources: list[Source]) -> tuple[str, list[dict[str, Any]]]:
    """Text with ``[n]`` markers and the ``Claim`` dicts for them (at most 20).

    If the model already wrote markers that name sources (1-based), the text is kept and only the
    sources it cites become citations: the agent chose them. Otherwise a line of markers for the
    (de-duplicated) sources is appended, without a label word so it reads right in any language;
    Teams shows each marker as a citation pill.
    """
    usable = sources[:MAX_CITATIONS]
    if not usable:
        return text, []
    cited = sorted({n for n in citation_markers(text) if 1 <= n <= len(usable)})
    if not cited:
        seen: set[str] = set()
        for position, source in enumerate(usable, start=1):
            key = _source_key(source)
            if key not in seen:
                seen.add(key)
                cited.append(position)
        markers = " ".join(f"[{n}]" for n in cited)
        # Only appended, never rewritten: the streamed text must stay a prefix (§1.1). A code
        # block still open would swallow the markers, so it is closed first.
        text = append_paragraph(close_open_fence(text), markers)
    return text, [_citation(n, usable[n - 1]) for n in cited]


def ai_message_entity(citations: list[dict[str, Any]]) -> dict[str, Any]:
    """The single root message entity: AI label always, citations when there are any (§6.4)."""
    entity: dict[str, Any] = {
        "type": "https://schema.org/Message",
        "@type": "Message",
        "@context": "https://schema.org",
        "@id": "",
        "additionalType": ["AIGeneratedContent"],
    }
    if citations:
        entity["citation"] = list(citations[:MAX_CITATIONS])
    return entity


def feedback_channel_data(mode: str = "default") -> dict[str, Any]:
    """``channelData`` for the 👍/👎 buttons; with "custom" Teams asks us for a form (§6.4)."""
    if mode not in ("default", "custom"):
        raise ValueError(f"feedback mode must be 'default' or 'custom', not {mode!r}")
    return {"feedbackLoop": {"type": mode}}


def feedback_comment(action_value: dict[str, Any]) -> str:
    """The 👎/👍 comment of a ``message/submitAction`` (§6.4), however Teams sent it.

    Documented: ``actionValue.feedback`` is a JSON string ``{"feedbackText": "…"}``. Seen too:
    the comment as plain text in ``feedback`` (not JSON), ``feedback`` as an object, and
    ``feedbackText`` directly in ``actionValue``. None of them may lose the comment.
    """
    raw = action_value.get("feedback")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return raw.strip()  # plain text: the comment itself
    if isinstance(raw, dict):
        raw = raw.get("feedbackText")
    if not isinstance(raw, str):
        raw = action_value.get("feedbackText")
    return raw.strip() if isinstance(raw, str) else ""
