"""Outbound Bot Framework tokens for many bots: one msal client per bot, tokens cached, no I/O on
the event loop.

botbuilder asks its ``ServiceClientCredentialsFactory`` for credentials on every turn and its stock
factories build a fresh ``MicrosoftAppCredentials`` — a new msal app with an empty cache, i.e. OIDC
discovery plus a token request per turn, all synchronous inside msrest's ``signed_session``
(teams-platform.md §4.3, §4.4). Here :class:`TokenProvider` owns one msal client per bot and does
every acquisition in a worker thread; :class:`BotCredentials` is what botbuilder sees, and its
synchronous ``get_access_token`` only reads the provider's cache. Callers therefore ``await
TokenProvider.ensure(bot_id)`` before any outbound call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msal
import requests
from botframework.connector.auth import AppCredentials, MicrosoftAppCredentials
from botframework.connector.auth import (
    ServiceClientCredentialsFactory as _ServiceClientCredentialsFactory,
)

from relay.config import BOT_FRAMEWORK_SCOPE, PUBLIC_LOGIN_URL, AppType, BotConfig, Settings
from relay.domain import BotId
from relay.errors import CredentialError, RetryableError
from relay.ops.logs import mask
from relay.registry import BotRegistry
from relay.retry import TOKEN, retry_call

log = logging.getLogger(__name__)

SCOPE = BOT_FRAMEWORK_SCOPE + "/.default"
REFRESH_MARGIN = 300.0  # refresh ~5 minutes before expiry (§4.4: Entra tokens last 60-90 min)
EXPIRY_SAFETY = 30.0  # a cached token this close to expiry is not handed out synchronously
_MAX_ERROR_TEXT = 500


class _TimeoutSession(requests.Session):
    """A session with a timeout (msal would otherwise wait forever on a dead IdP) and a CA."""

    def __init__(self, verify: str | bool, timeout: float) -> None:
        super().__init__()
        self.verify = verify
        self._timeout = timeout

    def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self._timeout)
        # Per request, because requests lets REQUESTS_CA_BUNDLE override Session.verify.
        kwargs.setdefault("verify", self.verify)
        return super().request(method, url, *args, **kwargs)


@dataclass
class _Slot:
    bot: BotConfig
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    client: Any = None  # msal client, built once in a worker thread (construction does I/O)
    session: _TimeoutSession | None = None
    cache: Any = field(default_factory=msal.TokenCache)
    token: str | None = None
    refresh_at: float = 0.0
    expires_at: float = 0.0
    stale: bool = False  # invalidate() was called: msal's own token cache must be bypassed too


class TokenProvider:
    """Bot Framework access tokens (scope ``https://api.botframework.com/.default``) per bot."""

    def __init__(
        self,
        settings: Settings,
        bots: Iterable[BotConfig] | None = None,
        *,
        registry: BotRegistry | None = None,
        verify: str | bool = True,
        timeout: float = 10.0,
    ) -> None:
        self._login_url = settings.login_url.rstrip("/")
        self._verify = verify
        self._timeout = timeout
        # The live registry (relay/registry.py): a reload that adds, removes or re-keys a bot
        # is seen on the next lookup; a slot whose BotConfig changed is rebuilt (new msal client,
        # empty cache), so a rotated secret is used for the very next token.
        self.registry = registry or BotRegistry(settings.bots if bots is None else bots)
        self._slots: dict[str, _Slot] = {}

    def has_bot(self, bot_id: str) -> bool:
        """Registered right now (inbound tokens for it are acceptable)."""
        return bot_id in self.registry

    def bot(self, bot_id: str) -> BotConfig | None:
        """The bot's config for outbound calls (a just-removed bot still, for its grace)."""
        return self.registry.get_for_outbound(bot_id)

    async def token(self, bot_id: BotId) -> str:
        """A valid token, from cache unless within :data:`REFRESH_MARGIN` of expiry.

        Concurrent callers for one bot share a single acquisition (per-bot lock).

        Raises:
            CredentialError: the bot is unknown, or Entra / the managed identity refused.
        """
        slot = self._slot(bot_id)
        if slot.token is not None and time.monotonic() < slot.refresh_at:
            return slot.token
        async with slot.lock:
            if slot.token is not None and time.monotonic() < slot.refresh_at:
                return slot.token
            started = time.monotonic()
            try:
                # An exception (Entra 5xx, network) is transient, unlike an AADSTS answer below:
                # bounded retries with the TOKEN policy (relay.retry, peers-and-pitfalls.md §5).
                result = await retry_call(
                    lambda: self._acquire_once(slot), TOKEN, what=f"token of bot {bot_id}"
                )
            except RetryableError as exc:
                raise CredentialError(exc.message, service="teams", code=exc.code) from None
            if "access_token" not in result:
                raise self._error(
                    slot.bot, str(result.get("error")), str(result.get("error_description"))
                )
            lifetime = float(result.get("expires_in") or 3600)
            slot.token = str(result["access_token"])
            slot.stale = False
            # Refresh 5 min early, or halfway for short-lived tokens (test issuers, odd tenants).
            slot.refresh_at = started + max(lifetime - REFRESH_MARGIN, lifetime / 2)
            slot.expires_at = started + lifetime
            log.debug("bot %s: token acquired, valid %.0fs", slot.bot.app_id, lifetime)
            return slot.token

    async def ensure(self, bot_id: BotId) -> None:
        """Fill the cache so :meth:`BotCredentials.get_access_token` works synchronously."""
        await self.token(bot_id)

    def cached_token(self, bot_id: str) -> str | None:
        """The cached token if it is still usable (never does I/O)."""
        slot = self._slots.get(bot_id.lower())
        if slot is None or slot.token is None or slot.bot != self.bot(bot_id):
            return None
        if time.monotonic() >= slot.expires_at - EXPIRY_SAFETY:
            return None
        return slot.token

    def invalidate(self, bot_id: str) -> None:
        """Forget the token (the connector answered 401); the next call fetches a new one."""
        slot = self._slots.get(bot_id.lower())
        if slot is not None:
            slot.token = None
            slot.refresh_at = slot.expires_at = 0.0
            slot.stale = True

    def close(self) -> None:
        for slot in self._slots.values():
            if slot.session is not None:
                slot.session.close()

    def _slot(self, bot_id: str) -> _Slot:
        bot = self.bot(bot_id)
        if bot is None:
            self._slots.pop(bot_id.lower(), None)  # removed and past its grace: forget it
            raise CredentialError(
                f"bot {bot_id} is not registered", service="teams", code="unknown_bot"
            )
        key = bot_id.lower()
        slot = self._slots.get(key)
        if slot is None or slot.bot != bot:
            # New or changed (rotated secret / certificate, other tenant): start afresh. An
            # acquisition still running on the old slot finishes there, harmlessly.
            slot = self._slots[key] = _Slot(bot)
        return slot

    # -- worker-thread side ---------------------------------------------------------------------

    async def _acquire_once(self, slot: _Slot) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(self._acquire_blocking, slot)
        except Exception as exc:  # msal / requests / ssl
            err = self._error(slot.bot, type(exc).__name__, str(exc))  # secret scrubbed
            raise RetryableError(err.message, service="teams", code=err.code) from None

    def _acquire_blocking(self, slot: _Slot) -> dict[str, Any]:
        if slot.client is None:
            slot.client = self._build_client(slot)
        if slot.stale:
            # msal ≥ 1.23 answers acquire_token_for_client from its own cache first; a token
            # the connector just refused must not come back from there.
            kind = msal.TokenCache.CredentialType.ACCESS_TOKEN
            for item in list(slot.cache.search(kind)):
                slot.cache.remove_at(item)
        if slot.bot.app_type is AppType.USER_ASSIGNED_MSI:
            result = slot.client.acquire_token_for_client(resource=BOT_FRAMEWORK_SCOPE)
        else:
            result = slot.client.acquire_token_for_client(scopes=[SCOPE])
        return dict(result or {})

    def _build_client(self, slot: _Slot) -> Any:
        bot = slot.bot
        slot.session = _TimeoutSession(self._verify, self._timeout)
        if bot.app_type is AppType.USER_ASSIGNED_MSI:
            return msal.ManagedIdentityClient(
                msal.UserAssignedManagedIdentity(client_id=bot.app_id),
                http_client=slot.session,
                token_cache=slot.cache,
            )
        credential: Any
        if bot.certificate is not None:
            # A signed client assertion (RS256, x5t = SHA-1 thumbprint; x5c when the public
            # certificate is given, for subject-name/issuer auth) instead of a secret (§4.4).
            credential = bot.certificate.msal_credential()
        elif bot.secret is not None:
            credential = bot.secret.get_secret_value()
        else:
            raise ValueError("no client secret or certificate configured")
        kwargs: dict[str, Any] = {}
        if self._login_url != PUBLIC_LOGIN_URL:
            # Otherwise msal asks login.microsoftonline.com whether this host is a valid
            # authority — impossible for a private cloud or the local test issuer (§4.4).
            kwargs["instance_discovery"] = False
        # Construction performs OIDC discovery over the network: we are in a worker thread.
        return msal.ConfidentialClientApplication(
            client_id=bot.app_id,
            client_credential=credential,
            authority=f"{self._login_url}/{bot.authority_tenant}",
            http_client=slot.session,
            token_cache=slot.cache,
            **kwargs,
        )

    @staticmethod
    def _error(bot: BotConfig, error: str, description: str) -> CredentialError:
        text = " ".join(f"{error}: {description}".split())
        if bot.secret is not None:  # never let the secret reach logs or exception text
            text = mask(text, bot.secret.get_secret_value())
        if len(text) > _MAX_ERROR_TEXT:
            text = text[:_MAX_ERROR_TEXT] + "…"
        return CredentialError(
            f"could not get a Bot Framework token for bot {bot.app_id}: {text}",
            service="teams",
            code=error or None,
        )


class BotCredentials(AppCredentials):  # type: ignore[misc]  # botbuilder is untyped
    """What botbuilder's connector uses; reads the :class:`TokenProvider` cache, never the network.

    ``get_access_token`` is called synchronously from msrest's ``signed_session`` on the event
    loop (§4.3); doing msal I/O there would block every conversation, so it only reads the cache.
    """

    def __init__(self, bot: BotConfig, tokens: TokenProvider, oauth_scope: str) -> None:
        super().__init__(
            app_id=bot.app_id, channel_auth_tenant=bot.authority_tenant, oauth_scope=oauth_scope
        )
        self.bot_id = bot.app_id
        self.bot_config = bot
        self._tokens = tokens

    def get_access_token(self, force_refresh: bool = False) -> str:
        # force_refresh cannot be honoured without I/O; callers use TokenProvider.invalidate().
        token = self._tokens.cached_token(self.bot_id)
        if token is None:
            raise CredentialError(
                f"no cached Bot Framework token for bot {self.bot_id}; "
                "await TokenProvider.ensure() before sending",
                service="teams",
                code="token_not_cached",
            )
        return token


class MultiBotCredentialsFactory(_ServiceClientCredentialsFactory):  # type: ignore[misc]
    """One botbuilder credentials factory for every registered bot (§4.3 option A)."""

    def __init__(self, settings: Settings, tokens: TokenProvider | None = None) -> None:
        # Pass the TokenProvider the rest of the relay uses: BotCredentials read its cache, so a
        # private one here would never have been ensure()d. Building one does no I/O.
        self.tokens = tokens if tokens is not None else TokenProvider(settings)
        # Which app ids are valid is asked of the live registry on every request.
        self.anonymous = not self.tokens.registry.bots and settings.allow_anonymous
        self._cache: dict[str, BotCredentials] = {}
        # MicrosoftAppCredentials.empty() sends no Authorization header at all (§4.1 anonymous).
        self._empty = MicrosoftAppCredentials.empty()

    async def is_valid_app_id(self, app_id: str) -> bool:
        return isinstance(app_id, str) and self.tokens.has_bot(app_id)

    async def is_authentication_disabled(self) -> bool:
        return self.anonymous

    async def create_credentials(
        self, app_id: str, oauth_scope: str, login_endpoint: str, validate_authority: bool
    ) -> AppCredentials:
        """Cached per app id. ``login_endpoint`` is ignored: the TokenProvider owns authorities."""
        if self.anonymous:
            return self._empty
        scope = oauth_scope or BOT_FRAMEWORK_SCOPE
        if scope.removesuffix("/.default") != BOT_FRAMEWORK_SCOPE:
            # Only channel-bound tokens exist here; skills would need a scope per target.
            raise CredentialError(
                f"unsupported token scope {scope!r}", service="teams", code="bad_scope"
            )
        key = (app_id or "").lower()
        bot = self.tokens.bot(key)
        if bot is None:
            self._cache.pop(key, None)
            raise CredentialError(
                f"bot {app_id} is not registered", service="teams", code="unknown_bot"
            )
        creds = self._cache.get(key)
        if creds is None or creds.bot_config != bot:  # new, or changed by a registry reload
            creds = self._cache[key] = BotCredentials(bot, self.tokens, BOT_FRAMEWORK_SCOPE)
        return creds
