"""The scripted agent behind ``relay demo``: realistic AI SDK v6 answers without a model or a key.

A newcomer should see everything the relay does with a real Neo answer — progress while the agent
works, a growing answer, Markdown, a citation — so this script emits the chunk sequence a Neo turn
produces (shaped like the real ``ai`` package's streams in ``fixtures/aisdk-v6/full.sse`` and
ai-sdk-v6-stream.md §2): a ``data-status`` part, reasoning, one tool call
(``tool-input-start`` → ``-delta`` → ``-available`` → ``tool-output-available``), then a second step
with Markdown text (a short list and a code block) streamed in small deltas, one ``source-url`` and
``finish``. Its wording depends on the user's message and the turn's ``model_tier`` (SMART answers
say they used the stronger model), and a footer names the Neo session and turn number, which makes
``/reset`` (a new Neo session) visible to people and tests alike.
"""

from __future__ import annotations

import json
import re
from typing import Any

from relay.devtools.neo_emulator_streams import TurnInput

__all__ = [
    "DOCS_TITLE",
    "DOCS_URL",
    "TOOL_NAME",
    "DemoScript",
    "answer_text",
    "demo_chunks",
    "split_deltas",
]

TOOL_NAME = "searchDocumentation"
DOCS_URL = "https://learn.microsoft.com/en-us/microsoftteams/platform/bots/streaming-ux"
DOCS_TITLE = "Stream bot messages - Microsoft Teams"
DELTA_CHARS = 8  # a word or two per delta: ~55 deltas, ~77 chunks, ~5 s at 60 ms per chunk
_TOPIC_MAX = 60
_UNSAFE = re.compile(r"[*_`\[\]<>#|\\]")


def topic_of(message: str) -> str:
    """The first line of the user's message, shortened and stripped of Markdown/HTML syntax."""
    line = next((ln.strip() for ln in message.splitlines() if ln.strip()), "")
    line = " ".join(_UNSAFE.sub(" ", line).split())
    if len(line) > _TOPIC_MAX:
        line = line[: _TOPIC_MAX - 1].rstrip() + "…"
    return line or "your attachment"


def _attachment_line(attachments: list[dict[str, Any]]) -> str:
    if not attachments:
        return ""
    described = ", ".join(
        "`" + str(a.get("blob_path", "file")).rsplit("/", 1)[-1] + "`" for a in attachments
    )
    return f"I also received {len(attachments)} attachment(s): {described}.\n\n"


def answer_text(turn: TurnInput, turn_number: int) -> str:
    """The Markdown answer for one turn (what the assembled text must equal)."""
    smart = turn.model_tier == "SMART"
    topic = topic_of(turn.message)
    if smart:
        opening = (
            f"You asked: **{topic}** — I used the **smarter model** for this one and took a "
            "closer look."
        )
        closing = "The stronger model double-checked each step against the documentation [1]."
    else:
        opening = f"You asked: **{topic}** — here is what I found."
        closing = "Teams shows streamed answers like this one as described in its guide [1]."
    return (
        f"{opening}\n\n"
        f"{_attachment_line(turn.attachments)}"
        "This answer comes from the local Neo emulator and travelled through the relay exactly "
        "like a real one:\n\n"
        "1. the relay posted your message as a Neo chat turn,\n"
        "2. tailed the turn's Server-Sent Events (AI SDK v6 chunks),\n"
        "3. and rendered them for Teams: progress, growing text, then the final message.\n\n"
        "To connect a real bot, register it and run the relay in production mode:\n\n"
        "```sh\n"
        "export NEO_API_KEY=neo_sk_live_...  RELAY_BOTS_FILE=bots.toml\n"
        "relay serve\n"
        "```\n\n"
        f"{closing}\n\n"
        f"_Neo session `{turn.session_id}` · turn {turn_number} · "
        f"{'smart' if smart else 'fast'} model_"
    )


def split_deltas(text: str, size: int = DELTA_CHARS) -> list[str]:
    """``text`` cut at word ends into pieces of about ``size`` chars; they join back exactly."""
    pieces: list[str] = []
    current = ""
    for word in re.findall(r"\S+\s*|\s+", text):
        current += word
        if len(current) >= size:
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    return pieces


def _progress_step(turn: TurnInput, call_id: str) -> list[dict[str, Any]]:
    """Step 1: reasoning, then one documentation search (input streamed, then the output)."""
    topic = topic_of(turn.message)
    query = {"query": topic, "limit": 3}
    query_json = json.dumps(query)
    half = len(query_json) // 2
    reasoning = [
        f"The user asks about {topic}. ",
        "Search the documentation first, ",
        "then answer with short steps and cite the source.",
    ]
    return [
        {"type": "start-step"},
        {"type": "reasoning-start", "id": "r1"},
        *({"type": "reasoning-delta", "id": "r1", "delta": d} for d in reasoning),
        {"type": "reasoning-end", "id": "r1"},
        {"type": "tool-input-start", "toolCallId": call_id, "toolName": TOOL_NAME},
        {"type": "tool-input-delta", "toolCallId": call_id, "inputTextDelta": query_json[:half]},
        {"type": "tool-input-delta", "toolCallId": call_id, "inputTextDelta": query_json[half:]},
        {
            "type": "tool-input-available",
            "toolCallId": call_id,
            "toolName": TOOL_NAME,
            "input": query,
        },
        {"type": "data-status", "id": "status-1", "data": {"phase": "reading 3 articles"}},
        {
            "type": "tool-output-available",
            "toolCallId": call_id,
            "output": {
                "results": [
                    {"title": DOCS_TITLE, "url": DOCS_URL, "snippet": "Streaming in 1:1 chats."}
                ]
            },
        },
        {"type": "finish-step"},
    ]


def demo_chunks(turn: TurnInput, turn_number: int = 1) -> list[dict[str, Any]]:
    """Every v6 chunk of one demo answer, in stream order (``[DONE]`` is the emulator's job)."""
    smart = turn.model_tier == "SMART"
    suffix = f"{turn.session_id[-6:]}{turn_number}"
    text = answer_text(turn, turn_number)
    model = "neo-demo-smart" if smart else "neo-demo-fast"
    return [
        {"type": "data-status", "id": "status-1", "data": {"phase": "searching the documentation"}},
        {"type": "start", "messageId": f"msg-{suffix}", "messageMetadata": {"model": model}},
        *_progress_step(turn, f"call_{suffix}"),
        {"type": "start-step"},
        {"type": "text-start", "id": "t1"},
        *({"type": "text-delta", "id": "t1", "delta": d} for d in split_deltas(text)),
        {"type": "text-end", "id": "t1"},
        {"type": "source-url", "sourceId": "src-1", "url": DOCS_URL, "title": DOCS_TITLE},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "stop", "messageMetadata": {"totalTokens": 412}},
        {"type": "data-status", "id": "status-1", "data": {"phase": "done"}},
    ]


class DemoScript:
    """A :data:`relay.devtools.neo_emulator_streams.Script` that numbers turns per session."""

    def __init__(self) -> None:
        self._turns: dict[str, int] = {}

    def __call__(self, turn: TurnInput) -> list[dict[str, Any]]:
        number = self._turns.get(turn.session_id, 0) + 1
        self._turns[turn.session_id] = number
        return demo_chunks(turn, number)
