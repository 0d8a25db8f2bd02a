"""The text side of streaming: what may be streamed now, and what is left once a stream ended.

Teams accepts a streamed update only if it contains everything streamed before, and a final only
if it starts with it (reference teams-platform.md §1.1); ``relay.teams.stream_cut`` chooses the
cut points (word by word, spans balanced) and never grows past a byte budget that keeps the
streamed text inside the final's first piece. When a stream ended early
(our 100 s budget, Teams' 2-minute cap, another refusal), :func:`remainder_payloads` turns the
rest of the answer — after the characters Teams acknowledged — into follow-up messages, so the
user never sees text twice and never loses any (peers-and-pitfalls.md §5, "duplicate text above
4,000 chars").
"""

from __future__ import annotations

import json
import logging

from relay.domain import Reply
from relay.teams.citations import (
    MAX_CITATIONS,
    ai_message_entity,
    build_citations,
    citation_markers,
    feedback_channel_data,
)
from relay.teams.markdown import append_paragraph, to_teams_markdown
from relay.teams.render import (
    MessagePayload,
    answer_attachments,
    file_links,
    final_message_payload,
    split_for_teams,
    stopped_early,
    utf16_size,
)
from relay.teams.stream_cut import StreamCutter

log = logging.getLogger(__name__)

_UNLIMITED = 1 << 40  # final_message_payload() limit that never splits: the whole answer text


def streamable_text(answer: str, limit_bytes: int) -> str:
    """The rendered text safe to stream for ``answer`` now, in one go ("" when there is none
    yet); a stream keeps a :class:`relay.teams.stream_cut.StreamCutter` to do this incrementally."""
    return StreamCutter(limit_bytes).advance(answer)


def _flattened(reply: Reply, reference: str | None) -> MessagePayload:
    """The whole answer as one text with its tables flattened, as it was streamed."""
    text, citations = build_citations(to_teams_markdown(reply.text).text, reply.sources)
    notice = stopped_early(reply, reference)
    text = append_paragraph(text, notice) if notice else text
    feedback = {} if notice else feedback_channel_data()
    return MessagePayload(text, [ai_message_entity(citations)], channel_data=feedback)


def remainder_payloads(
    reply: Reply,
    shown: str | None,
    shown_chars: int,
    limit_bytes: int,
    reference: str | None = None,
) -> list[MessagePayload]:
    """The answer after its first ``shown_chars`` rendered characters, as follow-up messages.

    Text pieces carry the AI entity with the citations they mark; the last one the feedback
    buttons and the answer's attachments, as in :func:`final_message_payload`.
    """
    whole = final_message_payload(reply, limit_bytes=_UNLIMITED, reference=reference)[0]
    if whole.in_place:  # tables moved into a card: continue the flattened text instead
        whole = _flattened(reply, reference)
    full = whole.text
    if shown is not None and not full.startswith(shown):
        log.warning("answer diverged from the streamed text; sending it whole")
        shown_chars = 0
    rest = full[shown_chars:]
    if shown_chars and rest[:1] not in ("", "\n"):
        rest = "…" + rest.lstrip()  # the stream stopped mid-paragraph (word-by-word cuts)
    rest = rest.lstrip("\n")
    citations = whole.entities[0].get("citation", []) if whole.entities else []
    by_position = {c["position"]: c for c in citations[:MAX_CITATIONS]}
    # The flattened tables are part of the remaining text here, so no table card: only the
    # images and approval cards still need their message.
    attachments = answer_attachments(reply, file_links(reply.files)[0])
    feedback = whole.channel_data
    overhead = json.dumps([ai_message_entity(citations)], ensure_ascii=False) + json.dumps(feedback)
    overhead += json.dumps([a for a in attachments if "content" in a], ensure_ascii=False)
    budget = max(limit_bytes - utf16_size(overhead), limit_bytes // 2)
    pieces: list[MessagePayload] = []
    for piece in split_for_teams(rest, budget):
        used = sorted(set(citation_markers(piece)) & by_position.keys())
        pieces.append(MessagePayload(piece, [ai_message_entity([by_position[n] for n in used])]))
    if not pieces and not attachments:
        return []
    if not pieces:  # all text was shown: the attachments still need their message
        pieces.append(MessagePayload("", [ai_message_entity([])]))
    pieces[-1].channel_data = feedback
    pieces[-1].attachments = attachments
    return pieces
