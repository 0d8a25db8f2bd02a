"""What the webhook does with each kind of authenticated Teams activity, in milliseconds.

``relay.app`` authenticates a request and checks its ``serviceUrl``; this module decides the rest
(teams-platform.md §3). A ``message`` becomes a journaled turn — or a command turn (``/reset``,
``/help``, ``/smart``: ``relay.commands``) — and an approval-card click becomes a background
decision (``relay.approvals``). ``installationUpdate`` add, and ``conversationUpdate`` that adds the
bot itself, become an install-greeting turn. Invokes are answered in the HTTP response: the
feedback ``message/submitAction`` with 200 and an *empty* body (a body makes Teams answer 400,
§6.4; botbuilder's ``InvokeResponse`` cannot even write one, §3 "Pitfall"), ``adaptiveCard/action``
with a short message response, and every other invoke with 200 ``{}``. Edits, deletes, reactions,
read receipts, typing and unknown types get a plain 200 and nothing else: the relay answers one
message once, and an edit of an answered question would be a second turn nobody asked for.
Nothing here waits for Neo; slower work runs as tasks that shutdown waits for.

``/reset`` and ``/new`` are journaled in order like any command, but they must not wait behind a
hung turn: as soon as one is journaled, the pipeline cancels this conversation's running turn (and
those queued before the reset, ``TurnPipeline.abort``), so the reset runs next and confirms within
seconds. When no turn of the conversation runs in this process but another replica may be running
one, Neo's reset is also called at once, which cancels the in-flight Neo turn wherever it is tailed
(neo-chat-api.md §a.4 [RESET]); the queued reset command repeats it (idempotent: 200 again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, Protocol

from aiohttp import web

from relay.allowlist import HostAllowlist
from relay.approvals import ApprovalClick, ApprovalHandler, DecisionNeo
from relay.attachments import AttachmentStep, UploadNeo
from relay.commands import INSTALL, RESET, CommandNeo, CommandRunner, apply_command
from relay.config import Settings
from relay.domain import ActivityId, BotId, Turn, make_turn_id
from relay.feedback import FeedbackEvent, FeedbackRecorder
from relay.store.base import Store
from relay.teams.cards import parse_click
from relay.teams.citations import feedback_comment
from relay.teams.connector import BotConnector, TokenSource
from relay.teams.files import TeamsFileFetcher
from relay.teams.inbound import Ignored, conversation_ref, to_turn, user_of
from relay.teams.inbound_model import InboundActivity
from relay.teams.messenger import TeamsMessenger
from relay.turns import TurnPipeline

log = logging.getLogger(__name__)

INVOKE_CLAIM_TTL = 86400.0  # Teams re-delivers an invoke for seconds to minutes; a day is ample
_EXECUTE_REPLY = "application/vnd.microsoft.activity.message"


class FeatureNeo(CommandNeo, UploadNeo, DecisionNeo, Protocol):
    """Everything the conversation features need from Neo (``relay.neo.adapter.NeoAdapter``)."""


def _ok() -> web.Response:
    return web.Response(status=200)  # no body at all: what feedback invokes require (§6.4)


def _adds_this_bot(activity: InboundActivity) -> bool:
    rid = getattr(activity.recipient, "id", None)
    return any(getattr(m, "id", None) == rid for m in activity.members_added or [])


class InboundDispatcher:
    """Routes one authenticated activity; returns the HTTP response Teams gets."""

    def __init__(
        self,
        store: Store,
        submit: Callable[[Turn], bool],
        approvals: ApprovalHandler,
        feedback: FeedbackRecorder,
        preempt: Callable[[Turn], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self._store = store
        self._submit = submit
        self._approvals = approvals
        self._feedback = feedback
        self._preempt = preempt  # /reset: cancel what runs now (module docstring)
        self._tasks: set[asyncio.Task[None]] = set()

    async def dispatch(self, activity: InboundActivity, bot_id: BotId) -> web.Response:
        kind = activity.type
        if kind == "message":
            return await self._message(activity, bot_id)
        if kind == "invoke":
            return await self._invoke(activity, bot_id)
        if (kind == "installationUpdate" and activity.action == "add") or (
            kind == "conversationUpdate" and _adds_this_bot(activity)
        ):
            await self._install(activity, bot_id)
            return _ok()
        # messageUpdate / messageDelete / messageReaction / event / typing / anything new.
        log.debug("acknowledged %s activity for bot %s", kind, bot_id)
        return _ok()

    async def _message(self, activity: InboundActivity, bot_id: BotId) -> web.Response:
        clicked = parse_click(activity.value)
        if clicked is not None:
            self._click(activity, bot_id, clicked)
            return _ok()
        outcome = to_turn(activity, bot_id)
        if isinstance(outcome, Ignored):
            log.debug("ignored activity: %s", outcome.reason)
            return _ok()
        await self._journal(apply_command(outcome))
        return _ok()

    async def _journal(self, turn: Turn) -> None:
        if await self._store.add_turn(turn):
            if turn.command == RESET and self._preempt is not None:
                await self._preempt(turn)
            self._submit(turn)
        else:
            log.info("duplicate delivery of activity %s acknowledged", turn.activity_id)

    async def _install(self, activity: InboundActivity, bot_id: BotId) -> None:
        ref = replace(conversation_ref(activity, bot_id), reply_to_id=None)  # a new post
        activity_id = ActivityId(
            activity.id if isinstance(activity.id, str) and activity.id else ""
        )
        now = time.time()
        await self._journal(
            Turn(
                turn_id=make_turn_id(bot_id, ref.conversation_id, activity_id or ActivityId("-")),
                ref=ref,
                activity_id=activity_id,
                user=user_of(activity),
                text="",
                command=INSTALL,
                created_at=now,
                updated_at=now,
            )
        )

    def _click(
        self, activity: InboundActivity, bot_id: BotId, clicked: tuple[str, str, str | None]
    ) -> None:
        rid, action, summary = clicked
        click = ApprovalClick(
            ref=conversation_ref(activity, bot_id),
            click_id=str(activity.id or f"{activity.reply_to_id}:{rid}:{action}"),
            card_activity_id=activity.reply_to_id or None,
            til_request_id=rid,
            action="approve" if action == "approve" else "reject",
            user=user_of(activity),
            summary=summary,
        )
        self._spawn(self._approvals.handle(click), "approval")

    async def _invoke(self, activity: InboundActivity, bot_id: BotId) -> web.Response:
        name = activity.name
        if name == "message/submitAction":
            if await self._first(activity, bot_id):
                self._spawn(self._feedback.record(_feedback_event(activity, bot_id)), "feedback")
            return _ok()
        if name == "adaptiveCard/action":
            # Universal Actions (Action.Execute); our own cards use Action.Submit, but a card
            # built elsewhere may carry the same data. Answered here, not by botbuilder (§3).
            action = activity.value.get("action") if isinstance(activity.value, dict) else None
            clicked = parse_click(action.get("data") if isinstance(action, dict) else None)
            if clicked is not None:
                self._click(activity, bot_id, clicked)
            text = "Recording your decision…" if clicked else "This action isn't supported here."
            return web.json_response({"statusCode": 200, "type": _EXECUTE_REPLY, "value": text})
        log.info("acknowledged unsupported invoke %r for bot %s", name, bot_id)
        return web.json_response({})

    async def _first(self, activity: InboundActivity, bot_id: BotId) -> bool:
        """False for a re-delivery of an invoke already handled (same activity id)."""
        if not activity.id:
            return True
        key = f"invoke:{bot_id}:{activity.conversation.id}:{activity.id}"
        return await self._store.claim_once(key, INVOKE_CLAIM_TTL)

    def _spawn(self, coro: Coroutine[Any, Any, object], what: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except Exception:
                log.exception("background %s task failed", what)

        task = asyncio.create_task(guarded(), name=f"relay-{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for background work, then cancel what is left."""
        tasks = list(self._tasks)
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _feedback_event(activity: InboundActivity, bot_id: BotId) -> FeedbackEvent:
    value = activity.value if isinstance(activity.value, dict) else {}
    raw_value = value.get("actionValue")
    action_value: dict[str, Any] = raw_value if isinstance(raw_value, dict) else {}
    reaction = str(action_value.get("reaction") or "unknown")[:20]
    comment = feedback_comment(action_value)  # JSON feedbackText or plain text (§6.4)
    return FeedbackEvent(
        ref=conversation_ref(activity, bot_id),
        reply_to_id=activity.reply_to_id or None,
        reaction=reaction,
        comment_chars=len(comment),
        user_aad_id=getattr(activity.from_property, "aad_object_id", None),
    )


