"""End to end: /reset, /new, /help, /smart and unknown /words, through the loopback harness."""

from __future__ import annotations

import time
from pathlib import Path

from aiohttp import web

from relay.app import create_app
from relay.commands import (
    DEFAULT_GREETING,
    HELP,
    HELP_TEXT,
    RESET,
    RESET_DONE,
    for_scope,
    parse_command,
)
from relay.domain import (
    ActivityId,
    BotId,
    ConversationId,
    ConversationRef,
    ConversationType,
    ModelTier,
    Turn,
    TurnId,
    TurnState,
    User,
)
from relay.turns import RESET_STOPPED_TEXT
from tests.fakes.harness import BOT_A, Harness, answer_script, close_harness, make_harness
from tests.fakes.redis_server import RedisServer


def _session_creates(h: Harness) -> int:
    return sum(1 for r in h.neo.requests if r.path == "/public-api/chat/sessions")


def _resets(h: Harness) -> list[str]:
    return [r.path for r in h.neo.requests if r.path.endswith("/reset")]


def test_parse_command_is_case_insensitive_and_leaves_other_text_alone() -> None:
    assert parse_command("/RESET").command == RESET
    assert parse_command(" /New ").command == RESET
    assert parse_command("/Help").command == HELP
    assert parse_command("/smart").command == HELP  # no question: show how to use it
    smart = parse_command("/SMART why is\nthe VPN slow?")
    assert (smart.command, smart.text, smart.model_tier) == (
        None,
        "why is\nthe VPN slow?",
        ModelTier.SMART,
    )
    assert parse_command("/reset my password please").command is None  # a question, not a command
    assert parse_command("/weather today") == parse_command("/weather today")
    assert parse_command("/weather today").text == "/weather today"


async def test_reset_right_after_a_question_stops_it_and_starts_fresh(harness: Harness) -> None:
    h = harness
    h.neo.script = answer_script
    h.neo.chunk_delay = 0.5  # the answer takes a while: /reset must not wait for it
    conv = "a:conv-reset"
    assert (
        await h.deliver(h.activity(BOT_A, "first question", conversation_id=conv), bot=BOT_A)
    ).status == 200
    await h.wait_for(lambda: bool(h.neo.posted_messages), what="the question posted")
    assert (
        await h.deliver(h.activity(BOT_A, "/reset", conversation_id=conv), bot=BOT_A)
    ).status == 200
    await h.wait_for(lambda: len(h.teams.messages(conv)) == 2, what="stop and confirmation")
    stopped, confirmation = h.teams.messages(conv)
    assert RESET_STOPPED_TEXT in stopped["text"]
    assert confirmation["text"] == RESET_DONE
    assert len(_resets(h)) == 1
    [session_id] = list(h.neo.sessions)
    assert h.neo.sessions[session_id].archived_at is not None
    assert await h.components.store.get_session(BotId(BOT_A.app_id), ConversationId(conv)) is None
    turns = await h.components.store.conversation_turns(BotId(BOT_A.app_id), ConversationId(conv))
    assert [t.state for t in turns] == [TurnState.CANCELLED, TurnState.DELIVERED]

    # The next message starts a fresh session; /reset itself never reached the agent.
    h.neo.chunk_delay = 0.0
    await h.deliver(h.activity(BOT_A, "second question", conversation_id=conv), bot=BOT_A)
    await h.wait_for(lambda: len(h.teams.messages(conv)) == 3, what="the next answer")
    assert h.teams.messages(conv)[-1]["text"].startswith("Answer to: second question")
    assert _session_creates(h) == 2
    assert [m["message"] for m in h.neo.posted_messages] == ["first question", "second question"]
    assert h.teams.violations == []


async def test_reset_escapes_a_turn_that_never_ends(harness: Harness) -> None:
    h = harness
    h.neo.script = answer_script
    h.neo.first_chunk_delay = 3600.0  # Neo accepted the turn and never answers
    conv = "a:conv-hung"
    await h.deliver(h.activity(BOT_A, "hello?", conversation_id=conv), bot=BOT_A)
    await h.wait_for(lambda: len(h.teams.received) >= 1, what="the progress indicator")
    [old_session] = list(h.neo.sessions)
    started = time.monotonic()
    await h.deliver(h.activity(BOT_A, "/new", conversation_id=conv), bot=BOT_A)
    await h.wait_for(
        lambda: RESET_DONE in h.teams.visible_text(conv), timeout=5.0, what="the confirmation"
    )
    assert time.monotonic() - started < 5.0
    assert h.neo.sessions[old_session].archived_at is not None
    assert h.neo.sessions[old_session].turn is not None
    assert h.neo.sessions[old_session].turn.done()  # Neo's reset cancelled the hung turn

    h.neo.first_chunk_delay = 0.0
    await h.deliver(h.activity(BOT_A, "after the reset", conversation_id=conv), bot=BOT_A)
    await h.wait_for(
        lambda: any(t.startswith("Answer to: after") for t in h.teams.visible_text(conv)),
        what="the next answer",
    )
    assert h.neo.posted_messages[-1]["session_id"] != old_session
    assert _session_creates(h) == 2
    assert h.teams.violations == []


