"""Inbound authentication: is this request really the channel, and for which of our bots?

One :class:`InboundAuthenticator` validates the ``Authorization`` header of every inbound
activity for all registered bots with botbuilder's own validation (its
``ConfigurationBotFrameworkAuthentication`` plus the multi-bot credentials factory,
teams-platform.md §4.1-§4.3), and adds what botbuilder lacks: every failure becomes
:class:`relay.errors.AuthError` (botbuilder raises ``IndexError``, ``jwt`` errors, bare
``Exception`` and ``AttributeError``, which its adapter turns into 500s, §4.2 "Pitfalls"); a token
for bot A cannot deliver an activity addressed to bot B; and the OpenID metadata botbuilder
fetches with synchronous ``requests`` is fetched in worker threads only, so the event loop never
blocks on it (§4.1 "Metadata cache", §10). A token that passed once is remembered until its expiry
or the next key refresh (:mod:`relay.teams.auth_cache`); the checks that depend on the activity
or the registry still run every time. The outbound side lives in
:mod:`relay.teams.credentials` and is re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import jwt
import requests
from botbuilder.integration.aiohttp import ConfigurationBotFrameworkAuthentication
from botbuilder.schema import CallerIdConstants
from botframework.connector.auth import AuthenticationConstants, JwtTokenExtractor, SkillValidation
from botframework.connector.auth.jwt_token_extractor import _OpenIdMetadata

from relay.config import (
    BOT_FRAMEWORK_SCOPE,
    PUBLIC_LOGIN_URL,
    PUBLIC_OPENID_METADATA_URL,
    PUBLIC_TOKEN_ISSUER,
    Settings,
)
from relay.domain import BotId
from relay.errors import AuthError
from relay.teams.auth_cache import ValidatedToken, ValidatedTokens, token_expiry
from relay.teams.credentials import BotCredentials, MultiBotCredentialsFactory, TokenProvider
from relay.teams.inbound_model import InboundActivity

__all__ = [
    "AuthResult",
    "BotCredentials",
    "InboundAuthenticator",
    "MultiBotCredentialsFactory",
    "ThreadedOpenIdMetadata",
    "TokenProvider",
    "bot_framework_config",
]

log = logging.getLogger(__name__)

METADATA_REFRESH_INTERVAL = 12 * 3600.0  # botbuilder refreshes on the loop after 24 h: stay ahead
UNKNOWN_KID_REFRESH_INTERVAL = 60.0  # at most one fetch a minute, however many forged kids arrive
METADATA_STALE_AFTER = timedelta(days=1)  # botbuilder's own threshold (§4.1)


@dataclass(frozen=True)
class AuthResult:
    """An authenticated inbound request."""

    bot_id: BotId | None  # from the token's ``aud``; None only in anonymous mode
    claims: dict[str, Any]
    anonymous: bool
    caller_id: str | None = None
    # botbuilder's AuthenticateRequestResult: CloudAdapter.process_activity accepts it in place
    # of the header, so the turn is not validated a second time.
    request_result: Any = field(default=None, compare=False, repr=False)


def bot_framework_config(settings: Settings) -> SimpleNamespace:
    """The upper-case configuration object botbuilder reads (§4.2).

    Public defaults leave every parameterized key unset, so botbuilder uses its built-in public
    cloud path. Any difference (test issuer, private cloud) switches botbuilder to parameterized
    mode, where nothing falls back to a default: then every key is set.
    """
    public = (
        settings.openid_metadata_url == PUBLIC_OPENID_METADATA_URL
        and settings.token_issuer == PUBLIC_TOKEN_ISSUER
        and settings.login_url == PUBLIC_LOGIN_URL
    )
    config = SimpleNamespace(VALIDATE_AUTHORITY=True)
    if not public:
        config.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL = settings.openid_metadata_url
        config.TO_BOT_FROM_CHANNEL_TOKEN_ISSUER = settings.token_issuer
        config.TO_CHANNEL_FROM_BOT_OAUTH_SCOPE = BOT_FRAMEWORK_SCOPE
        config.TO_CHANNEL_FROM_BOT_LOGIN_URL = settings.login_url
        config.OAUTH_URL = AuthenticationConstants.OAUTH_URL
        config.TO_BOT_FROM_EMULATOR_OPENID_METADATA_URL = (
            AuthenticationConstants.TO_BOT_FROM_EMULATOR_OPENID_METADATA_URL
        )
        config.CALLER_ID = CallerIdConstants.public_azure_channel.value
    return config


class ThreadedOpenIdMetadata(_OpenIdMetadata):  # type: ignore[misc]  # botbuilder is untyped
    """botbuilder's per-URL signing-key cache, but every fetch happens in a worker thread.

    Installed into ``JwtTokenExtractor.metadataCache`` (class level, keyed by URL), so any refresh
    botbuilder itself triggers (daily, or on an unknown ``kid``) also stays off the event loop.
    """

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        super().__init__(url)
        self.timeout = timeout
        self.min_interval = UNKNOWN_KID_REFRESH_INTERVAL
        self.fetches = 0
        self._fetch_lock = threading.Lock()
        # Only on-demand refreshes (stale keys, unknown kid) are rate-limited, and scheduled ones
        # do not count against them: a key rotated just after start-up is still picked up.
        self._last_on_demand = -math.inf

    @classmethod
    def install(cls, url: str) -> ThreadedOpenIdMetadata:
        cache: dict[str, Any] = JwtTokenExtractor.metadataCache
        current = cache.get(url)
        if isinstance(current, cls):
            return current
        metadata = cls(url)
        if current is not None:  # keep whatever botbuilder already fetched
            metadata.keys, metadata.last_updated = current.keys, current.last_updated
        cache[url] = metadata
        return metadata

    def has_key(self, key_id: str) -> bool:
        return any(k.get("kid") == key_id for k in self.keys or ())

    async def ensure_key(self, key_id: str) -> bool:
        """Refresh (in a thread, at most once per ``min_interval``) if stale or kid unknown."""
        if self.last_updated < datetime.now() - METADATA_STALE_AFTER or not self.has_key(key_id):
            await self.refresh(bounded=True)
        return self.has_key(key_id)

    async def get(self, key_id: str) -> Any:  # botbuilder's entry point
        await self.ensure_key(key_id)
        return self._find(key_id)  # IndexError on an unknown kid, like botbuilder

    async def _refresh(self) -> None:  # botbuilder's name, in case anything calls it directly
        await self.refresh(bounded=False)

    async def refresh(self, *, bounded: bool) -> bool:
        """Fetch metadata + keys in a worker thread; ``bounded`` refreshes are rate-limited and
        swallow errors (stale keys beat no keys). Returns whether a fetch succeeded."""
        if bounded and time.monotonic() - self._last_on_demand < self.min_interval:
            return False
        try:
            return await asyncio.to_thread(self._refresh_blocking, bounded)
        except Exception as exc:
            if not bounded:
                raise
            log.warning("OpenID metadata refresh from %s failed: %s", self.url, exc)
            return False

    def _refresh_blocking(self, bounded: bool) -> bool:
        # Serialised: an on-demand caller that waited here sees the fresh rate-limit stamp and
        # skips, so a burst of unknown kids costs one fetch.
        with self._fetch_lock:
            if bounded:
                if time.monotonic() - self._last_on_demand < self.min_interval:
                    return False
                self._last_on_demand = time.monotonic()
            self.fetches += 1
            response = requests.get(self.url, timeout=self.timeout)
            response.raise_for_status()
            keys_url = response.json()["jwks_uri"]
            response = requests.get(keys_url, timeout=self.timeout)
            response.raise_for_status()
            keys = response.json()["keys"]
            if not isinstance(keys, list):
                raise ValueError("JWKS 'keys' is not a list")
            self.keys, self.last_updated = keys, datetime.now()
            log.info("OpenID signing keys refreshed from %s (%d keys)", self.url, len(keys))
            return True


class InboundAuthenticator:
    """Validates inbound Bot Framework tokens for every registered bot."""

    def __init__(
        self,
        settings: Settings,
        factory: MultiBotCredentialsFactory,
        *,
        metadata_refresh_interval: float = METADATA_REFRESH_INTERVAL,
    ) -> None:
        self._settings = settings
        self._factory = factory
        self._anonymous = factory.anonymous
        self._issuer = settings.token_issuer
        self._refresh_interval = metadata_refresh_interval
        self.config = bot_framework_config(settings)
        self.bot_framework_authentication = ConfigurationBotFrameworkAuthentication(
            self.config, credentials_factory=factory
        )
        # Installed now, not in start(), so even an un-started authenticator never fetches on
        # the loop. The emulator URL is covered too although emulator tokens are refused early.
        self.metadata = ThreadedOpenIdMetadata.install(settings.openid_metadata_url)
        ThreadedOpenIdMetadata.install(
            AuthenticationConstants.TO_BOT_FROM_EMULATOR_OPENID_METADATA_URL
        )
        self._task: asyncio.Task[None] | None = None
        # Tokens that passed full validation (relay.teams.auth_cache): a repeat skips botbuilder.
        self.validated = ValidatedTokens()

    async def start(self) -> None:
        """Pre-fetch signing keys in a thread and keep them fresh in the background."""
        if self._anonymous or self._task is not None:
            return
        ok = await self._refresh_quietly()
        self._task = asyncio.create_task(self._refresh_loop(ok), name="openid-metadata-refresh")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _refresh_quietly(self) -> bool:
        try:
            return await self.metadata.refresh(bounded=False)
        except Exception as exc:  # start-up must not fail on a transient outage
            log.warning("OpenID metadata fetch from %s failed: %s", self.metadata.url, exc)
            return False

    async def _refresh_loop(self, ok: bool) -> None:
        while True:
            delay = self._refresh_interval if ok else min(self._refresh_interval, 60.0)
            await asyncio.sleep(delay)
            ok = await self._refresh_quietly()

    async def authenticate(self, auth_header: str | None, activity: InboundActivity) -> AuthResult:
        """Authenticate one inbound activity.

        Anonymous mode (no bots, ``allow_anonymous``) accepts every request as anonymous and
        validates nothing — not even a header that is present, since the Agents Playground and
        emulators send tokens no registered bot could validate (§4.1, §8).

        Raises:
            AuthError: for every reason the request is not authenticated.
        """
        try:
            return await self._authenticate(auth_header, activity)
        except AuthError:
            raise
        except PermissionError as exc:  # botbuilder's "proper" refusals
            raise self._fail(f"token rejected: {_first_arg(exc)}", exc) from None
        except jwt.ExpiredSignatureError as exc:
            raise self._fail("token expired", exc) from None
        except jwt.InvalidSignatureError as exc:
            raise self._fail("bad token signature", exc) from None
        except jwt.PyJWTError as exc:
            raise self._fail(f"invalid token ({type(exc).__name__})", exc) from None
        except IndexError as exc:  # botbuilder's unknown-kid signal
            raise self._fail("unknown signing key", exc) from None
        except Exception as exc:  # botbuilder raises bare Exception / AttributeError too (§4.2)
            if "endorsement" in str(exc):
                raise self._fail("signing key not endorsed for this channel", exc) from None
            raise self._fail(f"token validation failed ({type(exc).__name__})", exc) from None

    @staticmethod
    def _fail(reason: str, exc: BaseException | None = None) -> AuthError:
        if exc is not None:
            log.debug("inbound auth failed: %s (%s: %s)", reason, type(exc).__name__, exc)
        return AuthError(reason)

    async def _authenticate(self, auth_header: str | None, activity: InboundActivity) -> AuthResult:
        bfa = self.bot_framework_authentication
        if self._anonymous:
            # None, never "": parameterized mode only checks `is None` and would crash (§4.2).
            result = await bfa.authenticate_request(activity, None)
            return AuthResult(None, {}, anonymous=True, caller_id=None, request_result=result)

        header = (auth_header or "").strip()
        if not header:
            raise AuthError("missing Authorization header")
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token or " " in token:
            raise AuthError("Authorization header is not 'Bearer <token>'")
        cached = self.validated.get(
            token,
            channel_id=activity.channel_id,
            service_url=activity.service_url,
            key_generation=self.metadata.last_updated,
        )
        if cached is not None:
            return await self._accept(
                activity, cached.claims, cached.caller_id, cached.request_result
            )
        try:
            unverified_header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        # Only channel tokens from the configured issuer go further. This also keeps tokens
        # shaped like emulator or skill tokens off botbuilder's emulator path, which would fetch
        # login.microsoftonline.com metadata synchronously and accept bot-secret-minted tokens.
        if unverified.get("iss") != self._issuer:
            raise AuthError("untrusted token issuer")
        if SkillValidation.is_skill_claim(unverified):
            raise AuthError("skill tokens are not accepted")
        if not activity.channel_id:
            # botbuilder skips the endorsement check when the activity names no channel.
            raise AuthError("activity has no channelId")
        kid = unverified_header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("token has no key id")
        if not await self.metadata.ensure_key(kid):
            raise AuthError("unknown signing key")
        key_generation = self.metadata.last_updated  # the key set this token is checked against

        result = await bfa.authenticate_request(activity, header)
        identity = result.claims_identity
        claims: dict[str, Any] = dict(identity.claims) if identity is not None else {}
        caller_id = result.caller_id
        if caller_id is not None:  # the public path hands out a str-Enum member; keep it plain
            caller_id = str(getattr(caller_id, "value", caller_id))
        accepted = await self._accept(activity, claims, caller_id, result)
        expires_at = token_expiry(claims)
        if expires_at is not None:  # only now: a refused request is never remembered
            entry = ValidatedToken(
                claims=claims,
                caller_id=caller_id,
                channel_id=activity.channel_id,
                service_url=activity.service_url or "",  # non-empty: _accept required it
                expires_at=expires_at,
                key_generation=key_generation,
                request_result=result,
            )
            self.validated.put(token, entry)
        return accepted

    async def _accept(
        self, activity: InboundActivity, claims: dict[str, Any], caller_id: str | None, result: Any
    ) -> AuthResult:
        """The checks that depend on the activity or the live registry: run on every request."""
        aud = claims.get("aud")
        if not isinstance(aud, str) or not await self._factory.is_valid_app_id(aud):
            raise AuthError("token audience is not a registered bot")
        bot_id = BotId(aud.lower())
        # botbuilder compares serviceurl only when the activity carries one; require both.
        if not activity.service_url or claims.get("serviceurl") != activity.service_url:
            raise AuthError("serviceurl claim does not match the activity")
        recipient = getattr(activity.recipient, "id", None)
        if recipient:
            addressed = str(recipient).lower().removeprefix("28:")
            if addressed != bot_id:
                raise AuthError("token audience does not match the activity recipient")
        return AuthResult(
            bot_id, claims, anonymous=False, caller_id=caller_id, request_result=result
        )


def _first_arg(exc: BaseException) -> str:
    """botbuilder sometimes passes (message, value) to PermissionError; keep it one line."""
    text = " ".join(str(a) for a in exc.args) if exc.args else type(exc).__name__
    return " ".join(text.split())[:200]
