"""A real ``relay serve`` process killed mid-answer, then restarted: nothing lost, nothing doubled.

SIGKILL gives the relay no chance to clean up: whatever the journal held at that instant is all the
next process has (DESIGN.md invariant 5). SIGTERM must end the process promptly with status 0 after
at most ``RELAY_SHUTDOWN_GRACE`` seconds of letting turns finish; an interrupted turn completes
after the restart. Each test also reads the processes' DEBUG logs for secrets (invariant 7).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relay.domain import ConversationId, TurnState
from relay.store import open_store
from tests.fakes.harness import BOT_A, BOT_B, NEO_KEY, Harness, close_harness, make_harness
from tests.fakes.relay_process import RelayProcess, relay_env
from tests.fakes.user_view import assert_each_once, user_view
from tests.test_reliability import _answer, _words

WORDS = _words(60)
# Paragraphs, so a 1:1 stream shows text before the end (relay.teams.stream cuts at blank lines).
DELTAS = [w if i % 6 != 5 else w.strip() + "\n\n" for i, w in enumerate(WORDS)]


@pytest.fixture
async def emulators(tmp_path: Path) -> AsyncIterator[Harness]:
    """The harness's emulators, without its in-process relay (the subprocess replaces it)."""
    h = await make_harness(tmp_path)
    await h.stop_relay()
    h.neo.script = lambda turn: _answer(DELTAS)
    tokens: set[str] = set()
    verify = h.teams.verify_token
    assert verify is not None

    def recording_verify(token: str) -> str:
        tokens.add(token)  # outbound bot tokens the relay used: must never be logged
        return verify(token)

    h.teams.verify_token = recording_verify
    h.seen_tokens = tokens  # type: ignore[attr-defined]
    try:
        yield h
    finally:
        await close_harness(h)


def _assert_no_secrets(h: Harness, logs: str, inbound_tokens: list[str]) -> None:
    assert "DEBUG" in logs  # the scan looked at debug-level output
    secrets = [NEO_KEY, BOT_A.secret, BOT_B.secret, *inbound_tokens, *h.seen_tokens]  # type: ignore[attr-defined]
    assert h.seen_tokens  # type: ignore[attr-defined]
    for secret in secrets:
        assert secret not in logs
        # Nor the signature part of a JWT on its own.
        if secret.count(".") == 2:
            assert secret.rsplit(".", 1)[1] not in logs


async def _deliver(h: Harness, relay: RelayProcess, text: str, ctype: str) -> tuple[str, str]:
    h.relay_url = relay.url
    act = h.activity(BOT_A, text, conversation_type=ctype)
    token = h.issuer.sign(BOT_A.app_id, act["serviceUrl"])
    assert (await h.deliver(act, token=token)).status == 200
    return act["conversation"]["id"], token


async def _final_state(h: Harness, conv: str) -> TurnState:
    store = open_store(h.settings.database_url)
    await store.open()
    try:
        [turn] = await store.conversation_turns(BOT_A.app_id, ConversationId(conv))  # type: ignore[arg-type]
        return turn.state
    finally:
        await store.close()


async def _journal_caught_up(h: Harness, conv: str, timeout: float = 10.0) -> None:
    """Wait until the journaled stream progress equals what Teams shows: these tests kill
    between updates (a kill while one is on the wire has its own test below)."""
    store = open_store(h.settings.database_url)
    await store.open()
    try:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            turns = await store.conversation_turns(BOT_A.app_id, ConversationId(conv))  # type: ignore[arg-type]
            shown = user_view(h.teams, conv)
            if turns and shown:
                delivery = await store.get_delivery(turns[0].turn_id)
                if delivery.get("shown_chars") == len(shown[-1]):
                    return
            await asyncio.sleep(0.01)
        raise AssertionError("the journal never caught up with the stream")
    finally:
        await store.close()