async def test_new_when_neo_reset_fails_still_starts_fresh_and_says_so(harness: Harness) -> None:
    h = harness
    h.neo.script = answer_script
    conv = "a:conv-new"
    await h.deliver(h.activity(BOT_A, "hello", conversation_id=conv), bot=BOT_A)
    await h.wait_for(lambda: len(h.teams.messages(conv)) == 1, what="the answer")
    await h.wait_idle()  # a /reset would stop a turn still finishing (journal not yet final)
    h.neo.fail_next("reset", 400, code="validation_error", message="nope")
    await h.deliver(h.activity(BOT_A, "/NEW", conversation_id=conv), bot=BOT_A)
    await h.wait_for(lambda: len(h.teams.messages(conv)) == 2, what="the reset notice")
    notice = h.teams.messages(conv)[-1]["text"]
    failed = next(r for r in h.neo.responses if r.path.endswith("/reset"))
    assert "couldn't archive" in notice
    assert failed.request_id
    assert failed.request_id in notice
    assert await h.components.store.get_session(BotId(BOT_A.app_id), ConversationId(conv)) is None
    await h.deliver(h.activity(BOT_A, "again", conversation_id=conv), bot=BOT_A)
    await h.wait_for(lambda: len(h.teams.messages(conv)) == 3, what="the next answer")
    assert _session_creates(h) == 2


async def test_help_in_a_group_chat_after_the_mention(harness: Harness) -> None:
    h = harness
    conv = "19:group-help@thread.v2"
    act = h.activity(BOT_A, "/HELP", conversation_id=conv, conversation_type="groupChat")
    assert act["text"].startswith("<at>")  # "@Contoso Bot /HELP": the mention comes first
    await h.deliver(act, bot=BOT_A)
    await h.wait_for(lambda: len(h.teams.messages(conv)) == 1, what="the help text")
    text = h.teams.messages(conv)[0]["text"]
    assert "/reset" in text
    assert "/smart" in text
    assert "/help" in text
    assert "start your message with @" in text  # only @mentions reach the bot here
    assert h.neo.posted_messages == []
    assert _session_creates(h) == 0


def test_greeting_and_help_mention_the_bot_only_outside_personal_chats() -> None:
    def turn(kind: ConversationType) -> Turn:
        ref = ConversationRef(
            BotId("b"), "https://s", ConversationId("c"), kind, None, bot_name="Neo Demo"
        )
        return Turn(TurnId("t"), ref, ActivityId("a"), User("u"), "")

    personal, group, channel = (
        turn(ConversationType.PERSONAL),
        turn(ConversationType.GROUP_CHAT),
        turn(ConversationType.CHANNEL),
    )
    assert for_scope(DEFAULT_GREETING, personal) == DEFAULT_GREETING
    assert "@mention me (Neo Demo)" in for_scope(DEFAULT_GREETING, group)
    assert "any time" not in for_scope(DEFAULT_GREETING, group)
    assert for_scope(HELP_TEXT, channel).endswith(
        "In this channel, start your message with @Neo Demo so that I see it."
    )


async def test_smart_sends_the_question_with_the_smart_tier(harness: Harness) -> None:
    h = harness
    h.neo.script = answer_script
    conv = "a:conv-smart"
    await h.deliver(
        h.activity(BOT_A, "/smart why is the VPN slow?", conversation_id=conv), bot=BOT_A
    )
    await h.deliver(h.activity(BOT_A, "/weather in Paris", conversation_id=conv), bot=BOT_A)
    await h.wait_for(lambda: len(h.teams.messages(conv)) == 2, what="two answers")
    posted = [(m["message"], m["model_tier"]) for m in h.neo.posted_messages]
    # An unknown /word is just text for the agent, with the default tier.
    assert posted == [("why is the VPN slow?", "SMART"), ("/weather in Paris", "FAST")]


async def test_reset_on_another_replica_escapes_a_hung_turn(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Two relays on one Redis: the hung turn runs on one, /reset reaches the other."""
    url = redis_server.url(prefix=redis_server.new_prefix())
    h = await make_harness(tmp_path, bots=[BOT_A], RELAY_DATABASE_URL=url, lease_seconds=2.0)
    assert h.settings.database_url == url
    other = web.AppRunner(create_app(h.settings), access_log=None)
    await other.setup()
    site = web.TCPSite(other, "127.0.0.1", 0)
    await site.start()
    other_url = f"http://127.0.0.1:{other.addresses[0][1]}"
    try:
        h.neo.script = answer_script
        h.neo.first_chunk_delay = 3600.0  # Neo accepted the turn and never answers
        conv = "a:conv-hung-replicas"
        await h.deliver(h.activity(BOT_A, "hello?", conversation_id=conv), bot=BOT_A)
        await h.wait_for(lambda: bool(h.neo.posted_messages), what="the hung turn posted")
        [old_session] = list(h.neo.sessions)
        started = time.monotonic()
        first_url, h.relay_url = h.relay_url, other_url  # the reset goes to the other replica
        await h.deliver(h.activity(BOT_A, "/reset", conversation_id=conv), bot=BOT_A)
        h.relay_url = first_url
        # The hung turn would hold the conversation for an hour; the reset escapes it once the
        # 2 s lease lapses. 10 s, not 5: on a loaded 2-core CI machine the escape took up to ~6 s.
        await h.wait_for(
            lambda: RESET_DONE in h.teams.visible_text(conv), timeout=10.0, what="the confirmation"
        )
        assert time.monotonic() - started < 10.0
        assert h.neo.sessions[old_session].archived_at is not None
        turns = await h.components.store.conversation_turns(
            BotId(BOT_A.app_id), ConversationId(conv)
        )
        assert [t.state for t in turns] == [TurnState.CANCELLED, TurnState.DELIVERED]
        assert sum(t == RESET_DONE for t in h.teams.visible_text(conv)) == 1
    finally:
        await other.cleanup()
        await close_harness(h)
