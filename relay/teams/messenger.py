"""Plain bot messages and approval-card updates outside a turn's answer.

Commands, attachment notices, the install greeting and approval outcomes are not part of an
agent's reply, so they do not go through a reply sink (no typing indicator, no AI label, no
feedback buttons). They still go through :class:`relay.teams.connector.BotConnector` — the
serviceUrl allow-list, the bot's own token, Teams' pacing — and the one retry policy: a message
*create* that failed ambiguously is not repeated (it may already be visible), while a card update
by id is idempotent and may be (relay.retry).
"""

from __future__ import annotations

import logging

from relay.approvals import DecisionView
from relay.domain import ConversationRef
from relay.errors import AmbiguousError
from relay.retry import TEAMS, retry_call
from relay.teams.activities import message_activity
from relay.teams.cards import decision_card
from relay.teams.connector import BotConnector
from relay.teams.markdown import close_open_fence, to_teams_markdown
from relay.teams.render import split_for_teams

log = logging.getLogger(__name__)


class TeamsMessenger:
    """``relay.commands.Messenger`` and ``relay.approvals.CardUpdater`` for Teams."""

    def __init__(self, connector: BotConnector) -> None:
        self._connector = connector

    async def say(self, ref: ConversationRef, text: str) -> str | None:
        activity = message_activity(ref, text)
        try:
            result = await retry_call(
                lambda: self._connector.send(ref, activity), TEAMS, what="teams send"
            )
        except AmbiguousError:
            log.warning("a notice to %s may not have been delivered", ref.conversation_id)
            return None
        return result.activity_id

    async def show_decision(
        self,
        ref: ConversationRef,
        card_activity_id: str | None,
        view: DecisionView,
        answer: str | None = None,
    ) -> None:
        card = decision_card(view)
        activity = message_activity(ref, _kept_text(answer), attachments=[card])
        if card_activity_id is None:
            # No id to update (should not happen for a card click): post the outcome instead.
            await retry_call(lambda: self._connector.send(ref, activity), TEAMS, what="teams send")
            return
        await retry_call(
            lambda: self._connector.update(ref, card_activity_id, activity),
            TEAMS,
            idempotent=True,
            what="teams update card",
        )


def _kept_text(answer: str | None) -> str:
    """The answer text of the message that carried the card (its last piece, as rendered).

    One bubble per answer puts the approval card on the answer's last message
    (``relay.teams.render.final_message_payload``), and an update replaces a whole message, so the
    outcome card must carry that text again or the answer vanishes on a click. Tables, citations
    and the AI label of the original are not rebuilt: the text is what the reader needs.
    """
    if not answer or not answer.strip():
        return ""
    text = close_open_fence(to_teams_markdown(answer).text)
    pieces = split_for_teams(text)
    return pieces[-1] if pieces else text.strip()
