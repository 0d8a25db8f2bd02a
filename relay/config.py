"""Settings and the bot registry, validated once at start-up.

Operators configure the relay with environment variables (or an optional ``.env``); the bots it
serves live in a separate registry file (``RELAY_BOTS_FILE``, TOML or JSON) whose secrets are given
*by reference* — an environment variable or a file — so a committed registry never holds one.
Every problem is raised as :class:`relay.errors.ConfigError` naming the key to fix; modules never
read ``os.environ`` themselves, they receive a :class:`Settings`.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from relay.domain import BotId, TenantId
from relay.errors import ConfigError
from relay.registry_fields import (
    CERTIFICATE_FIELDS,
    Branding,
    CertificateCredential,
    check_known_fields,
    parse_branding,
    parse_certificate,
)

PUBLIC_OPENID_METADATA_URL = "https://login.botframework.com/v1/.well-known/openidconfiguration"
PUBLIC_TOKEN_ISSUER = "https://api.botframework.com"  # noqa: S105 - a URL, not a secret
PUBLIC_LOGIN_URL = "https://login.microsoftonline.com"
BOT_FRAMEWORK_SCOPE = "https://api.botframework.com"

# Hosts Teams / Bot Framework use for serviceUrl (public cloud, GCC, GCC High, DoD). A serviceUrl
# outside these is refused before anything is sent to it, so a forged activity cannot make the
# relay hand its bot token to someone else (reference: peers-and-pitfalls.md §1 "Inbound auth").
# The connector calls carry the bot token, so these are exact names, as for inline images
# (relay.allowlist.BOT_FRAMEWORK_TOKEN_HOSTS): never a wildcard under trafficmanager.net.
DEFAULT_SERVICE_URL_ALLOWLIST = (
    "smba.trafficmanager.net",
    "*.botframework.com",
    "smba.infra.gcc.teams.microsoft.com",
    "smba.infra.gov.teams.microsoft.us",
    "smba.infra.dod.teams.microsoft.us",
    "*.botframework.us",
    "*.botframework.azure.us",
)

# Hosts a paperclip file's pre-authenticated downloadUrl may point at: the user's OneDrive /
# SharePoint (teams-platform.md §5), public cloud, US government clouds and 21Vianet.
DEFAULT_FILE_DOWNLOAD_ALLOWLIST = (
    "*.sharepoint.com",
    "*.sharepoint.us",
    "*.sharepoint-mil.us",
    "*.sharepoint.cn",
)

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_NEO_KEY = re.compile(r"^neo_sk_[A-Za-z0-9]+_[A-Za-z0-9_\-]{8,}$")
_PLACEHOLDERS = ("changeme", "change-me", "placeholder", "your-", "your_", "xxxx", "<", "todo")


def _is_placeholder(value: str) -> bool:
    low = value.lower()
    return any(p in low for p in _PLACEHOLDERS)


class AppType(StrEnum):
    SINGLE_TENANT = "SingleTenant"
    MULTI_TENANT = "MultiTenant"
    USER_ASSIGNED_MSI = "UserAssignedMSI"


class BotConfig(BaseModel):
    """One registered bot: its Entra app id, how it authenticates outbound, and its label."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    app_id: BotId
    app_type: AppType = AppType.SINGLE_TENANT
    tenant_id: TenantId | None = None
    name: str | None = None
    secret: SecretStr | None = None  # resolved from secret_env / secret_file, never inline
    certificate: CertificateCredential | None = None  # instead of a secret (§4.3, §4.4)
    branding: Branding | None = None  # `relay manifest build` (§7 "White-label")

    @property
    def authority_tenant(self) -> str:
        """Tenant segment of the token authority (``botframework.com`` for legacy MultiTenant)."""
        if self.app_type is AppType.MULTI_TENANT:
            return self.tenant_id or "botframework.com"
        assert self.tenant_id is not None  # enforced by _parse_bot
        return self.tenant_id


BOT_FIELDS = frozenset(
    {"app_id", "app_type", "tenant_id", "name", "secret_env", "secret_file", "branding"}
    | CERTIFICATE_FIELDS
)
# Entra client secrets are 40 characters; anything this short is a leftover test value, and
# masking it in error text would garble ordinary words.
MIN_CLIENT_SECRET_LENGTH = 16