class Features:
    """The conversation features, wired once at start-up (``relay.app``)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        neo: FeatureNeo,
        connector: BotConnector,
        tokens: TokenSource | None,
    ) -> None:
        self.messenger = TeamsMessenger(connector)
        self.fetcher = TeamsFileFetcher(
            tokens=tokens,
            file_allowlist=HostAllowlist.parse(settings.file_download_allowlist),
            timeout=settings.attachment_timeout,
        )
        self.commands = CommandRunner(store, neo, self.messenger)
        self.files = AttachmentStep(
            self.fetcher, neo, self.messenger, max_bytes=settings.max_attachment_bytes
        )
        self._store = store
        self._approvals = ApprovalHandler(store, neo, self.messenger)
        self._feedback = FeedbackRecorder(store)
        self._pipeline: TurnPipeline | None = None
        self._single_process = bool(getattr(store, "single_process", False))
        self._background: set[asyncio.Task[None]] = set()

    def use_pipeline(self, pipeline: TurnPipeline) -> None:
        """Wire the parts that act on running turns: /reset and approval follow-ups."""
        self._pipeline = pipeline
        self._approvals.continuations = pipeline.followups

    def dispatcher(self, submit: Callable[[Turn], bool]) -> InboundDispatcher:
        return InboundDispatcher(
            self._store, submit, self._approvals, self._feedback, preempt=self._preempt
        )

    async def _preempt(self, turn: Turn) -> None:
        """A /reset was journaled: stop what runs before it, here or (through Neo) elsewhere."""
        pipeline = self._pipeline
        if pipeline is None:
            return
        if pipeline.abort(turn.bot_id, turn.conversation_id, turn.created_at):
            return
        if not self._single_process:
            task = asyncio.create_task(self.commands.interrupt(turn), name="relay-reset-now")
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        if self._pipeline is not None:
            await self._pipeline.followups.close()
        for task in list(self._background):
            task.cancel()
        await self.fetcher.close()
