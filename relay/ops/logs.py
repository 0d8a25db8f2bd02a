"""Logging set-up: a human format for local use, JSON lines for production, both correlated.

Every line logged while a turn runs carries that turn's correlation ids (turn, activity, Neo
session, bot) without the code that logs having to pass them: the worker binds a
:func:`turn_context` around the turn, a :class:`contextvars.ContextVar` carries it into every task
the turn starts, and :class:`ContextFilter` copies it onto each record. Ids that change during the
turn (the Neo session id is learnt half-way) are read from the turn when the line is written.

Log records never carry secrets: the relay logs ids and reasons, not headers or bodies, and
:func:`redact` masks anything shaped like a Neo key, a bearer token, a JWT or an Entra client
secret, plus the exact secret values registered with :func:`register_secrets` (the Neo key and
every bot secret, at start-up), as a last line of defence over the whole formatted line — message,
extra fields and tracebacks alike (DESIGN.md invariant 7).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from relay.config import BotConfig, Settings

_SECRET = re.compile(
    r"(neo_sk_[A-Za-z0-9]+_)[A-Za-z0-9_\-]+"
    r"|(Bearer\s+)[A-Za-z0-9._\-~+/=]+"
    r"|(eyJ[A-Za-z0-9_\-]{8,})\.[A-Za-z0-9._\-]+"
    # Entra client secrets: 3 chars, a digit, "Q~", then 34 more (e.g. "abc8Q~..."); a longer run
    # is masked whole rather than leaving a tail.
    r"|()\b[A-Za-z0-9_\-.]{3}[0-9]Q~[A-Za-z0-9_\-.~]{31,}"
)
_KNOWN_SECRETS: set[str] = set()
_MIN_SECRET_LEN = 6  # shorter "secrets" would redact ordinary words


def register_secrets(values: Iterable[str]) -> None:
    """Remember exact secret values (the Neo key, bot secrets) so no log line can carry them."""
    for value in values:
        if value and len(value) >= _MIN_SECRET_LEN:
            _KNOWN_SECRETS.add(value)


def mask(text: str, secret: str) -> str:
    """``text`` with ``secret`` replaced by ``***``, if it is long enough to be one (masking a
    one-letter "secret" would garble every word holding that letter)."""
    return text.replace(secret, "***") if len(secret) >= _MIN_SECRET_LEN else text


def bot_secret_values(bots: Iterable[BotConfig]) -> list[str]:
    """The bots' secrets and the body lines of their certificate private keys."""
    values: list[str] = []
    for bot in bots:
        if bot.secret is not None:
            values.append(bot.secret.get_secret_value())
        if bot.certificate is not None:
            values.extend(
                line
                for line in bot.certificate.private_key.get_secret_value().splitlines()
                if len(line) >= 16 and not line.startswith("-----")
            )
    return values


def secret_values(settings: Settings) -> list[str]:
    """Every secret a :class:`Settings` holds: the Neo key, bot secrets and keys, a URL password."""
    values = [settings.neo_api_key.get_secret_value(), *bot_secret_values(settings.bots)]
    password = urlsplit(settings.database_url).password
    if password:
        values.append(password)
    return values


def redact(text: str) -> str:
    """``text`` with every secret-shaped substring and every registered secret masked."""
    text = _SECRET.sub(lambda m: (m.group(1) or m.group(2) or m.group(3) or "") + "***", text)
    for secret in _KNOWN_SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class RedactingFilter(logging.Filter):
    """Masks secrets in the record's message (for handlers that do not use our formatters)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


# ----------------------------------------------------------------------------------------------
# Correlation context
# ----------------------------------------------------------------------------------------------

CONTEXT_KEYS = ("turn_id", "activity_id", "session_id", "request_id", "bot_id", "retry_policy")


class TurnLike(Protocol):
    """The parts of :class:`relay.domain.Turn` a log line is correlated by."""

    @property
    def turn_id(self) -> str: ...
    @property
    def activity_id(self) -> str: ...
    @property
    def session_id(self) -> str | None: ...
    @property
    def bot_id(self) -> str: ...


_turn: ContextVar[TurnLike | None] = ContextVar("relay_log_turn", default=None)
_fields: ContextVar[dict[str, str] | None] = ContextVar("relay_log_fields", default=None)


def current_fields() -> dict[str, str]:
    """The correlation ids in force here: the bound turn's, then any bound with log_context."""
    out: dict[str, str] = {}
    turn = _turn.get()
    if turn is not None:
        out["turn_id"] = turn.turn_id
        out["activity_id"] = turn.activity_id
        out["bot_id"] = turn.bot_id
        if turn.session_id:
            out["session_id"] = turn.session_id
    extra = _fields.get()
    if extra:
        out.update(extra)
    return out


@contextlib.contextmanager
def turn_context(turn: TurnLike) -> Iterator[None]:
    """Correlate every log line inside the block (and tasks it starts) with ``turn``."""
    token = _turn.set(turn)
    try:
        yield
    finally:
        _turn.reset(token)


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Add correlation ids (e.g. ``activity_id``, ``request_id``) to lines inside the block."""
    merged = dict(_fields.get() or {})
    merged.update({k: v for k, v in fields.items() if v is not None})
    token = _fields.set(merged)
    try:
        yield
    finally:
        _fields.reset(token)


class ContextFilter(logging.Filter):
    """Copies the correlation context onto the record; ``extra=`` given at the call site wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in current_fields().items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


# ----------------------------------------------------------------------------------------------
# Formats
# ----------------------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, correlation ids, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """``time level logger: message [turn=… session=…]`` for a terminal."""

    _SHORT: ClassVar[dict[str, str]] = {
        "turn_id": "turn",
        "session_id": "session",
        "request_id": "request",
    }

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        tags = [
            f"{self._SHORT[key]}={value}"
            for key in self._SHORT
            if (value := getattr(record, key, None)) is not None
        ]
        if tags:
            first, nl, rest = line.partition("\n")
            line = f"{first} [{' '.join(tags)}]{nl}{rest}"
        return redact(line)


def configure_logging(
    level: str = "INFO", *, json_format: bool = False, secrets: Iterable[str] = ()
) -> None:
    """Route the root logger to stderr in the chosen format, correlated and redacted."""
    register_secrets(secrets)
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if json_format else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log adds a line per Teams request; keep it at WARNING unless debugging.
    logging.getLogger("aiohttp.access").setLevel(
        logging.WARNING if level.upper() != "DEBUG" else logging.DEBUG
    )
    logging.getLogger("msal").setLevel(logging.WARNING)
    # httpx/httpcore log every Neo request at INFO ("HTTP Request: …"): a line per call costs
    # CPU on the hot path and says nothing the relay's own logs do not (bench: ~2 % of CPU).
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(
            logging.WARNING if level.upper() != "DEBUG" else logging.DEBUG
        )
