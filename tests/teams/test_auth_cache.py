"""The validated-token cache never lets through what full validation would refuse.

Real botbuilder validation against :class:`relay.devtools.issuer.LocalIssuer` on 127.0.0.1; the
only instrument is a counter around botbuilder's ``authenticate_request`` (the real call still
runs), which tells a cache hit from a full check.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from relay.config import Settings
from relay.devtools.issuer import LocalIssuer
from relay.errors import AuthError
from relay.teams.auth import InboundAuthenticator, MultiBotCredentialsFactory
from relay.teams.auth_cache import ValidatedToken, ValidatedTokens
from tests.teams.conftest import AUTH_BOT_A, AUTH_BOT_B, AUTH_SERVICE_URL, auth_activity

pytestmark = pytest.mark.timeout(30)


class _Counted:
    """Counts the full validations an authenticator performs (botbuilder's real call runs)."""

    def __init__(self, authenticator: InboundAuthenticator) -> None:
        self.calls = 0
        bfa = authenticator.bot_framework_authentication
        real = bfa.authenticate_request

        async def counted(activity: Any, header: Any) -> Any:
            self.calls += 1
            return await real(activity, header)

        bfa.authenticate_request = counted


@pytest.fixture
async def own_issuer() -> AsyncIterator[LocalIssuer]:
    with LocalIssuer() as issuer:  # these tests rotate keys
        yield issuer


@pytest.fixture
async def authenticator(
    own_issuer: LocalIssuer, auth_make_settings: Callable[..., Settings]
) -> AsyncIterator[InboundAuthenticator]:
    settings = auth_make_settings(own_issuer)
    authenticator = InboundAuthenticator(settings, MultiBotCredentialsFactory(settings))
    await authenticator.start()
    yield authenticator
    await authenticator.stop()


async def test_a_repeated_token_skips_full_validation_and_gives_the_same_result(
    authenticator: InboundAuthenticator, own_issuer: LocalIssuer
) -> None:
    counted = _Counted(authenticator)
    header = f"Bearer {own_issuer.sign(AUTH_BOT_A, AUTH_SERVICE_URL)}"
    first = await authenticator.authenticate(header, auth_activity())
    second = await authenticator.authenticate(header, auth_activity())
    assert counted.calls == 1
    assert second == first
    assert second.request_result is first.request_result
    assert authenticator.validated.hits == 1


async def test_a_refused_request_is_not_remembered(
    authenticator: InboundAuthenticator, own_issuer: LocalIssuer
) -> None:
    counted = _Counted(authenticator)
    header = f"Bearer {own_issuer.sign(AUTH_BOT_A, 'https://evil.example/')}"
    for _ in range(2):
        with pytest.raises(AuthError, match="serviceurl"):
            await authenticator.authenticate(header, auth_activity())
    assert counted.calls == 2
    assert len(authenticator.validated) == 0


async def test_an_accepted_token_is_still_refused_for_a_different_audience_or_activity(
    authenticator: InboundAuthenticator, own_issuer: LocalIssuer
) -> None:
    header = f"Bearer {own_issuer.sign(AUTH_BOT_A, AUTH_SERVICE_URL)}"
    await authenticator.authenticate(header, auth_activity())
    with pytest.raises(AuthError, match="recipient"):  # bot A's token, addressed to bot B
        await authenticator.authenticate(header, auth_activity(AUTH_BOT_B))
    with pytest.raises(AuthError, match="serviceurl"):
        await authenticator.authenticate(header, auth_activity(service_url="https://evil.example/"))
    with pytest.raises(AuthError):
        await authenticator.authenticate(header, auth_activity(service_url=None))
    with pytest.raises(AuthError, match="channelId"):
        await authenticator.authenticate(header, auth_activity(channel_id=None))
    with pytest.raises(AuthError, match="endorsed"):  # the key is endorsed for msteams only
        await authenticator.authenticate(header, auth_activity(channel_id="webchat"))
    assert (await authenticator.authenticate(header, auth_activity())).bot_id == AUTH_BOT_A


async def test_an_accepted_token_is_refused_once_its_bot_is_unregistered(
    authenticator: InboundAuthenticator, own_issuer: LocalIssuer
) -> None:
    header = f"Bearer {own_issuer.sign(AUTH_BOT_A, AUTH_SERVICE_URL)}"
    await authenticator.authenticate(header, auth_activity())
    tokens = authenticator._factory.tokens
    tokens.registry.replace([b for b in tokens.registry.bots if b.app_id != AUTH_BOT_A])
    with pytest.raises(AuthError, match="registered"):
        await authenticator.authenticate(header, auth_activity())


async def test_a_tampered_token_is_refused_after_the_original_was_accepted(
    authenticator: InboundAuthenticator, own_issuer: LocalIssuer
) -> None:
    token = own_issuer.sign(AUTH_BOT_A, AUTH_SERVICE_URL)
    await authenticator.authenticate(f"Bearer {token}", auth_activity())
    head, payload, signature = token.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    for tampered in (f"{head}.{payload}.{flipped}", f"{head}.{payload}x.{signature}"):
        with pytest.raises(AuthError):
            await authenticator.authenticate(f"Bearer {tampered}", auth_activity())


async def test_a_rotated_signing_key_voids_tokens_it_signed(
    authenticator: InboundAuthenticator, own_issuer: LocalIssuer
) -> None:
    old_kid = own_issuer.default_kid
    header = f"Bearer {own_issuer.sign(AUTH_BOT_A, AUTH_SERVICE_URL)}"
    await authenticator.authenticate(header, auth_activity())
    own_issuer.add_key("next-key")
    own_issuer.remove_key(old_kid)
    assert await authenticator.metadata.refresh(bounded=False)  # the scheduled refresh
    with pytest.raises(AuthError, match="unknown signing key"):
        await authenticator.authenticate(header, auth_activity())
    fresh = own_issuer.sign(AUTH_BOT_A, AUTH_SERVICE_URL, kid="next-key")
    assert (await authenticator.authenticate(f"Bearer {fresh}", auth_activity())).bot_id


async def test_an_entry_is_not_served_at_or_after_the_tokens_expiry(
    authenticator: InboundAuthenticator, own_issuer: LocalIssuer
) -> None:
    counted = _Counted(authenticator)
    token = own_issuer.sign(AUTH_BOT_A, AUTH_SERVICE_URL, expires_in=120)
    result = await authenticator.authenticate(f"Bearer {token}", auth_activity())
    exp = float(result.claims["exp"])
    authenticator.validated.clock = lambda: exp  # the cache's clock reaches the token's exp
    await authenticator.authenticate(f"Bearer {token}", auth_activity())  # botbuilder: leeway
    assert counted.calls == 2  # not served from the cache: botbuilder decided again


async def test_an_expired_token_is_refused_even_next_to_cached_ones(
    authenticator: InboundAuthenticator, own_issuer: LocalIssuer
) -> None:
    await authenticator.authenticate(
        f"Bearer {own_issuer.sign(AUTH_BOT_A, AUTH_SERVICE_URL)}", auth_activity()
    )
    with pytest.raises(AuthError, match="expired"):
        await authenticator.authenticate(
            f"Bearer {own_issuer.expired_token(AUTH_BOT_A, AUTH_SERVICE_URL)}", auth_activity()
        )


def _entry(expires_at: float, generation: object = 1) -> ValidatedToken:
    return ValidatedToken(
        claims={"aud": AUTH_BOT_A},
        caller_id=None,
        channel_id="msteams",
        service_url=AUTH_SERVICE_URL,
        expires_at=expires_at,
        key_generation=generation,
    )


def test_the_cache_is_a_bounded_lru_that_forgets_expired_and_rekeyed_entries() -> None:
    now = [1000.0]
    cache = ValidatedTokens(max_entries=2, clock=lambda: now[0])
    look = {"channel_id": "msteams", "service_url": AUTH_SERVICE_URL, "key_generation": 1}
    cache.put("t1", _entry(2000.0))
    cache.put("t2", _entry(2000.0))
    assert cache.get("t1", **look) is not None  # t1 is now the most recent
    cache.put("t3", _entry(2000.0))
    assert cache.get("t2", **look) is None  # the least recently used went
    assert cache.get("t1", **look) is not None
    assert cache.get("t1", **{**look, "key_generation": 2}) is None  # keys refreshed
    assert cache.get("t1", **look) is None  # and the entry is gone for good
    now[0] = 2000.0
    assert cache.get("t3", **look) is None  # at exp
    cache.put("t4", _entry(1999.0))  # already expired when put: not stored
    assert len(cache) == 0
