"""Recovery at start-up, in-process: a relay stopped mid-turn resumes it and nothing is doubled.

The relay is stopped the way a shutdown stops it (the worker cancels running turns after the grace
period; their journal stays as it was) and started again on the same SQLite file, with the Neo and
Teams emulators still running — as in production, Neo's turn carries on while the relay is away.
The subprocess tests (``test_recovery_process.py``) do the same with SIGKILL and SIGTERM.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from relay.domain import ConversationId, Turn, TurnState
from relay.store import open_store
from relay.teams.inbound import parse_activity, to_turn
from relay.turns import MAX_ATTEMPTS
from tests.fakes.harness import BOT_A, Harness, close_harness, make_harness
from tests.fakes.user_view import assert_each_once, user_view
from tests.test_reliability import _answer, _echo, _words


async def _only_turn(h: Harness, conv: str) -> Turn:
    turns = await h.components.store.conversation_turns(BOT_A.app_id, ConversationId(conv))  # type: ignore[arg-type]
    return turns[-1]


async def _wait_state(
    h: Harness, conv: str, pred: Callable[[Turn], object], what: str, timeout: float = 10.0
) -> Turn:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        turn = await _only_turn(h, conv)
        if pred(turn):
            return turn
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def _restart_mid_stream(tmp_path: Path, conversation_type: str) -> None:
    h = await make_harness(tmp_path, RELAY_SHUTDOWN_GRACE="0")
    try:
        words = _words(60)
        # Paragraphs: a stream only ever shows text cut at a blank line (relay.teams.stream).
        deltas = [w if i % 6 != 5 else w.strip() + "\n\n" for i, w in enumerate(words)]
        h.neo.script = lambda turn: _answer(deltas)
        h.neo.chunk_delay = 0.06  # ~3.6 s of answer
        act = h.activity(BOT_A, "long one", conversation_type=conversation_type)
        conv = act["conversation"]["id"]
        assert (await h.deliver(act, bot=BOT_A)).status == 200
        await _wait_state(
            h,
            conv,
            lambda t: t.state is TurnState.STREAMING and t.last_event_id,
            "the turn to be streaming",
        )
        await h.wait_for(lambda: len(h.teams.received) >= 1, 5, "something sent to Teams")
        await asyncio.sleep(0.5)  # well into the answer, far from its end
        if conversation_type == "personal":  # part of the answer is on screen, streamed
            await h.wait_for(lambda: any(user_view(h.teams, conv)), 5, "streamed text")
        await h.stop_relay()  # grace 0: the running turn is cancelled, its journal kept
        stopped = await _reopen_turn(h, conv)
        assert stopped.state is TurnState.STREAMING

        await h.start_relay()  # recovery resubmits the unfinished turn
        await h.wait_for(
            lambda: "".join(user_view(h.teams, conv)).count(words[-1].strip()) >= 1,
            15,
            "the rest of the answer",
        )
        await h.wait_idle(timeout=15)
        print("user view:", [v[:40] + "…" + v[-20:] for v in user_view(h.teams, conv)])
        assert_each_once(user_view(h.teams, conv), [w.strip() for w in words])
        done = await _only_turn(h, conv)
        assert done.state is TurnState.DELIVERED
        assert done.attempts == 2
        assert len(h.neo.posted_messages) == 1  # resumed by re-reading, never posted again
        assert h.teams.violations == []
    finally:
        await close_harness(h)


async def _reopen_turn(h: Harness, conv: str) -> Turn:
    """Read the journal while the relay is down (a fresh store on the same file)."""
    store = open_store(h.settings.database_url)
    await store.open()
    try:
        [turn] = await store.conversation_turns(BOT_A.app_id, ConversationId(conv))  # type: ignore[arg-type]
        return turn
    finally:
        await store.close()


async def test_restart_mid_answer_in_a_group_chat_delivers_once(tmp_path: Path) -> None:
    await _restart_mid_stream(tmp_path, "groupChat")


async def test_restart_mid_stream_in_a_personal_chat_shows_text_once(tmp_path: Path) -> None:
    await _restart_mid_stream(tmp_path, "personal")


async def test_a_lost_202_is_not_posted_again_and_old_answers_are_not_replayed(
    tmp_path: Path,
) -> None:
    h = await make_harness(tmp_path, RELAY_SHUTDOWN_GRACE="0")
    try:
        h.neo.script = _echo
        conv = "a:lost-202"
        first = h.activity(BOT_A, "first question", conversation_id=conv)
        assert (await h.deliver(first, bot=BOT_A)).status == 200
        await h.wait_for(lambda: h.teams.messages(conv), 10, "the first answer")
        await h.wait_idle()

        h.neo.first_chunk_delay = 1.0  # the second answer takes a while to start
        second = h.activity(BOT_A, "second question", conversation_id=conv)
        assert (await h.deliver(second, bot=BOT_A)).status == 200
        await _wait_state(h, conv, lambda t: t.state is TurnState.STREAMING, "the post")
        await h.stop_relay()
        # Rewind the journal to "session ready": as if the process died after Neo's 202 left
        # Neo but before it was journaled. Only client_message_id stands between us and a
        # second Neo turn now.
        store = open_store(h.settings.database_url)
        await store.open()
        turn = (await store.conversation_turns(BOT_A.app_id, ConversationId(conv)))[-1]  # type: ignore[arg-type]
        turn.state, turn.since_cursor, turn.chat_turn_id = TurnState.SESSION_READY, None, None
        turn.last_event_id = None
        await store.save_turn(turn)
        await store.close()

        await h.start_relay()
        await h.wait_for(lambda: len(h.teams.messages(conv)) == 2, 10, "the second answer")
        await h.wait_idle()
        posts = [r for r in h.neo.responses if r.path.endswith("/messages")]
        assert [r.status for r in posts] == [202, 202, 409]  # the re-post was refused as a dup
        assert len(h.neo.posted_messages) == 2
        shown = h.teams.visible_text(conv)
        assert len(shown) == 2
        assert shown[0].startswith("Answer to: first question")
        # The tail started after the first turn's end: the old answer was not shown again.
        assert shown[1].startswith("Answer to: second question")
    finally:
        await close_harness(h)


async def test_a_turn_that_keeps_crashing_is_given_up_with_a_message(tmp_path: Path) -> None:
    h = await make_harness(tmp_path)
    try:
        h.neo.script = _echo
        await h.stop_relay()
        # A turn journaled by a process that then died MAX_ATTEMPTS times while running it.
        h.neo.hang_next("create_session", 30)  # the relay would hang here if it tried again
        act = h.activity(BOT_A, "poison", conversation_type="groupChat")
        conv = act["conversation"]["id"]
        turn = to_turn(parse_activity(act), BOT_A.app_id)  # type: ignore[arg-type]
        assert isinstance(turn, Turn)
        store = open_store(h.settings.database_url)
        await store.open()
        await store.add_turn(turn)
        turn.attempts = MAX_ATTEMPTS
        await store.save_turn(turn)
        await store.close()

        await h.start_relay()
        await h.wait_for(lambda: h.teams.messages(conv), 10, "the error message")
        await h.wait_idle()
        [shown] = h.teams.visible_text(conv)
        assert shown.startswith("Sorry, I couldn't get an answer this time.")
        done = await _only_turn(h, conv)
        assert done.state is TurnState.FAILED
        assert [r for r in h.neo.requests if r.method == "POST"] == []
    finally:
        await close_harness(h)
