"""The end-to-end harness: a real relay on loopback between the three network-edge emulators.

Every piece talks real HTTP on 127.0.0.1: the local token issuer (OpenID metadata, JWKS, and an
HTTPS Entra-like token endpoint that msal really calls), the Neo API emulator, and the Teams
connector emulator that checks each outbound bot token and Teams' streaming rules. The relay runs
in-process from ``create_app(settings)`` with a real SQLite file.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from relay.app import COMPONENTS, METRICS_URL, Components, create_app
from relay.config import Settings, load_settings
from relay.devtools.issuer import LocalIssuer
from relay.devtools.neo_emulator import NeoEmulator
from relay.devtools.neo_emulator_streams import TurnInput
from relay.devtools.teams_connector import TeamsConnectorEmulator

NEO_KEY = "neo_sk_test_AbCdEf0123456789AbCdEf01"


@dataclass(frozen=True)
class TestBot:
    app_id: str
    tenant_id: str
    secret: str
    name: str

    @property
    def recipient_id(self) -> str:
        return f"28:{self.app_id}"


BOT_A = TestBot(
    "11111111-2222-3333-4444-555555555555",
    "99999999-8888-7777-6666-555555555555",
    "secret-a-1234567890",
    "Contoso Bot",
)
BOT_B = TestBot(
    "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    "12121212-3434-5656-7878-909090909090",
    "secret-b-0987654321",
    "Fabrikam Helpdesk",
)

_ids = itertools.count(1)


def answer_script(turn: TurnInput) -> list[dict[str, object]]:
    """A short, deterministic agent answer: ``Answer to: <message>`` as AI SDK v6 chunks."""
    return [
        {"type": "start"},
        {"type": "text-start", "id": "t"},
        {"type": "text-delta", "id": "t", "delta": f"Answer to: {turn.message}"},
        {"type": "text-end", "id": "t"},
        {"type": "finish"},
    ]


STREAM_INTERVAL = 0.2  # the relay's RELAY_STREAM_INTERVAL in tests
STREAM_MIN_INTERVAL = 0.15  # what the Teams emulator enforces between requests of a stream


def write_bots_file(path: Path, bots: list[TestBot]) -> dict[str, str]:
    """A TOML registry whose secrets are referenced by env var; returns that environment."""
    env: dict[str, str] = {}
    lines: list[str] = []
    for i, bot in enumerate(bots):
        var = f"TEST_BOT_SECRET_{i}"
        env[var] = bot.secret
        lines += [
            "[[bots]]",
            f'app_id = "{bot.app_id}"',
            'app_type = "SingleTenant"',
            f'tenant_id = "{bot.tenant_id}"',
            f'name = "{bot.name}"',
            f'secret_env = "{var}"',
            "",
        ]
    path.write_text("\n".join(lines))
    return env


@dataclass
class Harness:
    tmp: Path
    issuer: LocalIssuer
    neo: NeoEmulator
    teams: TeamsConnectorEmulator
    settings: Settings
    relay_url: str = ""
    _runner: web.AppRunner | None = None
    http: aiohttp.ClientSession | None = None
    bots: list[TestBot] = field(default_factory=list)

    @property
    def app(self) -> web.Application:
        assert self._runner is not None
        return self._runner.app

    @property
    def components(self) -> Components:
        assert self._runner is not None
        return self._runner.app[COMPONENTS]

    @property
    def metrics_url(self) -> str:
        """Where this relay's private metrics listener answers ``GET /metrics``."""
        assert self._runner is not None
        return self._runner.app[METRICS_URL]

    @property
    def service_url(self) -> str:
        return self.teams.base_url

    async def start_relay(self) -> None:
        app = create_app(self.settings)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.relay_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        if self.http is None:
            self.http = aiohttp.ClientSession()

    async def stop_relay(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def activity(
        self,
        bot: TestBot,
        text: str,
        *,
        conversation_id: str | None = None,
        conversation_type: str = "personal",
        activity_id: str | None = None,
        mention: bool | None = None,
        user: str = "29:user-1",
        **extra: Any,
    ) -> dict[str, Any]:
        n = next(_ids)
        conversation_id = conversation_id or f"a:conv-{uuid.uuid4().hex[:12]}"
        mention = conversation_type != "personal" if mention is None else mention
        body: dict[str, Any] = {
            "type": "message",
            "id": activity_id or f"{int(time.time() * 1000)}{n}",
            "timestamp": "2026-11-22T10:00:00.000Z",
            "serviceUrl": self.service_url,
            "channelId": "msteams",
            "from": {
                "id": user,
                "name": "Avery Example",
                "aadObjectId": "00000000-0000-0000-0000-0000000000a1",
            },
            "conversation": {
                "id": conversation_id,
                "conversationType": conversation_type,
                "tenantId": bot.tenant_id,
                **({"isGroup": True} if conversation_type != "personal" else {}),
            },
            "recipient": {"id": bot.recipient_id, "name": bot.name},
            "text": f"<at>{bot.name}</at> {text}" if mention else text,
            "textFormat": "plain",
            "channelData": {"tenant": {"id": bot.tenant_id}},
            "entities": [],
        }
        if mention:
            body["entities"].append(
                {
                    "type": "mention",
                    "mentioned": {"id": bot.recipient_id, "name": bot.name},
                    "text": f"<at>{bot.name}</at>",
                }
            )
        body.update(extra)
        return body

    def event(
        self,
        activity_type: str,
        *,
        conversation_id: str,
        conversation_type: str = "personal",
        activity_id: str | None = None,
        bot: TestBot = BOT_A,
        **fields: Any,
    ) -> dict[str, Any]:
        """A non-message activity (invoke, installationUpdate, …) with no text, as Teams sends."""
        act = self.activity(
            bot,
            "",
            conversation_id=conversation_id,
            conversation_type=conversation_type,
            mention=False,
            activity_id=activity_id,
        )
        del act["text"], act["textFormat"]
        act.update(type=activity_type, **fields)
        return act

    async def deliver(
        self,
        activity: dict[str, Any],
        *,
        bot: TestBot | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        assert self.http is not None
        hdrs = {"Content-Type": "application/json"}
        if token is None and bot is not None:
            token = self.issuer.sign(bot.app_id, activity.get("serviceUrl", self.service_url))
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        hdrs.update(headers or {})
        async with self.http.post(
            f"{self.relay_url}/api/messages", json=activity, headers=hdrs
        ) as resp:
            await resp.read()
            return resp

    async def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
    ) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)

    async def wait_idle(self, timeout: float = 10.0) -> None:
        await self.wait_for(
            lambda: self.components.worker.active == 0, timeout, "the worker to go idle"
        )


