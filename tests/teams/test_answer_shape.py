"""What a user sees of one answer, end to end through the Teams connector emulator.

Real relay, real SQLite, the Neo emulator serving AI SDK v6 chunks and the connector emulator
enforcing Teams' streaming rules (teams-platform.md §1.1). Covered: an answer growing word by word
at production pacing, one bubble for an approval-only or file-only answer (1:1 and group), and
answers an ``error`` or ``abort`` chunk cut short.
"""

from __future__ import annotations

import base64
import itertools
import time
from typing import Any

from relay.devtools.neo_emulator_streams import TurnInput
from relay.domain import BotId, ConversationId, TurnState, make_turn_id
from tests.fakes.harness import BOT_A, Harness, close_harness, make_harness

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
HEAD: list[dict[str, Any]] = [
    {"type": "start", "messageId": "m1"},
    {"type": "start-step"},
]
TAIL: list[dict[str, Any]] = [{"type": "finish-step"}, {"type": "finish", "finishReason": "stop"}]


def _text(*deltas: str) -> list[dict[str, Any]]:
    return [
        {"type": "text-start", "id": "t"},
        *({"type": "text-delta", "id": "t", "delta": d} for d in deltas),
        {"type": "text-end", "id": "t"},
    ]


def _turn_id(conv: str, activity: dict[str, Any]) -> Any:
    return make_turn_id(BotId(BOT_A.app_id), ConversationId(conv), activity["id"])


async def _ask(h: Harness, conv: str, *, group: bool = False) -> dict[str, Any]:
    kind = {"conversation_type": "groupChat"} if group else {}
    activity = h.activity(
        BOT_A, "How do I restart the print spooler?", conversation_id=conv, **kind
    )
    await h.deliver(activity, bot=BOT_A)
    return activity


async def test_a_one_paragraph_answer_grows_word_by_word_at_production_pace(
    tmp_path: Any,
) -> None:
    # Production pacing (1.5 s between stream requests) against Teams' own 1 req/s rule; the
    # agent writes 100 words in one paragraph over 15 s.
    h = await make_harness(tmp_path, stream_interval=1.5)
    h.teams.min_stream_interval = 1.0
    try:
        conv = "a:word-by-word"
        words = [f"word{n}" for n in range(100)]
        h.neo.script = lambda turn: [*HEAD, *_text(*(w + " " for w in words)), *TAIL]
        h.neo.chunk_delay = 15.0 / len(words)
        asked = time.monotonic()
        await _ask(h, conv)
        await h.wait_for(lambda: len(h.teams.messages(conv)) == 1, timeout=40, what="answer")
        await h.wait_idle()
        assert h.teams.violations == []
        streamed = [
            r
            for r in h.teams.stream_requests(conv)
            if r.activity["entities"][0]["streamType"] == "streaming"
        ]
        texts = [r.activity["text"] for r in streamed]
        assert len(texts) >= 6, texts
        assert all(len(b) > len(a) and b.startswith(a) for a, b in itertools.pairwise(texts))
        assert "\n" not in texts[-1]  # one paragraph, never waiting for a blank line
        assert streamed[0].at - asked <= 3.5
        [final] = h.teams.messages(conv)
        assert final["text"] == " ".join(words) + " "  # the agent's text, as written
    finally:
        await close_harness(h)


def _approval_only(turn: TurnInput) -> list[dict[str, Any]]:
    til = {"til_request_id": 42, "description": "Restart the print spooler on PRN-01"}
    return [*HEAD, {"type": "data-til", "data": til}, *TAIL]


def _file_only(turn: TurnInput) -> list[dict[str, Any]]:
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    return [*HEAD, {"type": "file", "url": url, "mediaType": "image/png"}, *TAIL]


async def _one_message(h: Harness, conv: str, group: bool) -> dict[str, Any]:
    await _ask(h, conv, group=group)
    await h.wait_for(lambda: len(h.teams.messages(conv)) >= 1, what="the answer")
    await h.wait_idle()
    assert h.teams.violations == []
    messages = h.teams.messages(conv)
    assert len(messages) == 1, [m.get("text") for m in messages]
    return messages[0]


async def test_an_approval_only_answer_is_one_message(harness: Harness) -> None:
    harness.neo.script = _approval_only
    for conv, group in (("a:approval", False), ("19:approval@thread.v2", True)):
        message = await _one_message(harness, conv, group)
        assert message["text"] == "Approval needed: Restart the print spooler on PRN-01"
        [card] = message["attachments"]
        actions = card["content"]["actions"]
        assert [a["data"]["til_request_id"] for a in actions] == ["42", "42"]
        assert "(no answer text)" not in str(message)


async def test_a_file_only_answer_is_one_message(harness: Harness) -> None:
    harness.neo.script = _file_only
    for conv, group in (("a:file", False), ("19:file@thread.v2", True)):
        message = await _one_message(harness, conv, group)
        assert message["text"] == "Here is the image."
        [image] = message["attachments"]
        assert image["contentType"] == "image/png"
        assert message["channelData"] == {"feedbackLoop": {"type": "default"}}


async def _metric(h: Harness, outcome: str) -> float:
    assert h.http is not None
    async with h.http.get(h.metrics_url) as resp:  # the private metrics listener
        text = await resp.text()
    line = f'relay_turns_total{{outcome="{outcome}"}} '
    return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith(line))