def _parse_bot(
    index: int, raw: Any, base_dir: Path, env: dict[str, str], credentials: bool = True
) -> BotConfig:
    key = f"RELAY_BOTS_FILE: bots[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(key, "each bot must be a table/object")
    raw = dict(raw)
    if "secret" in raw or "password" in raw or "app_password" in raw:
        raise ConfigError(
            f"{key}.secret",
            "secrets must not be inline; use secret_env (an environment variable name) "
            "or secret_file (a path)",
        )
    # Before anything else: a misspelt `secret_envv` is an unknown field, not a missing secret_env.
    check_known_fields(key, raw, BOT_FIELDS)
    app_id = str(raw.get("app_id", "")).strip()
    if not app_id:
        raise ConfigError(f"{key}.app_id", "missing")
    if _is_placeholder(app_id) or not _GUID.match(app_id):
        raise ConfigError(f"{key}.app_id", f"not an Entra app id (GUID): {app_id!r}")
    app_type_raw = str(raw.pop("app_type", AppType.SINGLE_TENANT.value))
    try:
        app_type = next(t for t in AppType if t.value.lower() == app_type_raw.lower())
    except StopIteration:
        allowed = ", ".join(t.value for t in AppType)
        raise ConfigError(f"{key}.app_type", f"{app_type_raw!r} is not one of {allowed}") from None
    tenant = raw.get("tenant_id")
    if tenant is not None:
        tenant = str(tenant).strip()
        if _is_placeholder(tenant) or not _GUID.match(tenant):
            raise ConfigError(f"{key}.tenant_id", f"not a tenant id (GUID): {tenant!r}")
    elif app_type is not AppType.MULTI_TENANT:
        raise ConfigError(f"{key}.tenant_id", f"required for {app_type.value} bots")
    secret, certificate = (
        _resolve_credential(key, raw, base_dir, env, app_type) if credentials else (None, None)
    )
    branding = None
    if "branding" in raw:
        branding = parse_branding(f"{key}.branding", raw["branding"], base_dir)
    return BotConfig(
        app_id=BotId(app_id.lower()),
        app_type=app_type,
        tenant_id=TenantId(tenant.lower()) if tenant else None,
        name=raw.get("name"),
        secret=secret,
        certificate=certificate,
        branding=branding,
    )


def _resolve_credential(
    key: str, raw: dict[str, Any], base_dir: Path, env: dict[str, str], app_type: AppType
) -> tuple[SecretStr | None, CertificateCredential | None]:
    """A bot has one credential: a secret, a certificate, or (UserAssignedMSI) neither."""
    certificate = parse_certificate(key, raw, base_dir, env)
    if certificate is not None and (
        raw.get("secret_env") or raw.get("secret_file") or app_type is AppType.USER_ASSIGNED_MSI
    ):
        raise ConfigError(
            f"{key}.certificate_thumbprint",
            "a bot has one credential: a secret, a certificate or (UserAssignedMSI) none",
        )
    msi = app_type is AppType.USER_ASSIGNED_MSI
    secret = _resolve_secret(key, raw, base_dir, env, required=not msi and certificate is None)
    return secret, certificate


def _resolve_secret(
    key: str, raw: dict[str, Any], base_dir: Path, env: dict[str, str], *, required: bool
) -> SecretStr | None:
    if raw.get("secret_env"):
        var = str(raw["secret_env"])
        value = env.get(var)
        if not value:
            raise ConfigError(f"{key}.secret_env", f"environment variable {var} is not set")
    elif raw.get("secret_file"):
        path = Path(str(raw["secret_file"]))
        path = path if path.is_absolute() else base_dir / path
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{key}.secret_file", f"cannot read {path}: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"{key}.secret_file", f"{path} is empty")
    elif required:
        raise ConfigError(f"{key}.secret_env", "missing: give secret_env or secret_file")
    else:
        return None
    source = f"{key}.secret_env" if raw.get("secret_env") else f"{key}.secret_file"
    if _is_placeholder(value):
        raise ConfigError(source, "the secret is still a placeholder value")
    if len(value) < MIN_CLIENT_SECRET_LENGTH:
        raise ConfigError(
            source,
            f"the secret is {len(value)} characters, too short to be a real client secret "
            f"(Entra's are 40); is it a placeholder?",
        )
    return SecretStr(value)


