"""``relay chat``: a terminal client that plays the Teams channel against a running ``relay demo``.

It does what Teams does for one user: posts message activities to the relay's ``/api/messages``
(signed with the demo's local issuer key, like Bot Framework's channel tokens — teams-platform.md
§4.1 — or unsigned in anonymous mode), and serves the Bot Connector endpoints the relay answers on,
using the same :class:`~relay.devtools.teams_connector.TeamsConnectorEmulator` the tests use, so
every reply is checked against Teams' streaming rules and every outbound bot token is verified.
Pasted images are offered like Teams offers them: an ``image/*`` attachment whose ``contentUrl`` is
on that connector (``/v3/attachments/<id>/views/original``), which wants the bot's token (§5).

:class:`ChatClient` is the library (``send(text) -> Answer`` waits for the final message and
returns what was shown); :func:`repl` is the thin interactive loop on top of it.
"""

from __future__ import annotations

import asyncio
import itertools
import mimetypes
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import jwt

from relay.devtools.demo import DemoInfo
from relay.devtools.teams_connector import Received, TeamsConnectorEmulator

BOT_FRAMEWORK_AUDIENCE = "https://api.botframework.com"
DEFAULT_TIMEOUT = 150.0  # Teams caps a stream at 2 minutes (§1.1); a little more for the final
_MENTION_PREFIXES = ("@bot",)


class ChatError(Exception):
    """The relay refused a message (its status and reason are in the text)."""


class NoAnswer(TimeoutError):
    """No final message arrived in time."""


@dataclass(slots=True)
class Citation:
    position: int
    name: str
    url: str | None


@dataclass
class Answer:
    """What the user saw for one message, in arrival order."""

    informative: list[str] = field(default_factory=list)  # progress (blue bar) texts
    snapshots: list[str] = field(default_factory=list)  # cumulative streamed texts
    typing: int = 0  # plain typing indicators
    text: str = ""  # the final message
    citations: list[Citation] = field(default_factory=list)
    activities: list[dict[str, Any]] = field(default_factory=list)

    @property
    def streamed(self) -> bool:
        return bool(self.snapshots)


def citations_of(activity: dict[str, Any]) -> list[Citation]:
    """The ``Claim`` citations of a message's root ``schema.org/Message`` entity (§6.4)."""
    out: list[Citation] = []
    for entity in activity.get("entities") or []:
        if not isinstance(entity, dict) or entity.get("type") != "https://schema.org/Message":
            continue
        for claim in entity.get("citation") or []:
            appearance = claim.get("appearance") or {}
            position, name = int(claim.get("position", 0)), str(appearance.get("name", ""))
            out.append(Citation(position, name, appearance.get("url")))
    return out


def stream_info(activity: dict[str, Any]) -> dict[str, Any] | None:
    return next(
        (
            e
            for e in activity.get("entities") or []
            if isinstance(e, dict) and e.get("type") == "streaminfo"
        ),
        None,
    )


class View(Protocol):
    """Where a :class:`ChatClient` reports an answer while it arrives."""

    def begin(self) -> None: ...
    def informative(self, text: str) -> None: ...
    def typing(self) -> None: ...
    def stream(self, new_text: str) -> None: ...
    def final(self, answer: Answer, new_text: str) -> None: ...