async def _mid_answer(h: Harness, conv: str, ctype: str) -> None:
    """Wait until the relay is tailing the answer and (1:1) part of it is on screen."""
    await h.wait_for(
        lambda: any(r.path.endswith("/events") for r in h.neo.requests), 15, "the tail"
    )
    if ctype == "personal":
        await h.wait_for(lambda: any(user_view(h.teams, conv)), 10, "streamed text")
        await _journal_caught_up(h, conv)
    else:
        await asyncio.sleep(1.0)
    assert not h.teams.messages(conv) or ctype == "personal"  # the answer is not complete yet


@pytest.mark.parametrize("ctype", ["groupChat", "personal"])
async def test_sigkill_mid_answer_then_restart_shows_the_answer_once(
    emulators: Harness, tmp_path: Path, ctype: str
) -> None:
    h = emulators
    h.neo.chunk_delay = 0.06  # ~3.6 s of answer
    env = relay_env(h)
    first = await RelayProcess.start(env, tmp_path / "relay-1.log")
    second: RelayProcess | None = None
    try:
        conv, token = await _deliver(h, first, "tell me everything", ctype)
        await _mid_answer(h, conv, ctype)
        await first.signal_and_wait(signal.SIGKILL, 10)
        second = await RelayProcess.start(env, tmp_path / "relay-2.log")
        await h.wait_for(
            lambda: WORDS[-1].strip() in "".join(user_view(h.teams, conv)), 20, "the answer"
        )
        await asyncio.sleep(0.5)  # a duplicate would arrive now
        shown = user_view(h.teams, conv)
        assert_each_once(shown, [w.strip() for w in WORDS])
        if ctype == "groupChat":
            [final] = h.teams.messages(conv)  # exactly one answer, holding the whole text
            assert "".join(w.strip() for w in WORDS) in "".join(final["text"].split())
        assert len(h.neo.posted_messages) == 1
        await h.wait_for(lambda: h.teams.violations == [], 1, "no Teams rule broken")
        await second.signal_and_wait(signal.SIGTERM, 15)
        assert await _final_state(h, conv) is TurnState.DELIVERED
        _assert_no_secrets(h, first.log() + second.log(), [token])
    finally:
        await first.kill()
        if second is not None:
            await second.kill()


async def test_sigkill_while_a_stream_update_is_on_the_wire_shows_nothing_twice(
    emulators: Harness, tmp_path: Path
) -> None:
    """Teams accepts an update the relay never heard back about: the relay journals each update's
    text *before* sending it, so the next process closes the stream with that text (which
    extends whatever Teams shows, whether or not the update arrived) and continues after it."""
    h = emulators
    h.neo.chunk_delay = 0.1  # ~6 s of answer: the held request is an update, not the final
    env = relay_env(h)
    first = await RelayProcess.start(env, tmp_path / "relay-1.log")
    second: RelayProcess | None = None
    try:
        conv, _token = await _deliver(h, first, "tell me everything", "personal")
        await _mid_answer(h, conv, "personal")
        sent = len(h.teams.stream_requests(conv))
        h.teams.pause()  # the next update is recorded, then held unanswered
        await h.wait_for(
            lambda: len(h.teams.stream_requests(conv)) > sent, 10, "an update on the wire"
        )
        await first.signal_and_wait(signal.SIGKILL, 10)
        h.teams.resume()  # Teams applies the update the dead relay never heard back about
        await h.wait_for(
            lambda: h.teams.stream_requests(conv)[-1].status == 202, 5, "the update applied"
        )
        second = await RelayProcess.start(env, tmp_path / "relay-2.log")
        await h.wait_for(
            lambda: WORDS[-1].strip() in "".join(user_view(h.teams, conv)), 20, "the answer"
        )
        await asyncio.sleep(0.5)  # a duplicate would arrive now
        assert_each_once(user_view(h.teams, conv), [w.strip() for w in WORDS])
        assert len(h.neo.posted_messages) == 1
        await h.wait_for(lambda: h.teams.violations == [], 1, "no Teams rule broken")
        await second.signal_and_wait(signal.SIGTERM, 15)
        assert await _final_state(h, conv) is TurnState.DELIVERED
    finally:
        h.teams.resume()
        await first.kill()
        if second is not None:
            await second.kill()


