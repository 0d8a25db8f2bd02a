"""Chooses how a turn's answer appears in Teams, and the non-streamed presentation itself.

Teams streams bot messages only in 1:1 chats (reference teams-platform.md §0.1, §1.1): personal
conversations get :class:`relay.teams.stream.TeamsStream`; group chats and channels get
:class:`FinalMessageSink` — a typing indicator refreshed while the agent works, then one rendered
message (split if too large) carrying the AI label, citations and feedback buttons (§6.4) — or,
with ``RELAY_GROUP_EDIT_IN_PLACE``, :class:`relay.teams.edit_in_place.EditInPlaceSink`. The stream
falls back to the typing + final message behaviour when Teams refuses streaming. Final messages
are *creates* which the Bot Connector cannot de-duplicate: each piece is journaled as sent right
after Teams accepts it and an ambiguous failure is never blindly re-sent
(``relay.teams.delivery``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from relay.config import Settings
from relay.domain import ConversationType, Reply, Turn
from relay.store.base import Store
from relay.teams.connector import BotConnector
from relay.teams.delivery import TYPING_REFRESH_SECONDS, TypingKeeper, send_pieces
from relay.teams.edit_in_place import EditInPlaceSink
from relay.teams.render import MESSAGE_LIMIT_BYTES, MessagePayload, final_message_payload
from relay.teams.segment_store import segment_store
from relay.teams.stream import StreamTiming, TeamsStream
from relay.turns import ReplySink


@dataclass(frozen=True, slots=True)
class SinkOptions:
    """Presentation knobs shared by every turn (from :class:`relay.config.Settings`)."""

    stream: StreamTiming = field(default_factory=StreamTiming)
    group_edit_in_place: bool = False  # RELAY_GROUP_EDIT_IN_PLACE (relay.teams.edit_in_place)

    @property
    def typing_refresh(self) -> float:
        return self.stream.typing_refresh

    @property
    def message_limit_bytes(self) -> int:
        return self.stream.message_limit_bytes

    @property
    def edit_interval(self) -> float:
        """Between edits of a group message: 2 s at the default 1.5 s stream interval (§1.5)."""
        return self.stream.interval * 4 / 3

    @classmethod
    def from_settings(cls, settings: Settings) -> SinkOptions:
        return cls(
            stream=StreamTiming(
                interval=settings.stream_interval,
                max_seconds=settings.stream_max_seconds,
                typing_refresh=TYPING_REFRESH_SECONDS,
                message_limit_bytes=settings.message_limit_bytes,
            ),
            group_edit_in_place=settings.group_edit_in_place,
        )


class TeamsSinks:
    """The :class:`relay.turns.SinkFactory` for Teams conversations."""

    def __init__(
        self, connector: BotConnector, store: Store, options: SinkOptions | None = None
    ) -> None:
        self._connector = connector
        self._store = store
        self._options = options or SinkOptions()

    def open(self, turn: Turn, *, segment: int = 0, streamed: bool = True) -> ReplySink:
        # A continuation after an approval card (segment > 0) is a new message or stream with a
        # delivery record of its own (relay.teams.segment_store).
        store = segment_store(self._store, segment)
        if streamed and turn.ref.conversation_type is ConversationType.PERSONAL:
            return TeamsStream(turn, self._connector, store, self._options.stream)
        if streamed and self._options.group_edit_in_place:
            return EditInPlaceSink(
                turn,
                self._connector,
                store,
                interval=self._options.edit_interval,
                typing_refresh=self._options.typing_refresh,
                message_limit_bytes=self._options.message_limit_bytes,
            )
        return FinalMessageSink(
            turn,
            self._connector,
            store,
            typing_refresh=self._options.typing_refresh,
            message_limit_bytes=self._options.message_limit_bytes,
        )


class FinalMessageSink:
    """Typing indicator while the agent works, then one rendered message (split if too large)."""

    def __init__(
        self,
        turn: Turn,
        connector: BotConnector,
        store: Store,
        *,
        typing_refresh: float = TYPING_REFRESH_SECONDS,
        message_limit_bytes: int = MESSAGE_LIMIT_BYTES,
    ) -> None:
        self._turn = turn
        self._connector = connector
        self._store = store
        self._limit = message_limit_bytes
        self._typing = TypingKeeper(turn, connector, typing_refresh)

    async def start(self, *, show_progress: bool) -> None:
        self._typing.start()

    async def update(self, reply: Reply) -> None:
        return None

    async def finish(self, reply: Reply) -> None:
        await self._typing.stop()
        payloads = final_message_payload(
            reply, limit_bytes=self._limit, reference=self._turn.chat_turn_id
        )
        await self.send_payloads(payloads)

    async def fail(self, message: str) -> None:
        await self._typing.stop()
        delivery = await self._store.get_delivery(self._turn.turn_id)
        await send_pieces(
            self._turn,
            self._connector,
            self._store,
            [MessagePayload(text=message)],
            delivery,
            key="notices_sent",
        )

    async def close(self, *, interrupted: bool = False) -> None:
        await self._typing.stop()

    async def send_payloads(self, payloads: list[MessagePayload]) -> None:
        """Send each piece once, journaling progress so a restart never repeats a piece."""
        delivery = await self._store.get_delivery(self._turn.turn_id)
        delivery.setdefault("mode", "messages")
        await send_pieces(self._turn, self._connector, self._store, payloads, delivery)
