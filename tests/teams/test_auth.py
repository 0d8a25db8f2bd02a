"""Inbound JWT validation and outbound tokens, against botbuilder's and msal's real code paths.

Everything talks to :class:`relay.devtools.issuer.LocalIssuer` on 127.0.0.1: OpenID metadata and
JWKS over HTTP for botbuilder, an Entra-like token endpoint over HTTPS (own CA) for msal.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import jwt
import msal
import pytest
import requests
from botframework.connector.auth import MicrosoftAppCredentials
from pydantic import SecretStr

from relay.config import (
    PUBLIC_LOGIN_URL,
    PUBLIC_OPENID_METADATA_URL,
    PUBLIC_TOKEN_ISSUER,
    AppType,
    BotConfig,
    Settings,
)
from relay.devtools.issuer import LocalIssuer
from relay.domain import BotId, TenantId
from relay.errors import AuthError, CredentialError
from relay.retry import TOKEN
from relay.teams.auth import (
    AuthResult,
    BotCredentials,
    InboundAuthenticator,
    MultiBotCredentialsFactory,
    TokenProvider,
    bot_framework_config,
)
from tests.teams.conftest import (
    AUTH_BOT_A,
    AUTH_BOT_B,
    AUTH_SECRET_A,
    AUTH_SERVICE_URL,
    AUTH_TENANT_A,
    auth_activity,
)

pytestmark = pytest.mark.timeout(30)

EMULATOR_ISSUER = "https://sts.windows.net/d6d49420-f39b-4df7-a1dc-d59a935871db/"
UNREGISTERED = "0c0c0c0c-5555-4555-8555-cccccccccccc"


@pytest.fixture
async def auth_authenticator(
    auth_settings: Settings, auth_issuer: LocalIssuer
) -> AsyncIterator[InboundAuthenticator]:
    tokens = TokenProvider(auth_settings, verify=auth_issuer.ca_file)
    authenticator = InboundAuthenticator(
        auth_settings, MultiBotCredentialsFactory(auth_settings, tokens)
    )
    await authenticator.start()
    yield authenticator
    await authenticator.stop()


@pytest.fixture
def auth_fetch_threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Thread ids of every requests.get — ours and botbuilder's (it calls requests.get too)."""
    seen: list[int] = []
    real = requests.get

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(requests, "get", spy)
    return seen


# -- accepted -------------------------------------------------------------------------------------


@pytest.mark.parametrize("app_id", [AUTH_BOT_A, AUTH_BOT_B])
async def test_each_registered_bot_is_accepted(
    auth_authenticator: InboundAuthenticator, auth_issuer: LocalIssuer, app_id: str
) -> None:
    token = auth_issuer.sign(app_id, AUTH_SERVICE_URL)
    result = await auth_authenticator.authenticate(f"Bearer {token}", auth_activity(app_id))
    assert result.bot_id == app_id
    assert result.anonymous is False
    assert result.claims["aud"] == app_id
    assert result.claims["serviceurl"] == AUTH_SERVICE_URL
    assert result.caller_id == "urn:botframework:azure"
    assert result.request_result is not None  # reusable by CloudAdapter.process_activity


async def test_audience_case_is_normalised(
    auth_authenticator: InboundAuthenticator, auth_issuer: LocalIssuer
) -> None:
    token = auth_issuer.sign(AUTH_BOT_A.upper(), AUTH_SERVICE_URL)
    result = await auth_authenticator.authenticate(
        f"Bearer {token}", auth_activity(AUTH_BOT_A.upper())
    )
    assert result.bot_id == AUTH_BOT_A


async def test_activity_without_recipient_is_accepted(
    auth_authenticator: InboundAuthenticator, auth_issuer: LocalIssuer
) -> None:
    token = auth_issuer.sign(AUTH_BOT_B, AUTH_SERVICE_URL)
    result = await auth_authenticator.authenticate(f"Bearer {token}", auth_activity(None))
    assert result.bot_id == AUTH_BOT_B


# -- refused ---------------------------------------------------------------------------------------

Case = Callable[[LocalIssuer], tuple[str | None, Any]]
SU = AUTH_SERVICE_URL
A = AUTH_BOT_A

