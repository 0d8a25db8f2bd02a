"""``relay bots check`` and ``relay check``: prove the configuration works before traffic does.

A wrong bot secret, an expired certificate or a revoked Neo key otherwise shows up as a failed
turn in some customer's Teams chat. ``relay bots check`` acquires a real Bot Framework token for
every registered bot with the same :class:`relay.teams.credentials.TokenProvider` the service
uses, and prints ok or Entra's own error text (AADSTS…) per bot. ``relay check`` loads the
settings, opens and pings the store, and makes one cheap authenticated, read-only Neo call
(``GET /public-api/til-requests?page_size=1``, neo-chat-api.md a.5). Both print a table and exit
1 if anything failed (2 for a configuration error, like ``relay serve``). Secrets never appear
in the output: errors come from CredentialError / NeoClient, which scrub them. Each failure is one
readable line: Entra's own text (without its trace ids), or "cannot reach host:port: reason"
instead of urllib3's retry chain; the table is the whole answer, so retry warnings are not logged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.cli_help import CONFIG_ERROR, add_bots_file, add_command
from relay.config import AppType, BotConfig, Settings, load_settings
from relay.errors import ConfigError, RelayError
from relay.neo.client import NeoClient
from relay.store import open_store
from relay.teams.credentials import TokenProvider

CHECK_TIMEOUT = 30.0  # per check: a dead IdP or API must not hang the command


@dataclass(frozen=True)
class CheckRow:
    name: str
    detail: str
    ok: bool
    info: str


def credential_kind(bot: BotConfig) -> str:
    if bot.app_type is AppType.USER_ASSIGNED_MSI:
        return "managed identity"
    return "certificate" if bot.certificate is not None else "client secret"


async def check_bots(settings: Settings, bots: list[BotConfig]) -> list[CheckRow]:
    """One real token acquisition per bot, concurrently, each bounded by CHECK_TIMEOUT."""
    verify: str | bool = str(settings.login_ca_file) if settings.login_ca_file else True
    tokens = TokenProvider(settings, bots, verify=verify)

    async def one(bot: BotConfig) -> CheckRow:
        label = f"{bot.name or ''} ({credential_kind(bot)})".strip()
        started = time.monotonic()
        try:
            await asyncio.wait_for(tokens.token(bot.app_id), CHECK_TIMEOUT)
        except TimeoutError:
            return CheckRow(bot.app_id, label, False, f"no answer within {CHECK_TIMEOUT:.0f} s")
        except RelayError as exc:
            return CheckRow(bot.app_id, label, False, _entra_text(exc, bot))
        elapsed = (time.monotonic() - started) * 1000
        return CheckRow(bot.app_id, label, True, f"token acquired in {elapsed:.0f} ms")

    try:
        return list(await asyncio.gather(*(one(b) for b in bots)))
    finally:
        tokens.close()


def _entra_text(exc: RelayError, bot: BotConfig) -> str:
    text = str(exc)
    marker = f"for bot {bot.app_id}: "
    return readable(text.split(marker, 1)[1] if marker in text else text)


_HOST = re.compile(r"host='([^']+)', port=(\d+)")
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\"()\]]+)")
_ENTRA_TAIL = re.compile(r"\s+Trace ID:.*$")


def readable(text: str) -> str:
    """One line a person can act on, from an exception's text.

    requests/urllib3 nest the cause three deep ("HTTPSConnectionPool(…): Max retries exceeded …
    (Caused by NewConnectionError(…: [Errno 111] Connection refused))"): keep the host and the
    innermost reason. Entra's AADSTS text is kept, less its Trace/Correlation ID and timestamp.
    """
    text = " ".join(text.split())
    host = _HOST.search(text)
    if host and ("Max retries exceeded" in text or "Caused by" in text):
        errno = _ERRNO.search(text)
        if errno:
            reason = errno.group(1).strip()
        elif "timed out" in text.lower():
            reason = "timed out"
        elif "CERTIFICATE_VERIFY_FAILED" in text:
            reason = "its TLS certificate is not trusted (RELAY_LOGIN_CA_FILE?)"
        else:
            reason = text.split("Caused by ", 1)[-1].split("(", 1)[0]
        return f"cannot reach {host.group(1)}:{host.group(2)}: {reason}"
    return _ENTRA_TAIL.sub("", text)


async def check_relay(settings: Settings) -> list[CheckRow]:
    """Store (open + ping) and Neo (one authenticated read), after configuration loaded."""
    rows = [CheckRow("configuration", f"{len(settings.bots)} bot(s)", True, "settings valid")]
    rows.append(await _check_store(settings))
    rows.append(await _check_neo(settings))
    return rows


async def _check_store(settings: Settings) -> CheckRow:
    where = settings.database_url.split("://", 1)[0]
    try:
        store = open_store(settings.database_url)
        await asyncio.wait_for(store.open(), CHECK_TIMEOUT)
        try:
            await asyncio.wait_for(store.ping(), CHECK_TIMEOUT)
        finally:
            await store.close()
    except Exception as exc:  # any failure is the answer this command exists to give
        return CheckRow("store", where, False, readable(f"{type(exc).__name__}: {exc}"))
    return CheckRow("store", where, True, "open + ping ok")


async def _check_neo(settings: Settings) -> CheckRow:
    detail = f"{settings.neo_api_base_url} GET /public-api/til-requests"
    client = NeoClient(
        settings.neo_api_base_url,
        settings.neo_api_key,
        connect_timeout=settings.neo_connect_timeout,
        request_timeout=settings.neo_request_timeout,
    )
    try:
        await asyncio.wait_for(client.list_til_requests(page_size=1), CHECK_TIMEOUT)
    except TimeoutError:
        return CheckRow("neo", detail, False, f"no answer within {CHECK_TIMEOUT:.0f} s")
    except RelayError as exc:
        return CheckRow("neo", detail, False, readable(str(exc)))
    finally:
        await client.aclose()
    return CheckRow("neo", detail, True, "authenticated call ok")


def render(rows: list[CheckRow], headers: tuple[str, str]) -> str:
    """A plain-text table: name, detail, OK/FAIL and the reason."""
    table = [(headers[0], headers[1], "RESULT", "")]
    table += [(r.name, r.detail, "ok" if r.ok else "FAIL", r.info) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3]
        for row in table
    ]
    return "\n".join(line.rstrip() for line in lines)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The table is the command's whole answer: no retry warnings or library chatter around it."""
    root, handler = logging.getLogger(), logging.NullHandler()
    level = root.level
    root.addHandler(handler)  # also keeps logging's last-resort stderr handler out
    root.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _settings(command: str, bots_file: Path | None) -> Settings | None:
    overrides: dict[str, Any] = {"RELAY_BOTS_FILE": bots_file} if bots_file else {}
    try:
        return load_settings(None, **overrides)
    except ConfigError as exc:
        print(f"relay {command}: configuration error: {exc}", file=sys.stderr)
        return None


def cmd_bots_check(args: argparse.Namespace) -> int:
    settings = _settings("bots check", args.bots_file)
    if settings is None:
        return 2
    bots = list(settings.bots)
    if args.bot:
        bots = [b for b in bots if b.app_id == args.bot.strip().lower()]
    if not bots:
        print("relay bots check: no bots to check", file=sys.stderr)
        return 2
    with _quiet():
        rows = asyncio.run(check_bots(settings, bots))
    print(render(rows, ("BOT", "NAME (CREDENTIAL)")))
    failed = sum(not r.ok for r in rows)
    print(f"{len(rows) - failed} ok, {failed} failed")
    return 1 if failed else 0


def cmd_check(args: argparse.Namespace) -> int:
    settings = _settings("check", args.bots_file)
    if settings is None:
        print(render([CheckRow("configuration", "", False, "see the error above")], ("CHECK", "")))
        return 2
    with _quiet():
        rows = asyncio.run(check_relay(settings))
    print(render(rows, ("CHECK", "TARGET")))
    return 1 if any(not r.ok for r in rows) else 0


BOTS_CHECK_DESCRIPTION = """\
Acquire a real Bot Framework token for every registered bot (client secret, certificate or
managed identity), exactly as the relay does before it answers, and print one line per bot: ok,
or Entra's own error text (AADSTS…) or the reason the token service could not be reached."""
CHECK_DESCRIPTION = """\
Check that the relay can run: the settings and bot registry load, the store (SQLite or Redis)
opens and answers, and the Neo API accepts the key (one read-only call). One line per check."""
CHECK_SETTINGS = (
    "the same as `relay serve`: NEO_API_KEY, RELAY_BOTS_FILE (or --bots-file),\n"
    "  RELAY_DATABASE_URL, NEO_API_BASE_URL, RELAY_LOGIN_URL …, from the environment and .env"
)


def add_parsers(sub: Any) -> None:
    """Register ``bots check`` and ``check`` on the top-level subparsers of relay/cli.py."""
    bots = sub.add_parser(
        "bots", help="the bot registry", description="Commands about the bot registry."
    )
    bsub = bots.add_subparsers(dest="bots_command", required=True, metavar="COMMAND")
    check = add_command(
        bsub,
        "check",
        summary="get a Bot Framework token for every bot; report each",
        description=BOTS_CHECK_DESCRIPTION,
        settings=CHECK_SETTINGS,
        exit_codes=[(0, "every bot got a token"), (1, "at least one bot failed"), CONFIG_ERROR],
    )
    check.add_argument("--bot", help="only this bot (its Entra app id)")
    add_bots_file(check)
    check.set_defaults(func=cmd_bots_check)
    relay_check = add_command(
        sub,
        "check",
        summary="check configuration, store and Neo API access",
        description=CHECK_DESCRIPTION,
        settings=CHECK_SETTINGS,
        exit_codes=[(0, "every check passed"), (1, "a check failed"), CONFIG_ERROR],
    )
    add_bots_file(relay_check)
    relay_check.set_defaults(func=cmd_check)