async def test_an_error_chunk_keeps_the_partial_text_and_says_it_stopped(
    harness: Harness,
) -> None:
    conv = "a:error-ending"
    harness.neo.script = lambda turn: [  # as in the AI SDK fixture error.sse
        *HEAD,
        {"type": "text-start", "id": "t"},
        {"type": "text-delta", "id": "t", "delta": "Partial ans"},
        {"type": "error", "errorText": "model error: rate limited"},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "error"},
    ]
    activity = await _ask(harness, conv)
    await harness.wait_for(lambda: len(harness.teams.messages(conv)) == 1, what="the answer")
    await harness.wait_idle()
    [final] = harness.teams.messages(conv)
    turn = await harness.components.store.get_turn(_turn_id(conv, activity))
    assert turn is not None
    ref = turn.chat_turn_id
    assert ref
    assert final["text"] == (
        f"Partial ans\n\n⚠️ The answer stopped early: model error: rate limited (ref {ref})"
    )
    assert "channelData" not in final or "feedbackLoop" not in final["channelData"]
    assert turn.state is TurnState.FAILED
    assert turn.error == "model error: rate limited"
    assert await _metric(harness, "failed") == 1
    assert await _metric(harness, "delivered") == 0
    assert harness.teams.violations == []


async def test_an_abort_keeps_the_streamed_words_and_says_it_stopped(harness: Harness) -> None:
    conv = "a:abort-ending"
    words = [f"w{n} " for n in range(16)]
    harness.neo.script = lambda turn: [  # as in the AI SDK fixture abort.sse
        *HEAD,
        {"type": "text-start", "id": "t"},
        *({"type": "text-delta", "id": "t", "delta": w} for w in words),
        {"type": "abort", "reason": "user pressed stop"},
    ]
    harness.neo.chunk_delay = 0.05
    activity = await _ask(harness, conv)
    await harness.wait_for(lambda: len(harness.teams.messages(conv)) == 1, what="the answer")
    await harness.wait_idle()
    streamed = [r.activity.get("text") or "" for r in harness.teams.stream_requests(conv)]
    [final] = harness.teams.messages(conv)
    turn = await harness.components.store.get_turn(_turn_id(conv, activity))
    assert turn is not None
    assert turn.state is TurnState.CANCELLED
    notice = f"⚠️ The answer stopped early: user pressed stop (ref {turn.chat_turn_id})"
    assert final["text"] == "".join(words) + "\n\n" + notice
    assert len(streamed) > 2  # the words were streamed, and the final kept them all
    assert all(final["text"].startswith(t) for t in streamed[1:-1])
    assert await _metric(harness, "cancelled") == 1
    assert await _metric(harness, "delivered") == 0
    assert harness.teams.violations == []


TABLE_ANSWER = (
    "You can restart it in two ways.\n\n"
    "| Method | Command |\n|---|---|\n"
    "| PowerShell | `Restart-Service -Name Spooler -Force` |\n"
    "| Services app | services.msc |\n\n"
    "Then print a test page."
)


def _final_versions(h: Harness, conv: str) -> dict[str, dict[str, Any]]:
    """The last version of every message the user sees (in-place updates applied)."""
    shown: dict[str, dict[str, Any]] = {}
    for r in h.teams.received:
        if r.conversation_id == conv and r.status < 300 and r.activity.get("type") == "message":
            shown[r.activity.get("_id") or ""] = r.activity
    return shown


async def test_a_table_is_shown_once_in_place_after_streaming_its_rows(
    harness: Harness,
) -> None:
    conv = "a:table"
    harness.neo.script = lambda turn: [
        *HEAD,
        *_text(*(w + " " for w in TABLE_ANSWER.split(" "))),
        *TAIL,
    ]
    harness.neo.chunk_delay = 0.03
    await _ask(harness, conv)
    await harness.wait_for(lambda: len(harness.teams.messages(conv)) >= 2, what="the replace")
    await harness.wait_idle()
    assert harness.teams.violations == []
    streamed = [r.activity.get("text") or "" for r in harness.teams.stream_requests(conv)]
    assert any("**Method**: PowerShell" in t for t in streamed)  # rows flattened while streaming
    [final] = _final_versions(harness, conv).values()  # one bubble
    assert final["text"] == "You can restart it in two ways."
    [card] = final["attachments"]
    table, after = card["content"]["body"]
    assert table["type"] == "Table"
    assert after["text"] == "Then print a test page."
    assert "**Method**" not in str(final)  # the table once: no flattened copy left
    assert final["channelData"] == {"feedbackLoop": {"type": "default"}}


async def test_a_til_request_and_a_tool_approval_for_one_action_show_one_card(
    harness: Harness,
) -> None:
    til = {"til_request_id": 7, "description": "Restart the print spooler on PRN-01"}
    harness.neo.script = lambda turn: [
        *HEAD,
        *_text("This needs a technician's approval."),
        {
            "type": "tool-input-available",
            "toolCallId": "c1",
            "toolName": "restartService",
            "input": {"host": "PRN-01"},
        },
        {"type": "tool-approval-request", "approvalId": "ap-1", "toolCallId": "c1"},
        {"type": "data-til", "data": til},
        *TAIL,
    ]
    for conv, group in (("a:til-and-tool", False), ("19:til-and-tool@thread.v2", True)):
        message = await _one_message(harness, conv, group)
        assert message["text"] == "This needs a technician's approval."
        [card] = message["attachments"]  # the decidable one
        assert [a["data"]["til_request_id"] for a in card["content"]["actions"]] == ["7", "7"]
