"""Chat commands (``/reset``, ``/new``, ``/help``, ``/smart``) and the install greeting, as turns.

Neo documents ``/reset`` and ``/new`` as the Teams way to archive a session and start fresh
(neo-chat-api.md §a.4 [RESET], §a.9 [SESS]). A command must keep its place in the conversation —
``/help`` sent after a question appears after its answer, a reset is never lost in a restart — so
commands are not executed on the webhook: they are parsed into a :class:`relay.domain.Turn` with
``command`` set, journaled and de-duplicated like any message, and the per-conversation worker
hands them to :class:`CommandRunner` instead of posting them to Neo. A reset must still never wait
behind a running (possibly hung) turn: once it is journaled, the turns before it are cancelled
(``relay.teams.dispatch``, ``TurnPipeline.abort``), so it runs next and confirms within seconds;
its Neo reset cancels the Neo turn too ([RESET]: "cancels any in-flight turn"). The install
greeting (an ``installationUpdate`` add, [CHINSTALL]) rides the same path, so it never blocks the
webhook and survives a restart. Parsing runs on text whose ``<at>Bot</at>`` mention
``relay.teams.inbound`` already removed. This module is core: it speaks only the project's types
and small protocols.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

from relay.domain import (
    BotId,
    ConversationRef,
    ConversationType,
    ModelTier,
    SessionId,
    TenantId,
    Turn,
    TurnState,
)
from relay.errors import RelayError, UpstreamError
from relay.retry import GREETING, NEO, retry_call
from relay.store.base import Store

log = logging.getLogger(__name__)

RESET = "reset"
HELP = "help"
INSTALL = "install"

# Teams sends installationUpdate(add) *and* conversationUpdate(membersAdded: the bot) for one
# install, with different activity ids, seconds apart; the journal only de-duplicates re-deliveries
# of one activity. One claim per (bot, conversation) for an hour covers both events and Teams'
# re-deliveries (even across a relay restart), while a deliberate remove-and-reinstall later on is
# greeted again.
INSTALL_CLAIM_TTL = 3600.0

HELP_TEXT = (
    "Here is what I understand:\n\n"
    "- **/reset** or **/new** — start a fresh conversation (the current one is archived)\n"
    "- **/smart** *question* — answer this one question with a stronger model\n"
    "- **/help** — this list\n\n"
    "Anything else goes to the agent as it is."
)
DEFAULT_GREETING = (
    "Hi! I'm your support assistant. Ask me a question here at any time — "
    "type **/help** to see what else I can do."
)
RESET_DONE = "Done — this is a fresh conversation. Earlier messages won't be used as context."
RESET_LOCAL_ONLY = (
    "I've started a fresh conversation, but Neo couldn't archive the previous one just now, "
    "so it may still appear in your history.{ref}"
)


def for_scope(text: str, turn: Turn) -> str:
    """The text as said in this conversation: outside 1:1 chats Teams gives the bot only the
    messages that @mention it (teams-platform.md §3), so the greeting and /help say so."""
    if turn.ref.conversation_type is ConversationType.PERSONAL:
        return text
    name = turn.ref.bot_name or "the bot"
    place = "channel" if turn.ref.conversation_type is ConversationType.CHANNEL else "chat"
    if text == DEFAULT_GREETING:
        return (
            f"Hi! I'm your support assistant. In this {place}, @mention me ({name}) with your "
            f"question, and I'll answer here. Type @{name} **/help** to see what else I can do."
        )
    return f"{text}\n\nIn this {place}, start your message with @{name} so that I see it."


@dataclass(frozen=True, slots=True)
class ParsedCommand:
    """What a message asks for: a command kind, or text (possibly with another model tier)."""

    command: str | None
    text: str
    model_tier: ModelTier = ModelTier.FAST


def parse_command(text: str) -> ParsedCommand:
    """Classify a message (mention already removed); case-insensitive; unknown ``/words`` are text.

    >>> parse_command("/RESET").command
    'reset'
    >>> parse_command("/smart why is the VPN slow?")
    ParsedCommand(command=None, text='why is the VPN slow?', model_tier=<ModelTier.SMART: 'SMART'>)
    """
    stripped = text.strip()
    parts = stripped.split(maxsplit=1)  # any whitespace, NBSP included (Teams inserts those)
    word = parts[0].lower() if parts else ""
    rest = parts[1] if len(parts) > 1 else ""
    if word in ("/reset", "/new") and not rest.strip():
        return ParsedCommand(RESET, stripped)
    if word == "/help" and not rest.strip():
        return ParsedCommand(HELP, stripped)
    if word == "/smart":
        question = rest.strip()
        if not question:
            return ParsedCommand(HELP, stripped)  # nothing to ask: show how to use it
        return ParsedCommand(None, question, ModelTier.SMART)
    return ParsedCommand(None, text)


def apply_command(turn: Turn) -> Turn:
    """Set ``command`` / ``text`` / ``model_tier`` of a freshly parsed message turn in place."""
    parsed = parse_command(turn.text)
    turn.command, turn.text, turn.model_tier = parsed.command, parsed.text, parsed.model_tier
    if turn.command is not None:
        turn.files = []  # a command's attachments have nowhere to go
    return turn


# ----------------------------------------------------------------------------------------------
# Seams
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Greeting:
    """Neo's answer to an install event: the channel's welcome message when ``matched``."""

    matched: bool
    welcome_message: str | None = None
    display_name: str | None = None


class CommandNeo(Protocol):
    """What commands need from Neo (implemented by ``relay.neo.adapter.NeoAdapter``)."""

    async def reset_session(self, session_id: SessionId) -> None: ...

    async def install_event(self, *, bot_id: BotId, tenant_id: TenantId) -> Greeting: ...


class Messenger(Protocol):
    """Posts a plain bot message into a conversation (``relay.teams.messenger.TeamsMessenger``)."""

    async def say(self, ref: ConversationRef, text: str) -> str | None:
        """Send ``text``; returns the new Teams activity id when Teams reported one."""


# ----------------------------------------------------------------------------------------------
# The runner
# ----------------------------------------------------------------------------------------------


class CommandRunner:
    """Runs a command turn to a final state; called by the pipeline in conversation order."""

    def __init__(
        self,
        store: Store,
        neo: CommandNeo,
        messenger: Messenger,
        *,
        install_claim_ttl: float = INSTALL_CLAIM_TTL,
    ) -> None:
        self._store = store
        self._neo = neo
        self._messenger = messenger
        self._install_claim_ttl = install_claim_ttl

    async def run(self, turn: Turn) -> None:
        if turn.state.is_final:
            return
        turn.attempts += 1
        try:
            if turn.command == RESET:
                text: str | None = await self._reset(turn)
            elif turn.command == INSTALL:
                await self._greet(turn)
                text = None
            else:
                text = HELP_TEXT
            if text:
                await self._messenger.say(turn.ref, for_scope(text, turn))
        except RelayError as exc:
            log.warning("command %s of turn %s failed: %s", turn.command, turn.turn_id, exc)
            await self._finish(turn, TurnState.FAILED, str(exc)[:500])
            return
        await self._finish(turn, TurnState.DELIVERED, None)

    async def _reset(self, turn: Turn) -> str:
        session = await self._store.get_session(turn.bot_id, turn.conversation_id)
        failure: UpstreamError | None = None
        if session is not None:
            try:
                await retry_call(
                    lambda: self._neo.reset_session(session.session_id),
                    NEO,
                    idempotent=True,  # documented as idempotent: a second reset is a 200 again
                    what="neo reset_session",
                )
            except UpstreamError as exc:
                if exc.status != 404:  # 404: already gone (or never ours), nothing to archive
                    failure = exc
                log.warning("neo reset of session %s failed: %s", session.session_id, exc)
        # Whatever Neo said, this conversation's next message starts a new session.
        await self._store.delete_session(turn.bot_id, turn.conversation_id)
        log.info(
            "conversation reset (bot %s, session %s, neo archived: %s)",
            turn.bot_id,
            session.session_id if session else None,
            failure is None,
        )
        if failure is None:
            return RESET_DONE
        ref = f" (reference: {failure.request_id})" if failure.request_id else ""
        return RESET_LOCAL_ONLY.format(ref=ref)

    async def interrupt(self, turn: Turn) -> None:
        """Archive the conversation's session at Neo *now*, cancelling its in-flight turn
        wherever it is tailed ([RESET]); the queued reset turn still runs, confirms and forgets
        the mapping. Never raises: the queued reset reports failures."""
        session = await self._store.get_session(turn.bot_id, turn.conversation_id)
        if session is None:
            return
        try:
            await self._neo.reset_session(session.session_id)
        except UpstreamError as exc:
            log.warning("immediate neo reset of %s failed: %s", session.session_id, exc)

    async def _greet(self, turn: Turn) -> None:
        """Claim the install, send the greeting, keep the claim as the "sent" mark.

        The claim keeps the install's two events (and re-deliveries) from greeting twice. A send
        that still fails after the bounded ``GREETING`` retries (each round itself retried by the
        Teams policy) gives the claim back, so the next install event greets instead of the
        greeting being lost for an hour; the turn ends FAILED with the reason.
        """
        key = f"install:{turn.bot_id}:{turn.conversation_id}"
        if not await self._store.claim_once(key, self._install_claim_ttl):
            log.info("install greeting for %s already sent", turn.conversation_id)
            return
        try:
            text = await self._greeting(turn)
            await retry_call(
                lambda: self._messenger.say(turn.ref, for_scope(text, turn)),
                GREETING,
                what="install greeting",
            )
        except RelayError:
            await self._store.release_claim(key)
            raise

    async def _greeting(self, turn: Turn) -> str:
        tenant = turn.ref.tenant_id
        if tenant is None:
            return DEFAULT_GREETING  # Neo needs the end client's tenant to find the branding
        try:
            greeting = await retry_call(
                lambda: self._neo.install_event(bot_id=turn.bot_id, tenant_id=tenant),
                NEO,
                idempotent=True,
                what="neo install_event",
            )
        except UpstreamError as exc:
            # A greeting is a courtesy: Neo being unavailable must not leave the install silent.
            log.warning("neo install event for bot %s failed: %s", turn.bot_id, exc)
            return DEFAULT_GREETING
        if greeting.matched and greeting.welcome_message and greeting.welcome_message.strip():
            return greeting.welcome_message
        return DEFAULT_GREETING

    async def _finish(self, turn: Turn, state: TurnState, error: str | None) -> None:
        turn.state, turn.error, turn.updated_at = state, error, time.time()
        await self._store.save_turn(turn)