async def _wait_for_state(h: Harness, conv: str, state: TurnState, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while (now := await _final_state(h, conv)) is not state:
        assert time.monotonic() < end, f"the turn is {now}, not {state}"
        await asyncio.sleep(0.1)


def _is_final(activity: dict[str, Any]) -> bool:
    return activity.get("type") == "message" and any(
        e.get("streamType") == "final" for e in activity.get("entities") or []
    )


@pytest.mark.parametrize("chunk_delay", [0.06, 0.005], ids=["text-streamed", "progress-only"])
async def test_sigkill_while_the_final_is_on_the_wire_shows_nothing_twice(
    emulators: Harness, tmp_path: Path, chunk_delay: float
) -> None:
    """Teams accepts the stream's final the relay never heard back about: the next process finds
    the stream already completed and carries on from what that final showed (journaled before
    it was sent) instead of from the last streamed text — or, when the stream showed only
    progress, instead of sending the whole answer again."""
    h = emulators
    h.neo.chunk_delay = chunk_delay
    h.teams.pause(_is_final)  # the final is recorded, then held unanswered
    env = relay_env(h)
    first = await RelayProcess.start(env, tmp_path / "relay-1.log")
    second: RelayProcess | None = None
    try:
        conv, _token = await _deliver(h, first, "tell me everything", "personal")
        await h.wait_for(
            lambda: any(_is_final(r.activity) for r in h.teams.received), 20, "the final"
        )
        await first.signal_and_wait(signal.SIGKILL, 10)
        h.teams.resume()  # Teams applies the final the dead relay never heard back about
        await h.wait_for(lambda: len(h.teams.messages(conv)) == 1, 5, "the final applied")
        second = await RelayProcess.start(env, tmp_path / "relay-2.log")
        await _wait_for_state(h, conv, TurnState.DELIVERED)
        await asyncio.sleep(0.5)  # a duplicate would arrive now
        assert_each_once(user_view(h.teams, conv), [w.strip() for w in WORDS])
        assert len(h.neo.posted_messages) == 1
        # The one request the new run cannot avoid: Teams refuses it as "already completed",
        # which is how the run learns that the final arrived.
        assert h.teams.violations == ["request after the final message"], h.teams.violations
    finally:
        h.teams.resume()
        await first.kill()
        if second is not None:
            await second.kill()


async def test_sigterm_exits_zero_promptly_and_the_turn_completes_after_restart(
    emulators: Harness, tmp_path: Path
) -> None:
    h = emulators
    h.neo.chunk_delay = 0.1  # ~6 s of answer: longer than the grace period below
    grace = 1.0
    env = relay_env(h, RELAY_SHUTDOWN_GRACE=str(grace))
    first = await RelayProcess.start(env, tmp_path / "relay-1.log")
    second: RelayProcess | None = None
    try:
        conv, token = await _deliver(h, first, "a slow one", "personal")
        await _mid_answer(h, conv, "personal")
        started = time.monotonic()
        status = await first.signal_and_wait(signal.SIGTERM, grace + 10)
        took = time.monotonic() - started
        print(f"\nSIGTERM: exit status {status} after {took:.2f}s (grace {grace}s)")
        assert status == 0, first.log()[-3000:]
        assert took < grace + 5, took
        assert "resume at next start" in first.log()
        assert await _final_state(h, conv) is TurnState.STREAMING  # checkpointed, unfinished

        second = await RelayProcess.start(env, tmp_path / "relay-2.log")
        await h.wait_for(
            lambda: WORDS[-1].strip() in "".join(user_view(h.teams, conv)), 20, "the answer"
        )
        await asyncio.sleep(0.5)
        assert_each_once(user_view(h.teams, conv), [w.strip() for w in WORDS])
        assert len(h.neo.posted_messages) == 1
        assert await second.signal_and_wait(signal.SIGINT, 15) == 0
        assert await _final_state(h, conv) is TurnState.DELIVERED
        _assert_no_secrets(h, first.log() + second.log(), [token])
    finally:
        await first.kill()
        if second is not None:
            await second.kill()