async def make_harness(
    tmp: Path, *, bots: list[TestBot] | None = None, **settings_overrides: Any
) -> Harness:
    bots = bots if bots is not None else [BOT_A, BOT_B]
    issuer = LocalIssuer().start()
    for bot in bots:
        issuer.register_client(bot.app_id, bot.secret, bot.tenant_id)
    neo = NeoEmulator(NEO_KEY)
    neo_url = await neo.start()
    # Streams paced at 0.2 s against an emulator that insists on 0.15 s keep tests fast while
    # still proving the pacing (production: RELAY_STREAM_INTERVAL 1.5 s vs Teams' 1 req/s).
    teams = TeamsConnectorEmulator(
        verify_token=issuer.verify_bot_token, min_stream_interval=STREAM_MIN_INTERVAL
    )
    await teams.start()
    env = write_bots_file(tmp / "bots.toml", bots)
    env.update(
        {
            "NEO_API_KEY": NEO_KEY,
            "NEO_API_BASE_URL": neo_url,
            "RELAY_BOTS_FILE": str(tmp / "bots.toml"),
            "RELAY_DATABASE_URL": f"sqlite:///{tmp / 'relay.db'}",
            "RELAY_SERVICE_URL_ALLOWLIST": "http://127.0.0.1",
            "RELAY_FILE_DOWNLOAD_ALLOWLIST": "http://127.0.0.1",  # tests/fakes/files.py serves
            "RELAY_OPENID_METADATA_URL": issuer.openid_metadata_url,
            "RELAY_TOKEN_ISSUER": issuer.issuer,
            "RELAY_LOGIN_URL": issuer.login_url,
            "RELAY_LOGIN_CA_FILE": issuer.ca_file,
        }
    )
    if "database_url" in settings_overrides:  # the env key would win over the field name
        env["RELAY_DATABASE_URL"] = settings_overrides.pop("database_url")
    settings_overrides.setdefault("stream_interval", STREAM_INTERVAL)
    settings_overrides.setdefault("metrics_port", 0)  # a free port: relays run side by side
    # The registry's secrets live in `env`, not os.environ, so the reloader (which reads
    # os.environ) must not poll here; tests/test_registry.py turns it on with secret_file bots.
    settings_overrides.setdefault("bots_reload_interval", 0)
    settings = load_settings(env, **settings_overrides)
    h = Harness(tmp=tmp, issuer=issuer, neo=neo, teams=teams, settings=settings, bots=bots)
    await h.start_relay()
    return h


async def close_harness(h: Harness) -> None:
    await h.stop_relay()
    if h.http is not None:
        await h.http.close()
    await h.teams.stop()
    await h.neo.stop()
    h.issuer.stop()