class ChatClient:
    """One user chatting with the demo bot in one conversation (1:1, or a group chat).

    Usage::

        async with ChatClient(DemoInfo.load(Path(".relay-demo"))) as chat:
            answer = await chat.send("hello")
            print(answer.text)
    """

    def __init__(self, info: DemoInfo, *, group: bool = False, view: View | None = None) -> None:
        self.info = info
        self.group = group
        self.view = view
        kind = "19:demo-group" if group else "a:demo-personal"
        self.conversation_id = f"{kind}-{uuid.uuid4().hex[:12]}" + ("@thread.v2" if group else "")
        self.connector = TeamsConnectorEmulator(
            verify_token=None if info.anonymous else self._verify_bot_token,
            on_activity=self._received,
        )
        self._queue: asyncio.Queue[Received] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ChatClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        await self.connector.start("127.0.0.1", 0)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        await self.connector.stop()

    @property
    def service_url(self) -> str:
        return self.connector.base_url

    # -- auth -------------------------------------------------------------------------------------

    def _verify_bot_token(self, token: str) -> str:
        """Accept only the demo bot's outbound token, as real Teams accepts only the bot's."""
        key = self.info.bot_token_key_pem or ""
        claims = jwt.decode(
            token,
            key,
            algorithms=["RS256"],
            audience=BOT_FRAMEWORK_AUDIENCE,
            options={"require": ["exp", "aud", "appid"]},
        )
        app_id = str(claims["appid"]).lower()
        if app_id != self.info.bot_id:
            raise jwt.InvalidTokenError("token for another bot")
        return app_id

    def _channel_token(self) -> str:
        """A channel → bot token like Bot Framework's (no ``ver`` claim: not a skill, §4.1)."""
        assert self.info.signing_key_pem is not None
        now = int(time.time())
        claims = {
            "iss": self.info.issuer,
            "aud": self.info.bot_id,
            "serviceurl": self.service_url,
            "nbf": now - 5,
            "iat": now - 5,
            "exp": now + 300,
        }
        key = self.info.signing_key_pem.get_secret_value()
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.info.signing_kid})

    # -- sending ------------------------------------------------------------------------------

    def addressed(self, text: str) -> tuple[str, bool]:
        """Group chats: a leading ``@bot`` (or ``@<bot name>``) mentions the bot; strip it."""
        stripped = text.lstrip()
        for prefix in (*_MENTION_PREFIXES, f"@{self.info.bot_name}"):
            if stripped.lower().startswith(prefix.lower()):
                return stripped[len(prefix) :].strip(), True
        return text.strip(), False

    def activity(self, text: str, *, image: Path | None = None) -> dict[str, Any]:
        """The message activity Teams would post for ``text`` (and a pasted image)."""
        body, mentioned = self.addressed(text) if self.group else (text.strip(), False)
        bot = {"id": f"28:{self.info.bot_id}", "name": self.info.bot_name}
        entities: list[dict[str, Any]] = []
        if mentioned:
            at = f"<at>{self.info.bot_name}</at>"
            body = f"{at} {body}"
            entities.append({"type": "mention", "mentioned": bot, "text": at})
        conversation: dict[str, Any] = {
            "id": self.conversation_id,
            "conversationType": "groupChat" if self.group else "personal",
            "tenantId": self.info.tenant_id,
        }
        if self.group:
            conversation["isGroup"] = True
        activity: dict[str, Any] = {
            "type": "message",
            "id": f"{int(time.time() * 1000)}{next(self._ids)}",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "serviceUrl": self.service_url,
            "channelId": "msteams",
            "from": {
                "id": "29:demo-user",
                "name": "Demo User",
                "aadObjectId": str(uuid.UUID(int=1)),
            },
            "conversation": conversation,
            "recipient": bot,
            "text": body,
            "textFormat": "plain",
            "channelData": {"tenant": {"id": self.info.tenant_id}},
            "entities": entities,
        }
        if image is not None:
            content_type = mimetypes.guess_type(image.name)[0] or "application/octet-stream"
            attachment_id = f"0-demo-{uuid.uuid4().hex[:16]}"
            self.connector.attachments[attachment_id] = (image.read_bytes(), content_type)
            url = self.connector.attachment_url(attachment_id)
            # What a pasted image looks like in a 1:1 chat: "image/*" and a connector URL (§5).
            activity["attachments"] = [{"contentType": "image/*", "contentUrl": url}]
        return activity

    async def post(self, text: str, *, image: Path | None = None) -> dict[str, Any]:
        """Deliver one message to the relay; returns the activity. Raises ChatError unless 200."""
        assert self._http is not None, "ChatClient.start() first"
        activity = self.activity(text, image=image)
        headers = {"Content-Type": "application/json"}
        if not self.info.anonymous:
            headers["Authorization"] = f"Bearer {self._channel_token()}"
        try:
            async with self._http.post(
                self.info.messages_url, json=activity, headers=headers
            ) as resp:
                body = await resp.text()
        except aiohttp.ClientError as exc:
            raise ChatError(f"cannot reach the relay at {self.info.relay_url}: {exc}") from None
        if resp.status != 200:
            raise ChatError(f"the relay answered {resp.status}: {body[:200]}")
        return activity

    async def send(
        self, text: str, *, image: Path | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> Answer:
        """Post ``text`` and wait for the answer's final message (NoAnswer after ``timeout``)."""
        while not self._queue.empty():  # late leftovers of an earlier answer are not this one's
            self._queue.get_nowait()
        if self.view is not None:
            self.view.begin()
        await self.post(text, image=image)
        return await self.wait_answer(timeout)

    # -- receiving ------------------------------------------------------------------------------

    def _received(self, rec: Received) -> None:
        # Only what Teams accepted is what a user sees; refused requests stay in connector.received.
        if (
            rec.conversation_id == self.conversation_id
            and rec.status < 300
            and rec.method == "POST"
        ):
            self._queue.put_nowait(rec)

    async def wait_answer(self, timeout: float = DEFAULT_TIMEOUT) -> Answer:
        answer, shown = Answer(), ""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            try:
                rec = await asyncio.wait_for(self._queue.get(), max(remaining, 0.0))
            except TimeoutError:
                raise NoAnswer(f"no answer within {timeout:g} s") from None
            activity = rec.activity
            answer.activities.append(activity)
            info, text = stream_info(activity), activity.get("text") or ""
            if activity.get("type") == "message":
                answer.text, answer.citations = text, citations_of(activity)
                if self.view is not None:
                    self.view.final(answer, text[len(shown) :] if text.startswith(shown) else text)
                return answer
            if activity.get("type") != "typing":
                continue
            if info is None:
                answer.typing += 1
                if self.view is not None:
                    self.view.typing()
            elif info.get("streamType") == "informative":
                answer.informative.append(text)
                if self.view is not None:
                    self.view.informative(text)
            else:  # cumulative text: show only what is new
                new = text[len(shown) :] if text.startswith(shown) else text
                answer.snapshots.append(text)
                shown = text
                if self.view is not None:
                    self.view.stream(new)
