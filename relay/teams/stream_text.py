"""The text side of streaming: what may be streamed now, and what is left once a stream ended.

Teams accepts a streamed update only if it contains everything streamed before, and a final only
if it starts with it (reference teams-platform.md §1.1). ``relay.teams.markdown`` is prefix-stable
only at blank lines outside code, so :func:`streamable_text` cuts there, and never grows past a
byte budget that keeps the streamed text inside the final's first piece. When a stream ended early
(our 100 s budget, Teams' 2-minute cap, another refusal), :func:`remainder_payloads` turns the
rest of the answer — after the characters Teams acknowledged — into follow-up messages, so the
user never sees text twice and never loses any (peers-and-pitfalls.md §5, "duplicate text above
4,000 chars").
"""

from __future__ import annotations

import json
import logging

from relay.domain import Reply
from relay.teams.citations import MAX_CITATIONS, ai_message_entity, citation_markers
from relay.teams.markdown import is_fence_close, match_fence_open
from relay.teams.render import (
    MessagePayload,
    final_message_payload,
    split_for_teams,
    to_teams_markdown,
    utf16_size,
)

log = logging.getLogger(__name__)

_UNLIMITED = 1 << 40  # final_message_payload() limit that never splits: the whole answer text


def safe_cuts(text: str) -> list[int]:
    """Lengths of the prefixes of ``text`` that end right after a blank line outside code."""
    cuts: list[int] = []
    pos = 0
    fence = None
    for line in text.split("\n")[:-1]:  # only lines already terminated by "\n"
        pos += len(line) + 1
        if fence is not None:
            if is_fence_close(line, fence):
                fence = None
            continue
        fence = match_fence_open(line)
        if fence is None and not line.strip():
            cuts.append(pos)
    return cuts


def streamable_text(answer: str, limit_bytes: int) -> str:
    """The rendered text safe to stream now: the longest prefix cut at a blank line outside
    code whose rendering fits ``limit_bytes`` ("" when there is none yet)."""
    cuts = safe_cuts(answer)
    best, lo, hi = "", 0, len(cuts) - 1
    while lo <= hi:  # rendering is monotonic in the cut, so bisect: O(log n) renders
        mid = (lo + hi) // 2
        rendered = to_teams_markdown(answer[: cuts[mid]]).text.rstrip()
        if utf16_size(rendered) <= limit_bytes:
            best, lo = rendered, mid + 1
        else:
            hi = mid - 1
    return best


def remainder_payloads(
    reply: Reply, shown: str | None, shown_chars: int, limit_bytes: int
) -> list[MessagePayload]:
    """The answer after its first ``shown_chars`` rendered characters, as follow-up messages.

    Text pieces carry the AI entity with the citations they mark and the last one the feedback
    buttons; table cards and images follow as in :func:`final_message_payload`.
    """
    whole = final_message_payload(reply, limit_bytes=_UNLIMITED)[0]
    full = whole.text
    if shown is not None and not full.startswith(shown):
        log.warning("answer diverged from the streamed text; sending it whole")
        shown_chars = 0
    rest = full[shown_chars:].lstrip("\n")
    citations = whole.entities[0].get("citation", []) if whole.entities else []
    by_position = {c["position"]: c for c in citations[:MAX_CITATIONS]}
    extras = [p for p in final_message_payload(reply, limit_bytes=limit_bytes) if not p.text]
    feedback = whole.channel_data
    overhead = json.dumps([ai_message_entity(citations)], ensure_ascii=False) + json.dumps(feedback)
    budget = max(limit_bytes - utf16_size(overhead), limit_bytes // 2)
    pieces: list[MessagePayload] = []
    for piece in split_for_teams(rest, budget):
        used = sorted(set(citation_markers(piece)) & by_position.keys())
        pieces.append(MessagePayload(piece, [ai_message_entity([by_position[n] for n in used])]))
    if pieces:
        pieces[-1].channel_data = feedback
    return pieces + extras
