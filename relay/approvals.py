"""Technician approvals (Neo "TIL" requests): a button click → Neo's decision API → updated card.

In chat, Neo shows a technician-in-the-loop approval as an inline card (neo-chat-api.md §a.5
[USING], [BUILD]); the relay renders it as an Adaptive Card with Approve / Reject
(``relay.teams.cards``) and, on a click, records the decision with
``POST /public-api/til-requests/{id}/decision`` as the platform caller, naming the clicking
technician by their Entra object id (``acting_end_user``) and display name [TILDEC]. The card is
then replaced by the outcome — decided, "already decided" (409), "not allowed" (403) or a failure
with Neo's request id — so everyone in the chat sees the same state. A click is not a turn: Neo's
turn may be waiting for this very decision, so it must not queue behind the conversation's turns;
it runs as a tracked background task instead (``relay.teams.dispatch``).

Only TIL requests that carry a ``til_request_id`` can be decided through Neo's API. A bare AI SDK
``tool-approval-request`` has no documented decision endpoint, so it is shown read-only.

A click is honoured only for a request this conversation was shown: the pipeline records every
card it shows as a conversation note (``relay.segments``), in the store, so any replica can check
it. Anything else — a forged or replayed ``til_request_id``, a card from another chat — gets a
short refusal and no Neo call, because the relay decides as the *platform* caller and Neo would
otherwise accept a decision on any request the clicker may approve. After a decision, the agent's
continuation is delivered by the turn still tailing or, if that turn already ended, by
``relay.followups``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol

from relay.domain import BotId, ConversationId, ConversationRef, User
from relay.errors import UpstreamError
from relay.retry import NEO, retry_call
from relay.segments import til_note
from relay.store.base import Store
from relay.turn_seams import failure_text

log = logging.getLogger(__name__)

Action = Literal["approve", "reject"]
CLICK_CLAIM_TTL = 86400.0  # Teams re-delivers a click for minutes at most; a day is ample
NOT_SHOWN_TEXT = (
    "I can't record that decision: this approval request wasn't shown in this conversation."
)


class Outcome(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"
    ALREADY_DECIDED = "already_decided"  # Neo 409
    NOT_ALLOWED = "not_allowed"  # Neo 403: this technician may not decide it
    FAILED = "failed"  # anything else; the buttons stay so someone can try again


@dataclass(frozen=True, slots=True)
class ApprovalClick:
    """A press of Approve / Reject on an approval card."""

    ref: ConversationRef
    click_id: str  # the Teams activity id of the click (re-deliveries repeat it)
    card_activity_id: str | None  # the card's own message id (the click's replyToId)
    til_request_id: str
    action: Action
    user: User
    summary: str | None = None


@dataclass(frozen=True, slots=True)
class DecisionView:
    """What the replaced card shows."""

    til_request_id: str
    summary: str | None
    outcome: Outcome
    actor: str | None
    note: str | None = None  # a sentence for the not-allowed / failed cases


class DecisionNeo(Protocol):
    async def til_decision(
        self,
        til_request_id: str,
        *,
        action: Action,
        acting_end_user: str | None,
        acting_end_user_name: str | None,
    ) -> None: ...


class CardUpdater(Protocol):
    """Replaces an approval card in place (``relay.teams.messenger.TeamsMessenger``)."""

    async def show_decision(
        self,
        ref: ConversationRef,
        card_activity_id: str | None,
        view: DecisionView,
        answer: str | None = None,
    ) -> None:
        """``answer``: the Markdown the card's message also carried, kept above the outcome."""

    async def say(self, ref: ConversationRef, text: str) -> str | None: ...


class Continuations(Protocol):
    """Told of every recorded decision (``relay.followups.FollowUps``)."""

    async def decided(
        self, bot_id: BotId, conversation_id: ConversationId, til_id: str, action: str
    ) -> None: ...


class ApprovalHandler:
    """Records a decision with Neo and shows the outcome on the card; never raises."""

    def __init__(
        self,
        store: Store,
        neo: DecisionNeo,
        cards: CardUpdater,
        continuations: Continuations | None = None,
    ) -> None:
        self._store = store
        self._neo = neo
        self._cards = cards
        self.continuations = continuations

    async def handle(self, click: ApprovalClick) -> DecisionView | None:
        key = f"click:{click.ref.bot_id}:{click.ref.conversation_id}:{click.click_id}"
        if not await self._store.claim_once(key, CLICK_CLAIM_TTL):
            return None  # a re-delivery of a click we already handled
        ref = click.ref
        note = await self._store.get_note(
            ref.bot_id, ref.conversation_id, til_note(click.til_request_id)
        )
        if not note or not note.get("shown"):
            log.warning(
                "refused a click for TIL %s never shown in conversation %s",
                click.til_request_id,
                ref.conversation_id,
            )
            try:
                await self._cards.say(ref, NOT_SHOWN_TEXT)
            except UpstreamError as exc:
                log.warning("could not send the refusal: %s", exc)
            return None
        view = await self._decide(click)
        log.info(
            "til request %s: %s by %s",
            click.til_request_id,
            view.outcome.value,
            click.user.aad_object_id,
        )
        try:
            answer = note.get("answer")
            await self._cards.show_decision(
                click.ref,
                click.card_activity_id,
                view,
                answer if isinstance(answer, str) else None,
            )
        except UpstreamError as exc:
            log.warning("could not update the approval card: %s", exc)
        if view.outcome in (Outcome.APPROVED, Outcome.REJECTED) and self.continuations:
            await self.continuations.decided(
                ref.bot_id, ref.conversation_id, click.til_request_id, click.action
            )
        return view

    async def _decide(self, click: ApprovalClick) -> DecisionView:
        actor = click.user.name or click.user.aad_object_id
        try:
            await retry_call(
                lambda: self._neo.til_decision(
                    click.til_request_id,
                    action=click.action,
                    acting_end_user=click.user.aad_object_id,
                    acting_end_user_name=click.user.name,
                ),
                NEO,  # not idempotent: only failures where nothing reached Neo are retried
                what="neo til_decision",
            )
        except UpstreamError as exc:
            failed, note = self._failure(exc)
            return DecisionView(click.til_request_id, click.summary, failed, actor, note)
        outcome = Outcome.APPROVED if click.action == "approve" else Outcome.REJECTED
        return DecisionView(click.til_request_id, click.summary, outcome, actor)

    @staticmethod
    def _failure(exc: UpstreamError) -> tuple[Outcome, str | None]:
        if exc.status == 409:
            return Outcome.ALREADY_DECIDED, None
        if exc.status == 403:
            return Outcome.NOT_ALLOWED, "You're not allowed to decide this request."
        return Outcome.FAILED, failure_text(exc, doing="record the decision")