BAD: dict[str, Case] = {
    "missing header": lambda i: (None, auth_activity()),
    "empty header": lambda i: ("", auth_activity()),  # the parameterized-mode AttributeError
    "blank header": lambda i: ("   ", auth_activity()),
    "not Bearer": lambda i: (f"Basic {i.sign(A, SU)}", auth_activity()),
    "lower-case bearer": lambda i: (f"bearer {i.sign(A, SU)}", auth_activity()),
    "Bearer without token": lambda i: ("Bearer ", auth_activity()),
    "three parts": lambda i: (f"Bearer {i.sign(A, SU)} extra", auth_activity()),
    "garbage": lambda i: ("Bearer not.a.jwt", auth_activity()),
    "garbage base64": lambda i: ("Bearer eyJhbGciOi.eyJpc3Mi.c2ln", auth_activity()),
    "foreign key": lambda i: (f"Bearer {i.foreign_key_token(A, SU)}", auth_activity()),
    "unknown kid": lambda i: (f"Bearer {i.unknown_kid_token(A, SU)}", auth_activity()),
    "no kid": lambda i: (
        "Bearer " + jwt.encode({"iss": i.issuer, "aud": A}, i.foreign_key, algorithm="RS256"),
        auth_activity(),
    ),
    "expired": lambda i: (f"Bearer {i.expired_token(A, SU)}", auth_activity()),
    "wrong issuer": lambda i: (
        f"Bearer {i.sign(A, SU, issuer='https://evil.test')}",
        auth_activity(),
    ),
    "issuer prefix": lambda i: (f"Bearer {i.sign(A, SU, issuer=i.issuer[:-2])}", auth_activity()),
    "emulator issuer": lambda i: (
        f"Bearer {i.sign(A, SU, issuer=EMULATOR_ISSUER)}",
        auth_activity(),
    ),
    "skill token": lambda i: (
        f"Bearer {i.sign(A, SU, extra_claims={'ver': '1.0', 'appid': AUTH_BOT_B})}",
        auth_activity(),
    ),
    "audience not registered": lambda i: (
        f"Bearer {i.sign(UNREGISTERED, SU)}",
        auth_activity(UNREGISTERED),
    ),
    "serviceurl mismatch": lambda i: (
        f"Bearer {i.sign(A, 'https://evil.example/')}",
        auth_activity(),
    ),
    "activity without serviceUrl": lambda i: (
        f"Bearer {i.sign(A, SU)}",
        auth_activity(service_url=None),
    ),
    "activity without channelId": lambda i: (
        f"Bearer {i.unendorsed_token(A, SU)}",
        auth_activity(channel_id=None),
    ),
    "endorsement mismatch": lambda i: (f"Bearer {i.unendorsed_token(A, SU)}", auth_activity()),
    "token for A, recipient B": lambda i: (f"Bearer {i.sign(A, SU)}", auth_activity(AUTH_BOT_B)),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
async def test_bad_requests_raise_auth_error(
    auth_authenticator: InboundAuthenticator, auth_issuer: LocalIssuer, case: str
) -> None:
    header, activity = BAD[case](auth_issuer)
    with pytest.raises(AuthError) as info:
        await auth_authenticator.authenticate(header, activity)
    assert info.value.status == 401
    assert info.value.reason
    if header and len(header) > 40:  # the token itself never ends up in the reason
        assert header.split(" ")[1][:40] not in info.value.reason


async def test_reasons_are_specific(
    auth_authenticator: InboundAuthenticator, auth_issuer: LocalIssuer
) -> None:
    expected = {
        "expired": "expired",
        "foreign key": "signature",
        "unknown kid": "unknown signing key",
        "endorsement mismatch": "endorsed",
        "serviceurl mismatch": "serviceurl",
        "token for A, recipient B": "recipient",
        "audience not registered": "AppId",
        "wrong issuer": "issuer",
        "missing header": "missing",
    }
    for case, fragment in expected.items():
        header, activity = BAD[case](auth_issuer)
        with pytest.raises(AuthError, match=fragment):
            await auth_authenticator.authenticate(header, activity)


async def test_keeps_working_after_every_kind_of_failure(
    auth_authenticator: InboundAuthenticator, auth_issuer: LocalIssuer
) -> None:
    for case in BAD:
        header, activity = BAD[case](auth_issuer)
        with pytest.raises(AuthError):
            await auth_authenticator.authenticate(header, activity)
    token = auth_issuer.sign(AUTH_BOT_A, AUTH_SERVICE_URL)
    result = await auth_authenticator.authenticate(f"Bearer {token}", auth_activity())
    assert result.bot_id == AUTH_BOT_A


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("boom"),
        AttributeError("'NoneType' object has no attribute 'claims'"),
        KeyError("x"),
    ],
)
async def test_unexpected_botbuilder_errors_become_auth_errors(
    auth_authenticator: InboundAuthenticator,
    auth_issuer: LocalIssuer,
    monkeypatch: pytest.MonkeyPatch,
    exc: Exception,
) -> None:
    async def explode(*_: Any) -> Any:
        raise exc

    bfa = auth_authenticator.bot_framework_authentication
    monkeypatch.setattr(bfa, "authenticate_request", explode)
    token = auth_issuer.sign(AUTH_BOT_A, AUTH_SERVICE_URL)
    with pytest.raises(AuthError, match="validation failed"):
        await auth_authenticator.authenticate(f"Bearer {token}", auth_activity())


