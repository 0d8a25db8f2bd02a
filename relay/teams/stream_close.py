"""Every way a Teams stream ends, and the normal messages that follow it.

The final must start with everything streamed or Teams answers 403 (reference teams-platform.md
§1.1); it alone may carry the AI label, citations, feedback buttons and attachments (§1.1, §6.4).
So an answer whose first piece starts with the streamed text is that final; a long answer whose
first piece ends before the streamed words closes with exactly the streamed text and sends the
rest; an answer the agent rewrote closes with the streamed text and is then replaced in place.
A stream our time budget ends (:meth:`StreamClosing._close_early`), Teams ends, or a previous run
left open (:meth:`StreamClosing._load`) continues as normal messages from the text Teams
acknowledged (for a stream left open: the text journaled before its last update), so nothing
shows twice and nothing is lost (peers-and-pitfalls.md §5).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from relay.domain import Reply
from relay.errors import (
    AmbiguousError,
    PermanentError,
    RetryableError,
    StreamCancelled,
    StreamRejected,
    UpstreamError,
)
from relay.retry import TEAMS, retry_call
from relay.teams.activities import message_activity, open_entity, stream_info
from relay.teams.citations import ai_message_entity, build_citations
from relay.teams.delivery import send_pieces
from relay.teams.markdown import to_teams_markdown
from relay.teams.render import MessagePayload, final_message_payload
from relay.teams.stream_state import Phase, StreamState
from relay.teams.stream_text import remainder_payloads

log = logging.getLogger(__name__)

STILL_WORKING = "Still working on it — the rest of the answer follows in a new message."


class StreamClosing(StreamState):
    """Closing the stream and delivering what it did not show (see the module docstring)."""

    async def _load(self) -> None:
        """Restore the journaled delivery state, closing a stream a previous run left open."""
        if self._loaded:
            return
        self._loaded = True
        d = self._delivery = await self._store.get_delivery(self._turn.turn_id)
        if d.get("cancelled"):
            self.phase = Phase.CANCELLED
        elif d.get("mode") == "stream" and d.get("stream_id"):
            self.stream_id, self.sequence = str(d["stream_id"]), int(d.get("sequence", 0))
            self._shown_chars = int(d.get("shown_chars", 0))
            shown = d.get("shown_text")
            if (
                d.get("stream_closed")
                or not isinstance(shown, str)
                or len(shown) != self._shown_chars
            ):
                self.phase, self._shown = Phase.CLOSED, None  # closed (or its text unknown)
                return
            closing = d.get("closing")
            if isinstance(closing, dict) and isinstance(closing.get("text"), str):
                # A final was on the wire when that run died: the next request on the stream
                # tells whether it arrived (StreamState._broken).
                self._prior_closing = closing
            if shown:
                await self._close_abandoned(shown, d.get("last_request_at"))
            else:
                self._shown = ""  # only progress was shown: the answer can still be its final
        elif d.get("mode") == "messages":
            self.phase = Phase.FALLBACK

    # -- closing the stream ------------------------------------------------------------------------

    async def _close_abandoned(self, shown: str, last_request_at: object) -> None:
        """End the stream a previous run left open with the text of its last update (sent, or
        about to be: it extends what Teams shows, relay.teams.stream_state), plain (no AI
        label, citations or buttons: those belong to the answer that follows); the rest goes
        out as normal messages (module docstring)."""
        log.info("turn %s: closing stream %s left open", self._turn.turn_id, self.stream_id)
        interval = self._timing.interval
        wait = interval  # that run's last request may have been a moment ago (1 req/s, §1.1)
        if isinstance(last_request_at, int | float):
            wait = min(interval, max(0.0, float(last_request_at) + interval - time.time()))
        self._not_before = time.monotonic() + wait
        self._shown = shown
        await self._send_final(MessagePayload(shown), plan="remainder")

    async def _close_early(self) -> None:
        """The time budget is spent: close with what is safe to show; the rest follows later."""
        reply = self._reply
        text = self._shown or ""
        if reply is not None and not self._diverged:
            candidate = self._cutter.advance(reply.text)
            text = candidate if candidate and candidate.startswith(text) else text
        entities: list[dict[str, Any]] = []
        if text:
            cited_text, citations = build_citations(text, reply.sources if reply else [])
            entities = [ai_message_entity(citations if cited_text == text else [])]
        payload = MessagePayload(text or STILL_WORKING, entities)
        await self._send_final(payload, answer_chars=len(text), plan="remainder")

    async def _finalise(self, reply: Reply) -> None:
        payloads = final_message_payload(reply, **self._render_kw())
        first, rest = payloads[0], payloads[1:]
        shown = self._shown or ""
        if first.text.startswith(shown):
            if await self._send_final(first, plan="rest"):
                await self._send_follow_ups(rest)
                return
        elif not first.in_place and to_teams_markdown(reply.text).text.startswith(shown):
            # A long answer whose first piece ends before the streamed words (pieces end at
            # paragraphs): close with exactly the streamed text, the rest follows (§1.1).
            cited, citations = build_citations(shown, reply.sources)
            entity = ai_message_entity(citations if cited == shown else [])
            await self._send_final(MessagePayload(shown, [entity]), plan="remainder")
        # Teams 403s a final that does not start with the streamed text (§1.1): the agent
        # rewrote it, or the final shows tables where flattened rows were streamed. Close with
        # exactly the streamed text, then replace the message in place (teams.py does the same).
        # The plan is journaled with the final: a resumed run must not re-send what the replace
        # shows.
        elif await self._send_final(MessagePayload(shown, [ai_message_entity([])]), plan="rest"):
            await self._replace_in_place(first)
            await self._send_follow_ups(rest)
            return
        if self._cancel_error is not None:
            raise self._cancel_error
        await self._deliver_remainder(reply)

    async def _send_final(
        self, payload: MessagePayload, *, answer_chars: int | None = None, plan: str | None = None
    ) -> bool:
        """Close the stream with ``payload``; False when Teams refused (phase is then CLOSED).

        ``answer_chars``: how much of its text is answer text (the rest is a notice); ``plan``:
        how what it does not show follows (``rest`` / ``remainder``, module docstring of
        relay.teams.stream_state), journaled with it, and ahead of it as ``closing``."""
        assert self.stream_id is not None
        text = payload.text if answer_chars is None else payload.text[:answer_chars]
        self._closing = {"text": text, "plan": plan}
        parts: dict[str, Any] = {
            "entities": [
                stream_info(stream_type="final", stream_id=self.stream_id),
                *(open_entity(e) for e in payload.entities),
            ],
            "attachments": payload.attachments,
            "channel_data": payload.channel_data,
        }
        activity = message_activity(self._turn.ref, payload.text, **parts)
        await self._save()  # write-ahead (relay.teams.stream_state)
        ambiguous = False
        for _ in range(TEAMS.attempts):
            await asyncio.sleep(max(0.0, self._not_before - time.monotonic()))
            if self._interrupted:
                return False
            try:
                # Idempotent by stream id: a replay after success is refused "already completed".
                await self._post(activity, idempotent=True)
            except RetryableError as exc:
                wait = exc.retry_after if exc.retry_after is not None else TEAMS.base
                wait = min(wait, TEAMS.max_retry_after)  # never sooner than the pacing allows
                self._not_before = max(self._not_before, time.monotonic() + wait)
                continue
            except AmbiguousError:
                ambiguous = True
                continue
            except StreamCancelled as exc:
                await self._cancelled(exc)
                return False
            except StreamRejected as exc:
                if not (ambiguous and "already completed" in exc.message.lower()):
                    await self._broken(exc)
                    return False
            except UpstreamError as exc:
                await self._broken(exc)
                return False
            self._closed_by(self._closing)
            await self._save()
            return True
        await self._broken()
        return False

    async def _replace_in_place(self, payload: MessagePayload) -> None:
        assert self.stream_id is not None
        activity = message_activity(
            self._turn.ref,
            payload.text,
            entities=[open_entity(e) for e in payload.entities],
            attachments=payload.attachments,
            channel_data=payload.channel_data,
        )
        stream_id = self.stream_id
        try:
            # An update by id is idempotent, so transient and ambiguous failures are retried.
            await retry_call(
                lambda: self._connector.update(self._turn.ref, stream_id, activity),
                TEAMS,
                idempotent=True,
                what="teams update",
            )
        except AmbiguousError as exc:
            # It may have been applied: sending anew could show the answer twice.
            log.warning("turn %s: in-place update unconfirmed (%s)", self._turn.turn_id, exc)
        except PermanentError as exc:
            # Refused for good (e.g. the message is gone): the answer must still reach the user.
            log.warning(
                "turn %s: in-place update refused (%s); sending anew", self._turn.turn_id, exc
            )
            await self._connector.send(self._turn.ref, activity)

    # -- outside the stream ------------------------------------------------------------------------

    def _render_kw(self) -> dict[str, Any]:
        return {
            "limit_bytes": self._timing.message_limit_bytes,
            "reference": self._turn.chat_turn_id,
        }

    async def _send_follow_ups(self, payloads: list[MessagePayload]) -> None:
        await send_pieces(self._turn, self._connector, self._store, payloads, self._delivery)

    async def _deliver_remainder(self, reply: Reply) -> None:
        """What Teams has not shown yet, as normal messages (never repeating shown text)."""
        if self._delivery.get("plan") == "rest":  # restarted after a successful final
            await self._send_follow_ups(final_message_payload(reply, **self._render_kw())[1:])
            return
        self._delivery["plan"] = "remainder"
        limit = self._timing.message_limit_bytes
        reference = self._turn.chat_turn_id
        await self._send_follow_ups(
            remainder_payloads(reply, self._shown, self._shown_chars, limit, reference)
        )
