"""The Teams file fetcher: where the bot token may go, redirects, size caps, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from relay.allowlist import HostAllowlist
from relay.attachments import HOST_NOT_ALLOWED, TOO_LARGE, sniff_image
from relay.domain import BotId, ConversationId, ConversationRef, ConversationType, InboundFile
from relay.errors import PermanentError
from relay.teams.files import TeamsFileFetcher, token_may_go_to

BOT = BotId("11111111-2222-3333-4444-555555555555")


def _ref(service_url: str) -> ConversationRef:
    return ConversationRef(
        bot_id=BOT,
        service_url=service_url,
        conversation_id=ConversationId("a:1"),
        conversation_type=ConversationType.PERSONAL,
        tenant_id=None,
    )


class _Tokens:
    def __init__(self) -> None:
        self.asked = 0

    async def token(self, bot_id: BotId) -> str:
        self.asked += 1
        return "BOT-TOKEN"

    def invalidate(self, bot_id: BotId) -> None:
        return None


@pytest.mark.parametrize(
    ("url", "service_url", "allowed"),
    [
        (
            "https://smba.trafficmanager.net/amer/v3/attachments/x/views/original",
            "https://smba.trafficmanager.net/amer/",
            True,
        ),
        ("https://smba.trafficmanager.net/emea/v3/attachments/x", "https://elsewhere.test/", True),
        ("https://foo.botframework.com/v3/attachments/x", "https://smba.trafficmanager.net/", True),
        # Plain http to a Bot Framework name is not a Bot Framework host.
        ("http://smba.trafficmanager.net/amer/v3/attachments/x", "https://x.test/", False),
        (
            "https://us-api.asm.skype.com/v1/objects/x/views/imgo",
            "https://smba.trafficmanager.net/amer/",
            False,
        ),
        ("https://evil.test/trafficmanager.net/x", "https://smba.trafficmanager.net/", False),
        ("https://smba.trafficmanager.net.evil.test/x", "https://smba.trafficmanager.net/", False),
        ("https://user:pw@smba.trafficmanager.net/x", "https://smba.trafficmanager.net/", False),
        # Exact hosts: any Azure customer can register a Traffic Manager name.
        ("https://contoso.trafficmanager.net/x", "https://smba.trafficmanager.net/", False),
        ("https://smba.trafficmanager.net:443/emea/x", "https://elsewhere.test/", True),
        ("https://smba.trafficmanager.net:8443/emea/x", "https://elsewhere.test/", False),
        ("https://smba.infra.gov.teams.microsoft.us/gcch/x", "https://elsewhere.test/", True),
        ("https://teams.microsoft.us.evil.test/x", "https://elsewhere.test/", False),
        ("https://evil.teams.microsoft.com/x", "https://smba.trafficmanager.net/", False),
        # The serviceUrl's own origin, with its default port written out or not.
        ("https://smba.example.test:443/x", "https://smba.example.test/amer/", True),
        # The conversation's own serviceUrl origin (how the tests' emulator is reached)...
        ("http://127.0.0.1:4000/v3/attachments/x", "http://127.0.0.1:4000/", True),
        # ...and nothing else on that machine.
        ("http://127.0.0.1:4001/v3/attachments/x", "http://127.0.0.1:4000/", False),
        ("https://127.0.0.1:4000/v3/attachments/x", "http://127.0.0.1:4000/", False),
    ],
)
def test_where_the_bot_token_may_go(url: str, service_url: str, allowed: bool) -> None:
    assert token_may_go_to(url, _ref(service_url)) is allowed


def test_sniff_image_reads_magic_bytes() -> None:
    assert sniff_image(b"\x89PNG\r\n\x1a\nrest") == "image/png"
    assert sniff_image(b"\xff\xd8\xff\xe0JFIF") == "image/jpeg"
    assert sniff_image(b"GIF89a....") == "image/gif"
    assert sniff_image(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff_image(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None
    assert sniff_image(b"<svg xmlns=...") is None
    assert sniff_image(b"") is None


@pytest.fixture
async def hosts() -> AsyncIterator[tuple[str, str, list[tuple[str, str | None]]]]:
    """Two loopback servers: ``a`` (the serviceUrl origin) and ``b`` (somewhere else)."""
    seen: list[tuple[str, str | None]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append((f"{request.host}{request.path}", request.headers.get("Authorization")))
        name = request.match_info["name"]
        if name.startswith("to-"):
            raise web.HTTPFound(request.query["target"])
        return web.Response(body=b"x" * int(name), content_type="application/octet-stream")

    runners = []
    urls = []
    for _ in range(2):
        app = web.Application()
        app.router.add_get("/f/{name}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        urls.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
    yield urls[0], urls[1], seen
    for runner in runners:
        await runner.cleanup()


async def test_a_redirect_cannot_carry_the_token_elsewhere(
    hosts: tuple[str, str, list[tuple[str, str | None]]],
) -> None:
    a, b, seen = hosts
    tokens = _Tokens()
    fetcher = TeamsFileFetcher(
        tokens=tokens, file_allowlist=HostAllowlist.parse(["http://127.0.0.1"])
    )
    try:
        ref = _ref(f"{a}/")
        same = InboundFile(
            url=f"{a}/f/to-x?target={a}/f/10", content_type="image/*", needs_bot_token=True
        )
        assert await fetcher.fetch(ref, same, max_bytes=100) == b"x" * 10
        away = InboundFile(
            url=f"{a}/f/to-y?target={b}/f/10", content_type="image/*", needs_bot_token=True
        )
        with pytest.raises(PermanentError) as err:
            await fetcher.fetch(ref, away, max_bytes=100)
        assert err.value.code == HOST_NOT_ALLOWED
    finally:
        await fetcher.close()
    # Every request to a carried the token; b was never contacted.
    assert [auth for _, auth in seen] == ["Bearer BOT-TOKEN"] * 3
    assert all(host.startswith(a.removeprefix("http://") + "/") for host, _ in seen)


async def test_files_get_no_token_and_are_capped(
    hosts: tuple[str, str, list[tuple[str, str | None]]],
) -> None:
    a, _b, seen = hosts
    tokens = _Tokens()
    fetcher = TeamsFileFetcher(
        tokens=tokens, file_allowlist=HostAllowlist.parse(["http://127.0.0.1"])
    )
    try:
        ok = InboundFile(url=f"{a}/f/50", content_type="application/pdf")
        assert (
            await fetcher.fetch(_ref("https://smba.trafficmanager.net/"), ok, max_bytes=50)
            == b"x" * 50
        )
        big = InboundFile(url=f"{a}/f/51", content_type="application/pdf")
        with pytest.raises(PermanentError) as err:
            await fetcher.fetch(_ref("https://smba.trafficmanager.net/"), big, max_bytes=50)
        assert err.value.code == TOO_LARGE
        outside = InboundFile(
            url="https://contoso.sharepoint.com/x.pdf", content_type="application/pdf"
        )
        with pytest.raises(PermanentError) as err:
            await fetcher.fetch(_ref("https://smba.trafficmanager.net/"), outside, max_bytes=50)
        assert err.value.code == HOST_NOT_ALLOWED  # not on this (test) allow-list
    finally:
        await fetcher.close()
    assert tokens.asked == 0
    assert all(auth is None for _, auth in seen)