def load_bots(
    path: Path, env: dict[str, str] | None = None, *, credentials: bool = True
) -> tuple[BotConfig, ...]:
    """Read and validate a bot registry file (TOML ``[[bots]]`` or JSON ``{"bots": [...]}``).

    ``credentials=False`` skips resolving secrets and keys (``relay manifest build`` needs only
    ids and branding, and may run where the secrets are not available).
    """
    env = dict(os.environ) if env is None else env
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError("RELAY_BOTS_FILE", f"cannot read {path}: {exc.strerror}") from None
    try:
        data: Any = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("RELAY_BOTS_FILE", f"{path} is not valid: {exc}") from None
    items = data.get("bots") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ConfigError("RELAY_BOTS_FILE", f"{path} must contain a list named 'bots'")
    bots = tuple(_parse_bot(i, raw, path.parent, env, credentials) for i, raw in enumerate(items))
    seen: set[str] = set()
    for i, bot in enumerate(bots):
        if bot.app_id in seen:
            raise ConfigError(
                f"RELAY_BOTS_FILE: bots[{i}].app_id", f"duplicate app id {bot.app_id}"
            )
        seen.add(bot.app_id)
    return bots


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """``30d``, ``12h``, ``15m``, ``90s`` or a number of seconds → seconds (> 0)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError(f"not a duration like 30d, 12h, 15m or 90s: {value!r}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    if seconds <= 0:
        raise ValueError("must be longer than 0 seconds")
    return seconds


def _field(alias: str, **kw: Any) -> Any:
    return Field(validation_alias=AliasChoices(alias), **kw)


class Settings(BaseSettings):
    """Every knob of the relay. Construct with :func:`load_settings` to get readable errors."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    neo_api_base_url: str = _field("NEO_API_BASE_URL", default="https://api.neoagent.io")
    neo_api_key: SecretStr = _field("NEO_API_KEY")
    bots_file: Path | None = _field("RELAY_BOTS_FILE", default=None)
    # Seconds between checks of the bots file for changes (0: only on SIGHUP); relay/registry.py.
    bots_reload_interval: float = _field("RELAY_BOTS_RELOAD_INTERVAL", default=5.0, ge=0)
    database_url: str = _field("RELAY_DATABASE_URL", default="sqlite:///relay.db")
    host: str = _field("RELAY_HOST", default="0.0.0.0")  # noqa: S104 - a server binds all
    port: int = _field("RELAY_PORT", default=3978, ge=0, le=65535)
    service_url_allowlist: Annotated[tuple[str, ...], NoDecode] = _field(
        "RELAY_SERVICE_URL_ALLOWLIST", default=DEFAULT_SERVICE_URL_ALLOWLIST
    )
    openid_metadata_url: str = _field(
        "RELAY_OPENID_METADATA_URL", default=PUBLIC_OPENID_METADATA_URL
    )
    token_issuer: str = _field("RELAY_TOKEN_ISSUER", default=PUBLIC_TOKEN_ISSUER)
    login_url: str = _field("RELAY_LOGIN_URL", default=PUBLIC_LOGIN_URL)
    # A private CA for the token authority (sovereign/private clouds; the tests' local issuer).
    login_ca_file: Path | None = _field("RELAY_LOGIN_CA_FILE", default=None)
    allow_anonymous: bool = _field("RELAY_ALLOW_ANONYMOUS", default=False)
    max_body_bytes: int = _field("RELAY_MAX_BODY_BYTES", default=256 * 1024, gt=0)
    neo_connect_timeout: float = _field("RELAY_NEO_CONNECT_TIMEOUT", default=10.0, gt=0)
    neo_request_timeout: float = _field("RELAY_NEO_REQUEST_TIMEOUT", default=30.0, gt=0)
    sse_first_byte_timeout: float = _field("RELAY_SSE_FIRST_BYTE_TIMEOUT", default=60.0, gt=0)
    sse_idle_timeout: float = _field("RELAY_SSE_IDLE_TIMEOUT", default=120.0, gt=0)
    sse_total_timeout: float = _field("RELAY_SSE_TOTAL_TIMEOUT", default=900.0, gt=0)
    sse_max_reconnects: int = _field("RELAY_SSE_MAX_RECONNECTS", default=10, ge=0)
    file_download_allowlist: Annotated[tuple[str, ...], NoDecode] = _field(
        "RELAY_FILE_DOWNLOAD_ALLOWLIST", default=DEFAULT_FILE_DOWNLOAD_ALLOWLIST
    )
    max_attachment_bytes: int = _field("RELAY_MAX_ATTACHMENT_BYTES", default=25 * 2**20, gt=0)
    attachment_timeout: float = _field("RELAY_ATTACHMENT_TIMEOUT", default=30.0, gt=0)
    log_level: str = _field("RELAY_LOG_LEVEL", default="INFO")
    # "json": one object per line (production, log shippers); "text": for a terminal.
    log_format: Literal["json", "text"] = _field("RELAY_LOG_FORMAT", default="text")
    shutdown_grace: float = _field("RELAY_SHUTDOWN_GRACE", default=10.0, ge=0)
    # Teams streaming (relay.teams.stream): seconds between updates of one stream (Teams allows
    # 1 req/s and advises 1.5-2 s), and when to close a stream ourselves before the 120 s cap.
    stream_interval: float = _field("RELAY_STREAM_INTERVAL", default=1.5, gt=0, le=30)
    stream_max_seconds: float = _field("RELAY_STREAM_MAX_SECONDS", default=100.0, gt=0, le=115)
    # Group chats/channels: post the answer early and edit it in place (relay.teams.edit_in_place).
    group_edit_in_place: bool = _field("RELAY_GROUP_EDIT_IN_PLACE", default=False)
    # Split answers into messages of at most this many UTF-16 bytes (Teams advises 80 KB).
    message_limit_bytes: int = _field(
        "RELAY_MESSAGE_LIMIT_BYTES", default=80_000, ge=1_000, le=100_000
    )
    # Hard cap on one turn, arrival to final state; a turn over it ends FAILED with a message.
    turn_deadline: float = _field("RELAY_TURN_DEADLINE", default=900.0, gt=0)
    # After an approval decision, how long the relay tails the session for the agent's
    # continuation when the turn that showed the card has already ended (relay.followups).
    approval_follow_seconds: float = _field(
        "RELAY_APPROVAL_FOLLOW_SECONDS", default=600.0, gt=0, le=86400
    )
    # Several replicas (relay.replicas): a conversation's lease lasts this long without renewal;
    # a dead replica's conversations resume elsewhere about this long after it died.
    lease_seconds: float = _field("RELAY_LEASE_SECONDS", default=15.0, ge=0.5, le=600)
    # Data lifecycle and hardening (issue 16). Finished turns, their deliveries, claims and idle
    # session mappings are deleted this long after they last changed (relay.store.retention).
    retention: Annotated[float, NoDecode] = _field("RELAY_RETENTION", default=30 * 86400.0)
    # Bot Framework channels served; any other channelId is refused with 403 (a Teams relay).
    channels: Annotated[tuple[str, ...], NoDecode] = _field("RELAY_CHANNELS", default=("msteams",))
    # GET /metrics is served here only, never on the public port (it lists every bot id).
    metrics_host: str = _field("RELAY_METRICS_HOST", default="127.0.0.1")
    metrics_port: int = _field("RELAY_METRICS_PORT", default=9464, ge=0, le=65535)
    # Admission control (relay.admission): conversations running turns at once per process, and
    # the event-loop lag past which new ones wait journaled (bench/README.md sizes both).
    max_active_turns: int = _field("RELAY_MAX_ACTIVE_TURNS", default=1000, ge=1, le=100_000)
    admission_max_lag_ms: float = _field("RELAY_ADMISSION_MAX_LAG_MS", default=10.0, gt=0)
    # Turns in their starting phase (session, POST, opening the stream — until the first chunk or
    # 2 s) at once: a burst of starts is what starves the webhook (bench/README.md sizes it).
    max_starting_turns: int = _field("RELAY_MAX_STARTING_TURNS", default=8, ge=1, le=100_000)
    busy_notice_after: float = _field("RELAY_BUSY_NOTICE_AFTER", default=3.0, ge=0)
    # Run on uvloop when it is installed (the `fast` extra; relay.event_loop); false: asyncio's.
    uvloop: bool = _field("RELAY_UVLOOP", default=True)
    # Neo's rate budget (relay.budgets): requests per window for the whole deployment (Neo counts
    # per tenant, and the API key is one tenant), kept in Redis when replicas share one. Turns
    # that would exceed it wait journaled. 0 turns the budget off, X-RateLimit-* learning too.
    neo_rate_limit: int = _field("RELAY_NEO_RATE_LIMIT", default=1200, ge=0)
    neo_rate_window: float = _field("RELAY_NEO_RATE_WINDOW", default=60.0, gt=0, le=3600)

    bots: tuple[BotConfig, ...] = ()
    # The variables load_settings() was given, if not the process environment (relay demo passes
    # its own): a reload of the bot registry resolves secret_env against the same source.
    _environment: dict[str, str] | None = PrivateAttr(default=None)

    def environment(self) -> Mapping[str, str]:
        """Where ``secret_env``/``certificate_key_env`` names resolve: the source these settings
        were loaded from (the live process environment unless :func:`load_settings` got one)."""
        return os.environ if self._environment is None else self._environment

    @field_validator("service_url_allowlist", "file_download_allowlist", mode="before")
    @classmethod
    def _split_allowlist(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value

    @field_validator("channels", mode="before")
    @classmethod
    def _split_channels(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(p.strip().lower() for p in value.split(",") if p.strip())
        if not value:
            raise ValueError("name at least one channel (msteams)")
        return value

    @field_validator("retention", mode="before")
    @classmethod
    def _parse_retention(cls, value: Any) -> Any:
        return parse_duration(value)

    @field_validator("neo_api_key")
    @classmethod
    def _check_key(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if _is_placeholder(raw):
            raise ValueError("is still a placeholder value")
        if not _NEO_KEY.match(raw):
            raise ValueError("must look like neo_sk_<env>_<secret>")
        return value

    @field_validator("neo_api_base_url", "openid_metadata_url", "login_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an http(s) URL: {value!r}")
        return value.rstrip("/") if parts.path in ("", "/") else value

    def bot(self, app_id: str) -> BotConfig | None:
        app_id = app_id.lower()
        return next((b for b in self.bots if b.app_id == app_id), None)


def _alias(name: str) -> str:
    alias = Settings.model_fields[name].validation_alias
    first = alias.choices[0] if isinstance(alias, AliasChoices) else None
    return first if isinstance(first, str) else name


_ALIASES = {name: _alias(name) for name in Settings.model_fields}


def load_settings(env: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from the environment (or ``env``) and load the bot registry.

    Raises:
        ConfigError: naming the first key that is missing, a placeholder, malformed or duplicated.
    """
    source = dict(os.environ) if env is None else env
    values: dict[str, Any] = {
        alias: source[alias] for alias in _ALIASES.values() if alias in source
    }
    values.update(overrides)
    try:
        settings = Settings(_env_file=None if env is not None else ".env", **values)  # type: ignore[call-arg]
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "?"
        key = _ALIASES.get(field, field)
        msg = "missing" if err["type"] == "missing" else err["msg"].removeprefix("Value error, ")
        raise ConfigError(key, msg) from None
    if settings.bots_file is not None and not settings.bots:
        settings = settings.model_copy(update={"bots": load_bots(settings.bots_file, source)})
    if not settings.bots and not settings.allow_anonymous:
        raise ConfigError(
            "RELAY_BOTS_FILE",
            "no bots registered; set RELAY_BOTS_FILE, or RELAY_ALLOW_ANONYMOUS=true for local "
            "development with an emulator",
        )
    if settings.bots and settings.allow_anonymous:
        raise ConfigError(
            "RELAY_ALLOW_ANONYMOUS", "anonymous mode is only for a relay with no bots registered"
        )
    if env is not None:
        settings._environment = source
    return settings
