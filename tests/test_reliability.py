"""Upstream faults end to end: whatever Neo or Teams does, each turn gets one answer or one error.

Everything runs over real HTTP against the emulators (tests/fakes/harness.py); faults are injected
with the emulators' knobs. The user-visible invariant checked throughout: every turn ends in exactly
one visible outcome — the whole answer once, or one readable error — and no turn is left unfinished
(DESIGN.md invariants 3 and 5; peers-and-pitfalls.md §5).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relay import retry
from relay.devtools.neo_emulator_streams import TurnInput
from relay.domain import TurnState
from relay.turns import DEADLINE_TEXT
from tests.fakes.harness import BOT_A, BOT_B, Harness, close_harness, make_harness


def _words(n: int, tag: str = "w") -> list[str]:
    return [f"{tag}{i:03d} " for i in range(n)]


def _answer(deltas: list[str]) -> list[dict[str, object]]:
    return [
        {"type": "start", "messageId": "m1"},
        {"type": "start-step"},
        {"type": "text-start", "id": "t"},
        *({"type": "text-delta", "id": "t", "delta": d} for d in deltas),
        {"type": "text-end", "id": "t"},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "stop"},
    ]


def _echo(turn: TurnInput) -> list[dict[str, object]]:
    return _answer(["Answer to: ", turn.message])


async def _turn_states(h: Harness, conversation_id: str) -> list[TurnState]:
    turns = await h.components.store.conversation_turns(BOT_A.app_id, conversation_id)  # type: ignore[arg-type]
    return [t.state for t in turns]


def _events_requests(h: Harness) -> list[dict[str, str]]:
    return [r.headers for r in h.neo.requests if r.path.endswith("/events")]


async def test_sse_cut_five_times_still_gives_the_exact_answer_once(harness: Harness) -> None:
    deltas = _words(40)
    harness.neo.script = lambda turn: _answer(deltas)
    harness.neo.chunk_delay = 0.01
    harness.neo.drop_stream_after(4, times=5)  # five connections, each cut after four events
    act = harness.activity(BOT_A, "a long answer please")
    conv = act["conversation"]["id"]
    assert (await harness.deliver(act, bot=BOT_A)).status == 200
    await harness.wait_for(lambda: harness.teams.messages(conv), 15, "the answer")
    await harness.wait_idle()

    [shown] = harness.teams.visible_text(conv)
    expected = "".join(deltas).strip()
    assert shown.startswith(expected)
    for word in deltas:  # every piece exactly once, nothing repeated from a replayed event
        assert shown.count(word.strip()) == 1
    requests = _events_requests(harness)
    assert len(requests) >= 6
    # Each reconnect resumed after the last event it had, via Last-Event-Id.
    assert all("last-event-id" in r for r in requests[1:6])
    assert await _turn_states(harness, conv) == [TurnState.DELIVERED]
    assert harness.teams.violations == []


async def test_neo_5xx_on_session_and_post_are_retried_and_posted_once(harness: Harness) -> None:
    harness.neo.script = _echo
    harness.neo.fail_next("create_session", 503, times=2)
    harness.neo.fail_next("post_message", 502, times=2)
    act = harness.activity(BOT_A, "retry me")
    conv = act["conversation"]["id"]
    assert (await harness.deliver(act, bot=BOT_A)).status == 200
    await harness.wait_for(lambda: harness.teams.messages(conv), 10, "the answer")
    await harness.wait_idle()
    paths = [r.path for r in harness.neo.requests if r.method == "POST"]
    assert sum(p.endswith("/sessions") for p in paths) == 3
    assert sum(p.endswith("/messages") for p in paths) == 3
    assert len(harness.neo.posted_messages) == 1  # one Neo turn, whatever the retries
    [shown] = harness.teams.visible_text(conv)
    assert shown.startswith("Answer to: retry me")


async def test_neo_429_waits_for_retry_after(harness: Harness) -> None:
    harness.neo.script = _echo
    harness.neo.fail_next("post_message", 429, retry_after="0.6")
    retry.set_delay_scale(1.0)  # real waits here: the point is the server-given delay
    act = harness.activity(BOT_A, "busy?")
    conv = act["conversation"]["id"]
    started = time.monotonic()
    assert (await harness.deliver(act, bot=BOT_A)).status == 200
    await harness.wait_for(lambda: harness.teams.messages(conv), 10, "the answer")
    assert time.monotonic() - started >= 0.55
    assert len(harness.neo.posted_messages) == 1


async def test_neo_out_of_retries_gives_one_clear_message_with_reference(harness: Harness) -> None:
    harness.neo.fail_next("post_message", 503, times=20)
    act = harness.activity(BOT_A, "never answered")
    conv = act["conversation"]["id"]
    assert (await harness.deliver(act, bot=BOT_A)).status == 200
    await harness.wait_for(lambda: harness.teams.messages(conv), 10, "the error message")
    await harness.wait_idle()
    [shown] = harness.teams.visible_text(conv)
    last_rid = [r.request_id for r in harness.neo.responses if r.path.endswith("/messages")][-1]
    assert shown == (
        f"Sorry, I couldn't get an answer this time. Please try again. (reference: {last_rid})"
    )
    assert await _turn_states(harness, conv) == [TurnState.FAILED]
    assert harness.neo.posted_messages == []


async def test_neo_429_out_of_retries_says_busy(harness: Harness) -> None:
    harness.neo.fail_next("post_message", 429, retry_after="0.01", times=20)
    act = harness.activity(BOT_A, "busy forever")
    conv = act["conversation"]["id"]
    assert (await harness.deliver(act, bot=BOT_A)).status == 200
    await harness.wait_for(lambda: harness.teams.messages(conv), 10, "the error message")
    [shown] = harness.teams.visible_text(conv)
    assert shown.startswith("Neo is busy right now")


async def test_teams_429_storm_delivers_once(harness: Harness) -> None:
    harness.neo.script = _echo
    is_message = lambda a: a.get("type") == "message"  # noqa: E731
    harness.teams.fail_next(429, retry_after=0.5, times=4, match=is_message)
    act = harness.activity(BOT_A, "storm", conversation_type="groupChat")
    conv = act["conversation"]["id"]
    assert (await harness.deliver(act, bot=BOT_A)).status == 200
    await harness.wait_for(lambda: harness.teams.messages(conv), 10, "the answer")
    await harness.wait_idle()
    [shown] = harness.teams.visible_text(conv)
    assert shown.startswith("Answer to: storm")
    posts = [r for r in harness.teams.received if r.activity.get("type") == "message"]
    assert [r.status for r in posts] == [429, 429, 429, 429, 201]


async def test_teams_5xx_on_a_create_is_never_replayed(harness: Harness) -> None:
    harness.neo.script = _echo
    is_message = lambda a: a.get("type") == "message"  # noqa: E731
    harness.teams.fail_next(500, times=1, match=is_message)
    act = harness.activity(BOT_A, "ambiguous", conversation_type="groupChat")
    conv = act["conversation"]["id"]
    assert (await harness.deliver(act, bot=BOT_A)).status == 200
    await harness.wait_for(
        lambda: any(r.activity.get("type") == "message" for r in harness.teams.received),
        10,
        "the send attempt",
    )
    await harness.wait_idle()
    await asyncio.sleep(0.2)
    # Teams may have shown it (a 5xx after the body was sent): one attempt, never a second copy.
    posts = [r for r in harness.teams.received if r.activity.get("type") == "message"]
    assert [r.status for r in posts] == [500]
    [turn] = await harness.components.store.conversation_turns(BOT_A.app_id, conv)  # type: ignore[arg-type]
    assert turn.state.is_final


async def test_failing_token_endpoint_is_retried(harness: Harness) -> None:
    harness.neo.script = _echo
    harness.issuer.fail_token_requests(2, status=500)
    act = harness.activity(BOT_A, "token trouble", conversation_type="groupChat")
    conv = act["conversation"]["id"]
    assert (await harness.deliver(act, bot=BOT_A)).status == 200
    await harness.wait_for(lambda: harness.teams.messages(conv), 15, "the answer")
    await harness.wait_idle()
    [shown] = harness.teams.visible_text(conv)
    assert shown.startswith("Answer to: token trouble")


async def test_token_endpoint_down_for_good_still_ends_the_turn(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, RELAY_TURN_DEADLINE="4")
    try:
        h.neo.script = _echo
        h.issuer.fail_token_requests(10_000, status=500)
        act = h.activity(BOT_A, "nobody hears me", conversation_type="groupChat")
        conv = act["conversation"]["id"]
        assert (await h.deliver(act, bot=BOT_A)).status == 200
        await h.wait_idle(timeout=15)
        # Nothing could be said (no token), but the turn is not stuck: it is journaled failed.
        assert await _turn_states(h, conv) == [TurnState.FAILED]
        assert h.teams.messages(conv) == []
    finally:
        await close_harness(h)


async def test_a_hung_stream_hits_the_turn_deadline(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, RELAY_TURN_DEADLINE="2")
    try:
        h.neo.script = lambda turn: _answer(_words(10))
        h.neo.stall_stream_after(3, seconds=60)  # far beyond the deadline; SSE idle limit is 120 s
        act = h.activity(BOT_A, "hang", conversation_type="groupChat")
        conv = act["conversation"]["id"]
        started = time.monotonic()
        assert (await h.deliver(act, bot=BOT_A)).status == 200
        await h.wait_for(lambda: h.teams.messages(conv), 10, "the deadline message")
        assert time.monotonic() - started < 5
        assert h.teams.visible_text(conv) == [DEADLINE_TEXT]
        await h.wait_idle()
        assert await _turn_states(h, conv) == [TurnState.FAILED]
    finally:
        await close_harness(h)


# ------------------------------------------------------------------------------------------------
# Seeded chaos: many conversations, several turns each, random faults on both sides
# ------------------------------------------------------------------------------------------------

CONVERSATIONS = 20
TURNS = 3
FAILURE_PREFIXES = ("Sorry, ", "Neo is busy")


def _inject(h: Harness, rng: random.Random, conv: str) -> str:
    """One random fault. Neo's fault queues are global (any conversation may hit them); Teams
    faults are aimed at ``conv``, so one send never meets more of them in a row than its retry
    budget allows — when Teams refuses everything for longer than that, nothing can be shown."""
    kinds = ["neo5xx", "neo429", "drop", "hang", "teams429", "teams503", "typing5xx", "neo_down"]
    kind = rng.choice(kinds)

    def ours(activity_type: str) -> Callable[[dict[str, Any]], bool]:
        def match(a: dict[str, Any]) -> bool:
            conversation = a.get("conversation") or {}
            return a.get("type") == activity_type and conversation.get("id") == conv

        return match

    if kind == "neo_down":  # longer than the NEO retry budget: someone gets an error message
        h.neo.fail_next("post_message", 503, times=6)
    elif kind == "neo5xx":
        h.neo.fail_next(rng.choice(["create_session", "post_message"]), rng.choice([500, 502, 503]))
    elif kind == "neo429":
        h.neo.fail_next(rng.choice(["create_session", "post_message"]), 429, retry_after="0.2")
    elif kind == "drop":
        h.neo.drop_stream_after(rng.randint(0, 6))
    elif kind == "hang":
        h.neo.hang_next(rng.choice(["events", "post_message"]), 0.3)
    elif kind in ("teams429", "teams503"):
        status = 429 if kind == "teams429" else 503
        h.teams.fail_next(status, retry_after=0.3, match=ours("message"))
    else:
        h.teams.fail_next(502, match=ours("typing"))
    return kind


async def test_seeded_chaos_every_turn_accounted_for_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(20261122)
    h = await make_harness(tmp_path, RELAY_TURN_DEADLINE="30")
    try:
        h.neo.script = lambda turn: _answer(
            ["Answer to: ", *(w + " " for w in turn.message.split())]
        )
        h.neo.chunk_delay = 0.002
        injected: dict[str, int] = {}
        convs = [(BOT_A if i % 2 else BOT_B, f"a:chaos-{i:02d}") for i in range(CONVERSATIONS)]
        for t in range(TURNS):
            for i, (bot, conv) in enumerate(convs):
                for _ in range(rng.randint(0, 2)):
                    kind = _inject(h, rng, conv)
                    injected[kind] = injected.get(kind, 0) + 1
                kind_of_chat = "groupChat" if i % 3 == 0 else "personal"
                act = h.activity(
                    bot, f"q{t} c{i}", conversation_id=conv, conversation_type=kind_of_chat
                )
                assert (await h.deliver(act, bot=bot)).status == 200
            await asyncio.sleep(0.05)
        await h.wait_for(
            lambda: all(len(h.teams.visible_text(c)) >= TURNS for _, c in convs),
            45,
            "an outcome for every turn",
        )
        await h.wait_idle(timeout=30)
        await asyncio.sleep(0.3)  # anything late (a duplicate) would arrive now

        tally = {"answered": 0, "error message": 0}
        for i, (bot, conv) in enumerate(convs):
            shown = h.teams.visible_text(conv)
            assert len(shown) == TURNS, (conv, shown)
            for t, text in enumerate(shown):
                if text.startswith("Answer to: "):
                    assert text.startswith(f"Answer to: q{t} c{i}"), (conv, shown)
                    assert text.count(f"q{t} c{i}") == 1
                    tally["answered"] += 1
                else:
                    assert text.startswith(FAILURE_PREFIXES), (conv, shown)
                    tally["error message"] += 1
            turns = await h.components.store.conversation_turns(bot.app_id, conv)  # type: ignore[arg-type]
            assert [t.state.is_final for t in turns] == [True] * TURNS
        print(f"\nchaos tally: {tally}; faults injected: {dict(sorted(injected.items()))}")
        assert tally["answered"] + tally["error message"] == CONVERSATIONS * TURNS
        assert tally["answered"] > CONVERSATIONS * TURNS // 2  # retries absorb most faults
        assert len(h.neo.posted_messages) <= CONVERSATIONS * TURNS
    finally:
        await close_harness(h)
