"""The relay's durable state: the ``Store`` protocol and ``open_store``, which picks a backend.

Callers depend on ``Store`` and get an instance from ``open_store(settings.database_url)``, so the
choice of backend is one configuration value (``RELAY_DATABASE_URL``) rather than an import. The
URL is never echoed in errors: a Redis URL may carry a password (invariant 7).
"""

from __future__ import annotations

from relay.errors import ConfigError
from relay.store.base import Store
from relay.store.lifecycle import DEFAULT_RETENTION
from relay.store.redis import RedisStore
from relay.store.sqlite import SqliteStore

__all__ = ["RedisStore", "SqliteStore", "Store", "open_store"]

_KEY = "RELAY_DATABASE_URL"
_SQLITE_PREFIX = "sqlite:///"


def open_store(database_url: str, *, retention: float = DEFAULT_RETENTION) -> Store:
    """The store a URL names, not yet opened: the caller awaits ``open()`` (and ``close()``).

    - ``sqlite:///relative/path.db`` — relative to the working directory;
    - ``sqlite:////abs/path.db`` — absolute (four slashes: three of the scheme, one of the path);
    - ``sqlite:///:memory:`` — in memory, gone on close (tests, demos);
    - ``redis://[user:password@]host[:port][/db][?prefix=relay:]`` (``rediss://`` for TLS) —
      shared by several replicas; keys start with ``prefix`` (default ``relay:``).

    ``retention`` is how long finished turns, claims and idle sessions are kept
    (``RELAY_RETENTION``, ``relay.store.lifecycle``). Anything else raises ``ConfigError`` naming
    ``RELAY_DATABASE_URL``.
    """
    url = database_url.strip()
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ConfigError(_KEY, "expected a URL such as sqlite:///var/relay.db")
    if scheme in ("redis", "rediss"):
        return RedisStore.from_url(url, retention=retention)
    if scheme != "sqlite":
        raise ConfigError(_KEY, f"unsupported scheme {scheme!r} (use sqlite:///path or redis://)")
    if url[: len(_SQLITE_PREFIX)].lower() != _SQLITE_PREFIX:
        # sqlite://host/path: SQLite has no host, and guessing what was meant loses data.
        raise ConfigError(_KEY, "sqlite URL must be sqlite:///relative or sqlite:////absolute")
    path = url[len(_SQLITE_PREFIX) :]
    if not path:
        raise ConfigError(_KEY, "sqlite URL has no database path")
    if "?" in path or "#" in path:
        # SQLAlchemy-style options would otherwise silently become part of the file name.
        raise ConfigError(_KEY, "sqlite URL options (?...) are not supported")
    return SqliteStore(path, retention=retention)
