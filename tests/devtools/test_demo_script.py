"""The demo agent's answers are valid AI SDK v6 streams that the relay's assembler reads."""

from __future__ import annotations

import pytest

from relay.devtools.demo_script import (
    DOCS_TITLE,
    DOCS_URL,
    TOOL_NAME,
    DemoScript,
    answer_text,
    demo_chunks,
    split_deltas,
    topic_of,
)
from relay.devtools.neo_emulator_streams import TurnInput
from relay.domain import ReplyOutcome
from relay.neo.chunks import ReplyAssembler

V6_TYPES = {
    "start",
    "start-step",
    "finish-step",
    "finish",
    "text-start",
    "text-delta",
    "text-end",
    "reasoning-start",
    "reasoning-delta",
    "reasoning-end",
    "tool-input-start",
    "tool-input-delta",
    "tool-input-available",
    "tool-output-available",
    "source-url",
}


def _turn(message: str = "How do I restart the print spooler?", tier: str = "FAST") -> TurnInput:
    return TurnInput("cs_0123456789abcdef", message, tier, [], "bot", "tenant")


def test_chunks_assemble_into_the_answer_with_progress_tool_and_citation() -> None:
    turn = _turn()
    chunks = demo_chunks(turn, 1)
    assembler = ReplyAssembler()
    for chunk in chunks:
        assembler.feed(chunk)
    reply = assembler.reply

    assert assembler.skipped == 0
    assert reply.outcome is ReplyOutcome.COMPLETE
    assert reply.text == answer_text(turn, 1)
    assert "You asked: **How do I restart the print spooler?**" in reply.text
    assert "\n1. the relay posted" in reply.text
    assert "\n```sh\n" in reply.text
    assert reply.text.endswith("turn 1 · fast model_")
    assert [(s.url, s.title) for s in reply.sources] == [(DOCS_URL, DOCS_TITLE)]
    [tool] = reply.tools.values()
    assert (tool.tool_name, tool.state) == (TOOL_NAME, "output-available")
    assert tool.input == {"query": "How do I restart the print spooler?", "limit": 3}
    assert reply.progress[:4] == [
        "Searching the documentation…",
        "Working…",
        "Thinking…",
        "Searching documentation…",
    ]
    assert "Reading 3 articles…" in reply.progress
    assert assembler.reasoning_seen


def test_chunk_sequence_is_well_formed_v6() -> None:
    chunks = demo_chunks(_turn(), 2)
    kinds = [c["type"] for c in chunks]
    assert set(kinds) - {"data-status"} <= V6_TYPES
    # data parts may come before `start` (as in the real fixture); the message starts once,
    # steps balance, and `finish` is the last non-data chunk.
    assert kinds.count("start") == 1
    assert kinds.count("start-step") == kinds.count("finish-step") == 2
    assert [k for k in kinds if not k.startswith("data-")][-1] == "finish"
    opened: set[str] = set()
    for chunk in chunks:
        if chunk["type"] == "text-start":
            opened.add(chunk["id"])
        elif chunk["type"] in ("text-delta", "text-end"):
            assert chunk["id"] in opened
    inputs = "".join(c["inputTextDelta"] for c in chunks if c["type"] == "tool-input-delta")
    assert inputs == '{"query": "How do I restart the print spooler?", "limit": 3}'
    # Enough deltas to stream for several seconds at the demo's 40–80 ms per chunk.
    assert kinds.count("text-delta") >= 40
    assert len(chunks) * 0.06 > 3.5


def test_smart_tier_changes_the_wording() -> None:
    fast = answer_text(_turn(tier="FAST"), 1)
    smart = answer_text(_turn(tier="SMART"), 1)
    assert "smarter model" in smart
    assert "smarter model" not in fast
    assert smart.endswith("smart model_")
    assert fast.endswith("fast model_")


@pytest.mark.parametrize(
    "text",
    ["a b", "word " * 40, "line one\n\n- item\n```sh\ncode\n```\n", "   lead", "x" * 50],
)
def test_deltas_join_back_exactly(text: str) -> None:
    pieces = split_deltas(text, 10)
    assert "".join(pieces) == text
    assert all(pieces)


def test_topic_is_one_safe_line() -> None:
    assert topic_of("<at>Bot</at> **hi** `there`\nsecond line") == "at Bot /at hi there"
    assert topic_of("") == "your attachment"
    assert len(topic_of("y" * 500)) == 60


def test_attachments_are_acknowledged() -> None:
    turn = TurnInput("cs_1", "", "FAST", [{"blob_path": "chat/cs_1/ab/image.png"}], None, None)
    assert "received 1 attachment(s): `image.png`" in answer_text(turn, 1)


def test_script_numbers_turns_per_session() -> None:
    script = DemoScript()
    a1, a2 = script(_turn()), script(_turn())
    b1 = script(TurnInput("cs_other", "hi", "FAST", [], None, None))

    def footer(chunks: list[dict[str, object]]) -> str:
        return "".join(str(c["delta"]) for c in chunks if c["type"] == "text-delta")[-40:]

    assert "turn 1" in footer(a1)
    assert "turn 2" in footer(a2)
    assert "`cs_other` · turn 1" in footer(b1)
