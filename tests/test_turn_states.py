"""The turn journal's state machine: every legal step passes, every other step is refused.

Also checks, end to end, that each step is durable *before* the side effect that relies on it: when
Neo receives the message post the journal already holds the session, and when the SSE tail opens
the journal already holds ``posted`` / ``streaming`` with the ``since_cursor`` (DESIGN.md
invariant 5).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from relay.domain import (
    ActivityId,
    BotId,
    ConversationId,
    ConversationRef,
    ConversationType,
    Turn,
    TurnId,
    TurnState,
    User,
)
from relay.journal import TRANSITIONS, IllegalTransition, check_transition
from tests.fakes.harness import BOT_A, Harness

S = TurnState
HAPPY_PATH = [S.RECEIVED, S.SESSION_READY, S.POSTED, S.STREAMING, S.DELIVERED]


def _turn(state: TurnState, command: str | None = None) -> Turn:
    ref = ConversationRef(
        BotId("b"), "https://smba.trafficmanager.net/x/", ConversationId("c"),
        ConversationType.PERSONAL, None,
    )  # fmt: skip
    return Turn(TurnId("t"), ref, ActivityId("a"), User("29:u"), "hi", state=state, command=command)


def test_the_happy_path_is_legal_step_by_step() -> None:
    for old, new in itertools.pairwise(HAPPY_PATH):
        check_transition(_turn(old), new)


@pytest.mark.parametrize("old", [s for s in S if not s.is_final])
def test_any_unfinished_state_may_fail_or_be_cancelled_or_stay(old: TurnState) -> None:
    for new in (S.FAILED, S.CANCELLED, old):
        check_transition(_turn(old), new)


@pytest.mark.parametrize(("old", "new"), list(itertools.product(list(S), list(S))))
def test_every_pair_outside_the_table_is_refused(old: TurnState, new: TurnState) -> None:
    legal = new in TRANSITIONS[old] or (old == new and not old.is_final)
    if old is S.RECEIVED and new is S.DELIVERED:
        legal = False  # only a command turn may be delivered without a Neo turn
    if legal:
        check_transition(_turn(old), new)
    else:
        with pytest.raises(IllegalTransition):
            check_transition(_turn(old), new)


def test_final_states_are_never_left_and_never_rewritten() -> None:
    for old in (S.DELIVERED, S.FAILED, S.CANCELLED):
        assert TRANSITIONS[old] == frozenset()
        for new in S:
            with pytest.raises(IllegalTransition):
                check_transition(_turn(old), new)


def test_skipping_a_step_is_refused() -> None:
    with pytest.raises(IllegalTransition):
        check_transition(_turn(S.SESSION_READY), S.STREAMING)  # tailing a turn never posted
    with pytest.raises(IllegalTransition):
        check_transition(_turn(S.POSTED), S.SESSION_READY)  # posting it again
    with pytest.raises(IllegalTransition):
        check_transition(_turn(S.RECEIVED), S.DELIVERED)  # an answer without a Neo turn
    check_transition(_turn(S.RECEIVED, command="help"), S.DELIVERED)  # ...unless a command


async def test_each_step_is_journaled_before_the_next_relies_on_it(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    neo = harness.components.neo
    store = harness.components.store
    seen: dict[str, Any] = {}
    real_post, real_tail = neo.post_message, neo.tail

    async def post_message(session_id: Any, **kw: Any) -> Any:
        [turn] = await store.unfinished_turns()
        seen["at_post"] = (turn.state, turn.session_id == session_id)
        return await real_post(session_id, **kw)

    def tail(session_id: Any, *, since: Any, on_event_id: Any, scope: Any = None) -> Any:
        seen["tail_since"] = since

        async def gen() -> Any:
            [turn] = await store.unfinished_turns()
            seen["at_tail"] = (turn.state, turn.since_cursor)
            chunks = real_tail(session_id, since=since, on_event_id=on_event_id, scope=scope)
            async for chunk in chunks:
                yield chunk

        return gen()

    monkeypatch.setattr(neo, "post_message", post_message)
    monkeypatch.setattr(neo, "tail", tail)
    act = harness.activity(BOT_A, "journal me")
    assert (await harness.deliver(act, bot=BOT_A)).status == 200
    await harness.wait_for(lambda: len(harness.teams.messages()) == 1, what="the answer")
    await harness.wait_idle()
    assert seen["at_post"] == (S.SESSION_READY, True)
    assert seen["at_tail"] == (S.STREAMING, seen["tail_since"])
    assert seen["tail_since"] is not None  # the 202's since_cursor, journaled before tailing
    [done] = await store.conversation_turns(BOT_A.app_id, act["conversation"]["id"])  # type: ignore[arg-type]
    assert done.state is S.DELIVERED
    assert done.attempts == 1
    assert done.last_event_id is not None
