"""A turn's Neo session and its post: sessions that heal, duplicates decided by fact.

Split out of ``relay.turns`` (the pipeline calls :class:`SessionSteps` for its session and post
steps). Three behaviours of Neo that the happy path ignores are handled here:

- **A session that is gone heals.** A session archived in the Neo dashboard, deleted, or no
  longer this caller's (an MSP reconnected the bot and its channel now points elsewhere) refuses
  ``POST …/messages``: 404 / 410 ("not found *or not yours*", neo-chat-api.md §a.3 [ERR]), 403, or
  a 409 whose code is not a duplicate (the emulator says ``session_archived``; Neo's code is
  undocumented). The mapping is dropped, a new session created (same ``bot_id``,
  ``inbound_tenant_id``, ``NEO_SUPPORT``), the turn posted there once, and the user told in one
  line. At most one re-creation per turn; a second refusal is a normal failure with Neo's
  ``request_id``. Before creating, the mapping is read again: a conversation another replica
  already healed keeps that replica's session, so healers end with one mapping.
- **Duplicates by fact, not by code.** Neo documents a 409 for a repeated ``client_message_id``
  but neither its code nor where the original id is (§b item 12). So a 409 on a post that follows
  an earlier attempt with the same id — in this run (a timed-out first POST) or a previous one
  (a claim in the store says so) — is a duplicate whatever its code, and the turn tails from its
  own journaled cursor, which is the session's last event id recorded *before* the first attempt.
- **``since_cursor`` may be null** ("on the first turn of a fresh session or under Redis failure",
  [AM]): the turn then starts after the last event id the relay saw on the session.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from relay.domain import SessionId, SessionRecord, Turn, UploadedFile, client_message_id
from relay.errors import AmbiguousError, PermanentError, UpstreamError
from relay.retry import NEO, retry_call
from relay.store.base import Store
from relay.turn_seams import NeoApi, Notices, Posted

log = logging.getLogger(__name__)

HEALED_NOTICE = "Your previous conversation was closed, so I started a new one."
# A post attempt is remembered this long: a turn resumed later than that is long past its deadline.
POST_CLAIM_TTL = 86400.0
_GONE_STATUSES = (403, 404, 409, 410)


def session_gone(exc: UpstreamError) -> bool:
    """Neo refused a post because the session is gone or no longer ours (module docstring)."""
    return exc.service == "neo" and exc.status in _GONE_STATUSES


class SessionSteps:
    """The session and post steps of one turn (called by ``relay.turns.TurnPipeline``)."""

    def __init__(self, store: Store, neo: NeoApi, notices: Notices | None = None) -> None:
        self._store = store
        self._neo = neo
        self._notices = notices

    async def ensure(
        self, turn: Turn, session: SessionRecord | None, deadline: float
    ) -> SessionRecord:
        """The conversation's session, created (and mapped) if there is none."""
        if session is None:
            session = await self._create(turn, deadline)
        turn.session_id = session.session_id
        return session

    async def _create(self, turn: Turn, deadline: float) -> SessionRecord:
        title = _title(turn)
        created = await retry_call(
            lambda: self._neo.create_session(
                bot_id=turn.bot_id, tenant_id=turn.ref.tenant_id, title=title
            ),
            NEO,
            deadline=deadline,
            what="neo create_session",
        )
        now = time.time()
        session = SessionRecord(
            bot_id=turn.bot_id,
            conversation_id=turn.conversation_id,
            session_id=created.session_id,
            show_progress=created.show_progress,
            created_at=now,
            updated_at=now,
        )
        await self._store.put_session(session)
        log.info("conversation %s: new neo session %s", turn.conversation_id, session.session_id)
        return session

    async def post(
        self,
        turn: Turn,
        session: SessionRecord | None,
        attachments: Sequence[UploadedFile],
        deadline: float,
    ) -> tuple[Posted, SessionRecord | None]:
        """Post the turn (healing a gone session once); sets ``since_cursor`` / ``chat_turn_id``.

        Returns Neo's answer and the session the turn was posted to (a new one after healing).
        """
        healed = False
        while True:
            assert turn.session_id is not None
            # Where a duplicate's tail starts: the session's last event id before any attempt.
            if turn.since_cursor is None and session is not None:
                turn.since_cursor = session.last_event_id
            try:
                posted = await self._post_once(turn, turn.session_id, attachments, deadline)
            except UpstreamError as exc:
                if healed or not session_gone(exc):
                    raise
                log.warning("neo refused session %s (%s); healing", turn.session_id, exc)
                session = await self._heal(turn, turn.session_id, deadline)
                healed = True
                continue
            if not posted.duplicate:
                turn.since_cursor = posted.since_cursor or turn.since_cursor
                turn.chat_turn_id = posted.chat_turn_id
            if healed:
                await self._tell_healed(turn)
            return posted, session

    async def _post_once(
        self,
        turn: Turn,
        session_id: SessionId,
        attachments: Sequence[UploadedFile],
        deadline: float,
    ) -> Posted:
        cmid = client_message_id(turn.turn_id)
        # Remembered before the first attempt, so a run resumed after a crash knows one was made.
        attempted = not await self._store.claim_once(
            f"post:{turn.turn_id}:{session_id}", POST_CLAIM_TTL
        )

        async def attempt() -> Posted:
            nonlocal attempted
            try:
                return await self._neo.post_message(
                    session_id,
                    text=turn.text,
                    client_message_id=cmid,
                    model_tier=turn.model_tier,
                    attachments=attachments,
                )
            except PermanentError as exc:
                if exc.status == 409 and attempted:
                    log.info("neo 409 %s after an earlier attempt: a duplicate", exc.code)
                    return Posted(None, None, False, duplicate=True, request_id=exc.request_id)
                raise
            except AmbiguousError:
                # It may have reached Neo (a read timeout, a 5xx): a later 409 is a duplicate.
                # A RetryableError (connect failure, 429, 503) was not processed.
                attempted = True
                raise

        # Retrying is safe: the same client_message_id gets a 409 from Neo, never a 2nd turn.
        return await retry_call(
            attempt, NEO, idempotent=True, deadline=deadline, what="neo post_message"
        )

    async def _heal(self, turn: Turn, refused: SessionId, deadline: float) -> SessionRecord:
        current = await self._store.get_session(turn.bot_id, turn.conversation_id)
        if current is not None and current.session_id != refused:
            session = current  # another replica (or a /reset) already replaced it: use that one
        else:
            await self._store.delete_session(turn.bot_id, turn.conversation_id)
            session = await self._create(turn, deadline)
        turn.session_id = session.session_id
        turn.since_cursor = session.last_event_id  # a fresh stream: from its beginning
        turn.updated_at = time.time()
        await self._store.save_turn(turn)
        return session

    async def _tell_healed(self, turn: Turn) -> None:
        if self._notices is None:
            return
        if not await self._store.claim_once(f"healed:{turn.turn_id}", POST_CLAIM_TTL):
            return  # a resumed run: the user was told already
        try:
            await self._notices.say(turn.ref, HEALED_NOTICE)
        except UpstreamError as exc:
            log.warning("could not tell the user the session was replaced: %s", exc)


def _title(turn: Turn) -> str:
    words = " ".join(turn.text.split())
    if not words:
        return "Teams conversation"
    return words if len(words) <= 80 else words[:77] + "…"
