"""End to end: sessions that heal, a null ``since_cursor``, duplicates decided by fact.

Real HTTP on loopback: the Neo emulator archives / deletes / re-points sessions, answers 202s
without a cursor and loses answers, as ``relay.devtools.neo_emulator`` documents its assumptions.
"""

from __future__ import annotations

from pathlib import Path

from relay.domain import (
    ActivityId,
    BotId,
    ConversationId,
    ConversationRef,
    ConversationType,
    SessionId,
    SessionRecord,
    TenantId,
    Turn,
    TurnState,
    User,
    make_turn_id,
)
from relay.neo.adapter import NeoAdapter
from relay.sessions import HEALED_NOTICE, SessionSteps
from relay.store.sqlite import SqliteStore
from tests.fakes.harness import BOT_A, Harness, answer_script, close_harness, make_harness

CHAT = "/public-api/chat/sessions"


def _creates(h: Harness) -> list[dict[str, object]]:
    return [r.json for r in h.neo.requests if r.method == "POST" and r.path == CHAT]


async def _ask(h: Harness, conv: str, text: str) -> None:
    await h.deliver(h.activity(BOT_A, text, conversation_id=conv), bot=BOT_A)
    await h.wait_idle()


async def _first_session(h: Harness, conv: str) -> str:
    h.neo.script = answer_script
    await _ask(h, conv, "first")
    [sid] = list(h.neo.sessions)
    return sid


async def _assert_healed(h: Harness, conv: str, old: str) -> None:
    await _ask(h, conv, "second")
    texts = h.teams.visible_text(conv)
    assert sum(t == HEALED_NOTICE for t in texts) == 1
    assert any(t.startswith("Answer to: second") for t in texts)
    creates = _creates(h)
    assert len(creates) == 2  # exactly one new session
    assert creates[1] is not None
    assert creates[0] is not None
    for key in ("managed_agent_key", "bot_id", "inbound_tenant_id"):
        assert creates[1][key] == creates[0][key]
    new = await h.components.store.get_session(BotId(BOT_A.app_id), ConversationId(conv))
    assert new is not None
    assert new.session_id != old
    assert h.neo.posted_messages[-1]["session_id"] == new.session_id
    turns = await h.components.store.conversation_turns(BotId(BOT_A.app_id), ConversationId(conv))
    assert [t.state for t in turns] == [TurnState.DELIVERED, TurnState.DELIVERED]
    assert h.teams.violations == []


async def test_an_archived_session_heals_with_one_notice(harness: Harness) -> None:
    conv = "a:heal-archived"
    old = await _first_session(harness, conv)
    harness.neo.archive_session(old)
    await _assert_healed(harness, conv, old)


async def test_a_deleted_session_heals_with_one_notice(harness: Harness) -> None:
    conv = "a:heal-deleted"
    old = await _first_session(harness, conv)
    harness.neo.delete_session(old)
    await _assert_healed(harness, conv, old)


async def test_a_session_no_longer_ours_heals(harness: Harness) -> None:
    conv = "a:heal-forbidden"
    old = await _first_session(harness, conv)
    harness.neo.forbid_session(old)
    await _assert_healed(harness, conv, old)


async def test_a_second_refusal_fails_with_neos_request_id(harness: Harness) -> None:
    h = harness
    conv = "a:heal-twice"
    await _first_session(h, conv)
    h.neo.fail_next("post_message", 409, code="session_archived", times=2)
    await _ask(h, conv, "second")
    refused = [r for r in h.neo.responses if r.path.endswith("/messages") and r.status == 409]
    assert len(refused) == 2
    assert len(_creates(h)) == 2  # at most one re-creation per turn
    last = h.teams.visible_text(conv)[-1]
    assert "couldn't get an answer" in last
    assert str(refused[-1].request_id) in last


async def test_a_null_since_cursor_shows_nothing_of_the_previous_turn(harness: Harness) -> None:
    h = harness
    conv = "a:null-cursor"
    await _first_session(h, conv)
    h.neo.null_since_cursor()
    await _ask(h, conv, "second")
    texts = h.teams.visible_text(conv)
    assert texts[-1].startswith("Answer to: second")
    assert "first" not in texts[-1]
    tails = [r for r in h.neo.requests if r.path.endswith("/events")]
    assert tails[-1].query.get("since")  # the last event id the relay saw, not the start


async def test_a_409_with_an_unknown_code_after_a_timed_out_post_is_a_duplicate(
    tmp_path: Path,
) -> None:
    h = await make_harness(tmp_path, neo_request_timeout=0.5)
    try:
        conv = "a:dup-unknown-code"
        h.neo.script = answer_script
        h.neo.duplicate_code = "conflict"  # nothing naming a duplicate
        h.neo.lose_next_answer(1.5)  # processed, but the 202 comes too late
        await _ask(h, conv, "hello there")
        posts = [r for r in h.neo.responses if r.path.endswith("/messages")]
        assert [r.status for r in posts][-1] == 409
        assert len(h.neo.posted_messages) == 1  # one Neo turn
        [turn] = await h.components.store.conversation_turns(
            BotId(BOT_A.app_id), ConversationId(conv)
        )
        assert turn.state is TurnState.DELIVERED
        assert h.teams.visible_text(conv)[-1].startswith("Answer to: hello there")
    finally:
        await close_harness(h)


async def test_healers_of_one_conversation_end_with_one_mapping(harness: Harness) -> None:
    """A replica that finds the mapping already replaced (by another healer) uses that session."""
    h = harness
    store = SqliteStore(h.tmp / "healers.db")
    await store.open()
    adapter = NeoAdapter(h.settings)
    try:
        bot, conv = BotId(BOT_A.app_id), ConversationId("a:two-healers")
        old = await adapter.create_session(bot_id=bot, tenant_id=None, title="t")
        other = await adapter.create_session(bot_id=bot, tenant_id=None, title="t")
        h.neo.archive_session(old.session_id)
        # The other replica healed first: the mapping already names its new session.
        await store.put_session(SessionRecord(bot, conv, other.session_id))
        ref = ConversationRef(bot, "http://x", conv, ConversationType.PERSONAL, TenantId("t"))
        turn = Turn(
            make_turn_id(bot, conv, ActivityId("1")), ref, ActivityId("1"), User("29:u"), "hi"
        )
        turn.session_id = SessionId(old.session_id)
        await store.add_turn(turn)
        stale = SessionRecord(bot, conv, old.session_id)
        posted, session = await SessionSteps(store, adapter).post(turn, stale, [], 1e12)
        assert not posted.duplicate
        assert session is not None
        assert session.session_id == other.session_id
        assert turn.session_id == other.session_id
        assert len(_creates(h)) == 2  # the two made above; the healer created none
        mapped = await store.get_session(bot, conv)
        assert mapped is not None
        assert mapped.session_id == other.session_id
    finally:
        await adapter.aclose()
        await store.close()