async def test_cancellation_is_not_swallowed(
    auth_authenticator: InboundAuthenticator,
    auth_issuer: LocalIssuer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def cancelled(*_: Any) -> Any:
        raise asyncio.CancelledError

    monkeypatch.setattr(
        auth_authenticator.bot_framework_authentication, "authenticate_request", cancelled
    )
    token = auth_issuer.sign(AUTH_BOT_A, AUTH_SERVICE_URL)
    with pytest.raises(asyncio.CancelledError):
        await auth_authenticator.authenticate(f"Bearer {token}", auth_activity())


# -- configuration mapping -------------------------------------------------------------------------


def test_public_settings_use_botbuilder_public_cloud(
    auth_make_settings: Callable[..., Settings],
) -> None:
    settings = auth_make_settings(None)
    assert settings.openid_metadata_url == PUBLIC_OPENID_METADATA_URL
    assert settings.token_issuer == PUBLIC_TOKEN_ISSUER
    assert settings.login_url == PUBLIC_LOGIN_URL
    config = bot_framework_config(settings)
    assert not hasattr(config, "TO_BOT_FROM_CHANNEL_TOKEN_ISSUER")
    authenticator = InboundAuthenticator(settings, MultiBotCredentialsFactory(settings))
    inner = authenticator.bot_framework_authentication._inner
    assert type(inner).__name__ == "_PublicCloudBotFrameworkAuthentication"


def test_custom_settings_set_every_parameterized_key(auth_settings: Settings) -> None:
    config = bot_framework_config(auth_settings)
    assert auth_settings.openid_metadata_url == config.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL
    assert auth_settings.token_issuer == config.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER
    assert auth_settings.login_url == config.TO_CHANNEL_FROM_BOT_LOGIN_URL
    assert config.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE == "https://api.botframework.com"
    assert config.OAUTH_URL == "https://api.botframework.com"
    assert config.TO_BOT_FROM_EMULATOR_OPENID_METADATA_URL.startswith(
        "https://login.microsoftonline.com/"
    )
    assert config.CALLER_ID == "urn:botframework:azure"
    authenticator = InboundAuthenticator(auth_settings, MultiBotCredentialsFactory(auth_settings))
    inner = authenticator.bot_framework_authentication._inner
    assert type(inner).__name__ == "_ParameterizedBotFrameworkAuthentication"


# -- the event loop never waits for metadata -------------------------------------------------------


async def test_start_fetches_metadata_in_a_thread_and_requests_stay_offline(
    auth_settings: Settings, auth_issuer: LocalIssuer, auth_fetch_threads: list[int]
) -> None:
    loop_thread = threading.get_ident()
    authenticator = InboundAuthenticator(auth_settings, MultiBotCredentialsFactory(auth_settings))
    before = auth_issuer.metadata_requests
    await authenticator.start()
    try:
        assert auth_issuer.metadata_requests == before + 2  # openid configuration + keys
        assert auth_fetch_threads
        assert loop_thread not in auth_fetch_threads
        fetched = len(auth_fetch_threads)
        for app_id in (AUTH_BOT_A, AUTH_BOT_B, AUTH_BOT_A):
            token = auth_issuer.sign(app_id, AUTH_SERVICE_URL)
            await authenticator.authenticate(f"Bearer {token}", auth_activity(app_id))
        assert auth_issuer.metadata_requests == before + 2
        assert len(auth_fetch_threads) == fetched
    finally:
        await authenticator.stop()


async def test_rotated_key_is_fetched_off_loop_and_unknown_kids_are_rate_limited(
    auth_make_settings: Callable[..., Settings], auth_fetch_threads: list[int]
) -> None:
    loop_thread = threading.get_ident()
    with LocalIssuer() as issuer:  # own issuer: this test mutates its keys
        settings = auth_make_settings(issuer)
        authenticator = InboundAuthenticator(settings, MultiBotCredentialsFactory(settings))
        await authenticator.start()
        try:
            rotated = issuer.add_key("rotated-key")
            token = issuer.sign(AUTH_BOT_A, AUTH_SERVICE_URL, kid=rotated)
            result = await authenticator.authenticate(f"Bearer {token}", auth_activity())
            assert result.bot_id == AUTH_BOT_A
            assert loop_thread not in auth_fetch_threads
            after_rotation = issuer.metadata_requests
            for _ in range(5):  # a flood of forged kids costs at most one fetch a minute
                with pytest.raises(AuthError, match="unknown signing key"):
                    await authenticator.authenticate(
                        f"Bearer {issuer.unknown_kid_token(AUTH_BOT_A, AUTH_SERVICE_URL)}",
                        auth_activity(),
                    )
            assert issuer.metadata_requests == after_rotation
        finally:
            await authenticator.stop()


async def test_stale_metadata_is_refreshed_in_a_thread(
    auth_authenticator: InboundAuthenticator,
    auth_issuer: LocalIssuer,
    auth_fetch_threads: list[int],
) -> None:
    loop_thread = threading.get_ident()
    metadata = auth_authenticator.metadata
    metadata.last_updated = datetime.now() - timedelta(days=2)
    metadata.min_interval = 0.0
    before = auth_issuer.metadata_requests
    token = auth_issuer.sign(AUTH_BOT_A, AUTH_SERVICE_URL)
    await auth_authenticator.authenticate(f"Bearer {token}", auth_activity())
    assert auth_issuer.metadata_requests == before + 2
    assert auth_fetch_threads
    assert loop_thread not in auth_fetch_threads
    metadata.min_interval = 60.0


async def test_background_refresh_runs_and_stops(
    auth_settings: Settings, auth_issuer: LocalIssuer
) -> None:
    authenticator = InboundAuthenticator(
        auth_settings, MultiBotCredentialsFactory(auth_settings), metadata_refresh_interval=0.05
    )
    await authenticator.start()
    fetches = authenticator.metadata.fetches
    await asyncio.sleep(0.3)
    await authenticator.stop()
    assert authenticator.metadata.fetches >= fetches + 2
    stopped = authenticator.metadata.fetches
    await asyncio.sleep(0.1)
    assert authenticator.metadata.fetches == stopped


async def test_start_survives_an_unreachable_metadata_endpoint(
    auth_make_settings: Callable[..., Settings],
) -> None:
    issuer = LocalIssuer().start()
    settings = auth_make_settings(issuer)
    issuer.stop()  # nothing listens any more
    authenticator = InboundAuthenticator(settings, MultiBotCredentialsFactory(settings))
    await authenticator.start()
    try:
        with pytest.raises(AuthError, match="unknown signing key"):
            await authenticator.authenticate(
                f"Bearer {issuer.sign(AUTH_BOT_A, AUTH_SERVICE_URL)}", auth_activity()
            )
    finally:
        await authenticator.stop()


# -- anonymous mode --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["parameterized", "public"])
async def test_anonymous_mode_accepts_everything_as_anonymous(
    auth_make_settings: Callable[..., Settings], auth_issuer: LocalIssuer, mode: str
) -> None:
    where = auth_issuer if mode == "parameterized" else None
    settings = auth_make_settings(where, bots=(), allow_anonymous=True)
    factory = MultiBotCredentialsFactory(settings)
    assert await factory.is_authentication_disabled() is True
    authenticator = InboundAuthenticator(settings, factory)
    await authenticator.start()
    try:
        for header in (None, "", "Bearer garbage", f"Bearer {auth_issuer.sign(AUTH_BOT_A, SU)}"):
            result = await authenticator.authenticate(header, auth_activity(None))
            assert result == AuthResult(bot_id=None, claims={}, anonymous=True)
    finally:
        await authenticator.stop()
    creds = await factory.create_credentials(None, "https://api.botframework.com", "", True)
    assert isinstance(creds, MicrosoftAppCredentials)
    session = creds.signed_session(requests.Session())
    assert "Authorization" not in session.headers


# -- credentials factory ---------------------------------------------------------------------------


async def test_factory_caches_credentials_per_app_id(auth_settings: Settings) -> None:
    factory = MultiBotCredentialsFactory(auth_settings)
    assert await factory.is_authentication_disabled() is False
    assert await factory.is_valid_app_id(AUTH_BOT_A.upper()) is True
    assert await factory.is_valid_app_id(UNREGISTERED) is False
    assert await factory.is_valid_app_id(None) is False  # type: ignore[arg-type]
    scope = "https://api.botframework.com"
    a1 = await factory.create_credentials(AUTH_BOT_A, scope, "https://login.example", True)
    a2 = await factory.create_credentials(AUTH_BOT_A.upper(), scope, "ignored", False)
    b = await factory.create_credentials(AUTH_BOT_B, scope, "https://login.example", True)
    assert a1 is a2
    assert a1 is not b
    assert isinstance(a1, BotCredentials)
    assert a1.microsoft_app_id == AUTH_BOT_A
    with pytest.raises(CredentialError):
        await factory.create_credentials(UNREGISTERED, scope, "", True)
    with pytest.raises(CredentialError):
        await factory.create_credentials(AUTH_BOT_A, "https://graph.microsoft.com", "", True)


async def test_bot_credentials_only_read_the_cache(
    auth_settings: Settings, auth_issuer: LocalIssuer
) -> None:
    tokens = TokenProvider(auth_settings, verify=auth_issuer.ca_file)
    factory = MultiBotCredentialsFactory(auth_settings, tokens)
    creds = await factory.create_credentials(AUTH_BOT_A, "https://api.botframework.com", "", True)
    before = auth_issuer.token_requests
    with pytest.raises(CredentialError, match="ensure"):
        creds.get_access_token()
    assert auth_issuer.token_requests == before  # no network from the synchronous path
    await tokens.ensure(BotId(AUTH_BOT_A))
    session = creds.signed_session(requests.Session())
    token = session.headers["Authorization"].removeprefix("Bearer ")
    assert auth_issuer.verify_bot_token(token) == AUTH_BOT_A
    assert creds.get_access_token(force_refresh=True) == token
    assert auth_issuer.token_requests == before + 1


# -- token provider (real msal against the HTTPS token endpoint) -----------------------------------


async def test_tokens_for_both_bots_and_cached(
    auth_settings: Settings, auth_issuer: LocalIssuer
) -> None:
    tokens = TokenProvider(auth_settings, verify=auth_issuer.ca_file)
    before = auth_issuer.token_requests
    a = await tokens.token(BotId(AUTH_BOT_A))
    b = await tokens.token(BotId(AUTH_BOT_B))
    assert auth_issuer.verify_bot_token(a) == AUTH_BOT_A
    assert auth_issuer.verify_bot_token(b) == AUTH_BOT_B
    assert await tokens.token(BotId(AUTH_BOT_A)) == a
    assert await tokens.token(BotId(AUTH_BOT_B)) == b
    assert auth_issuer.token_requests == before + 2
    assert tokens.cached_token(AUTH_BOT_A) == a
    tokens.close()


async def test_concurrent_callers_share_one_acquisition(
    auth_settings: Settings, auth_issuer: LocalIssuer
) -> None:
    tokens = TokenProvider(auth_settings, verify=auth_issuer.ca_file)
    before = auth_issuer.token_requests
    results = await asyncio.gather(*(tokens.token(BotId(AUTH_BOT_A)) for _ in range(20)))
    assert len(set(results)) == 1
    assert auth_issuer.token_requests == before + 1
    tokens.close()


async def test_invalidate_fetches_a_new_token_past_msal_cache(
    auth_settings: Settings, auth_issuer: LocalIssuer
) -> None:
    tokens = TokenProvider(auth_settings, verify=auth_issuer.ca_file)
    await tokens.token(BotId(AUTH_BOT_A))
    before = auth_issuer.token_requests
    tokens.invalidate(AUTH_BOT_A)
    assert tokens.cached_token(AUTH_BOT_A) is None
    await tokens.token(BotId(AUTH_BOT_A))
    assert auth_issuer.token_requests == before + 1
    tokens.close()


async def test_wrong_secret_is_a_credential_error_without_the_secret(
    auth_make_settings: Callable[..., Settings], auth_issuer: LocalIssuer
) -> None:
    wrong = "wrong-secret-Vv93~"
    bot = BotConfig(
        app_id=BotId(AUTH_BOT_A),
        tenant_id=TenantId(AUTH_TENANT_A),
        secret=SecretStr(wrong),
    )
    settings = auth_make_settings(auth_issuer, bots=(bot,))
    tokens = TokenProvider(settings, verify=auth_issuer.ca_file)
    with pytest.raises(CredentialError) as info:
        await tokens.token(BotId(AUTH_BOT_A))
    text = f"{info.value} {info.value!r} {info.value.args}"
    assert "AADSTS7000215" in text
    assert info.value.code == "invalid_client"
    assert wrong not in text
    assert AUTH_SECRET_A not in text
    assert info.value.__cause__ is None
    tokens.close()


async def test_token_endpoint_failure_then_recovery(
    auth_settings: Settings, auth_issuer: LocalIssuer
) -> None:
    tokens = TokenProvider(auth_settings, verify=auth_issuer.ca_file)
    # A 5xx is retried (relay.retry.TOKEN); only when every attempt fails does it surface.
    auth_issuer.fail_token_requests(TOKEN.attempts, status=500)
    with pytest.raises(CredentialError) as info:
        await tokens.token(BotId(AUTH_BOT_B))
    assert "500" in str(info.value)
    token = await tokens.token(BotId(AUTH_BOT_B))  # the next attempt goes through
    assert auth_issuer.verify_bot_token(token) == AUTH_BOT_B
    tokens.close()


async def test_untrusted_ca_is_a_credential_error(auth_settings: Settings) -> None:
    tokens = TokenProvider(auth_settings)  # default trust store: the local CA is unknown
    with pytest.raises(CredentialError, match="SSL"):
        await tokens.token(BotId(AUTH_BOT_A))
    tokens.close()


async def test_unknown_bot_is_a_credential_error(auth_settings: Settings) -> None:
    tokens = TokenProvider(auth_settings)
    with pytest.raises(CredentialError, match="not registered"):
        await tokens.token(BotId(UNREGISTERED))
    assert tokens.cached_token(UNREGISTERED) is None
    tokens.invalidate(UNREGISTERED)  # a no-op, not an error


async def test_managed_identity_bot_uses_msal_managed_identity_client(
    auth_make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    msi = BotConfig(
        app_id=BotId(AUTH_BOT_A),
        app_type=AppType.USER_ASSIGNED_MSI,
        tenant_id=TenantId(AUTH_TENANT_A),
    )
    settings = auth_make_settings(None, bots=(msi,))
    tokens = TokenProvider(settings, timeout=1.0)
    slot = tokens._slot(AUTH_BOT_A)
    client = tokens._build_client(slot)  # construction only: no IMDS here
    assert isinstance(client, msal.ManagedIdentityClient)

    calls: list[dict[str, Any]] = []

    class FakeMsi:
        def acquire_token_for_client(self, **kwargs: Any) -> dict[str, Any]:
            calls.append(kwargs)
            return {"access_token": "msi-token", "expires_in": 3600, "token_type": "Bearer"}

    slot.client = FakeMsi()
    assert await tokens.token(BotId(AUTH_BOT_A)) == "msi-token"
    assert calls == [{"resource": "https://api.botframework.com"}]
    tokens.close()
