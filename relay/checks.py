"""``relay bots check`` and ``relay check``: prove the configuration works before traffic does.

A wrong bot secret, an expired certificate or a revoked Neo key otherwise shows up as a failed
turn in some customer's Teams chat. ``relay bots check`` acquires a real Bot Framework token for
every registered bot with the same :class:`relay.teams.credentials.TokenProvider` the service
uses, and prints ok or Entra's own error text (AADSTS…) per bot. ``relay check`` loads the
settings, opens and pings the store, and makes one cheap authenticated, read-only Neo call
(``GET /public-api/til-requests?page_size=1``, neo-chat-api.md a.5). Both print a table and exit
1 if anything failed (2 for a configuration error, like ``relay serve``). Secrets never appear
in the output: errors come from CredentialError / NeoClient, which scrub them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Any

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
    return text.split(marker, 1)[1] if marker in text else text


async def check_relay(settings: Settings) -> list[CheckRow]:
    """Store (open + ping) and Neo (one authenticated read), after configuration loaded."""
    rows = [CheckRow("configuration", f"{len(settings.bots)} bot(s)", True, "ok")]
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
        return CheckRow("store", where, False, f"{type(exc).__name__}: {exc}")
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
        return CheckRow("neo", detail, False, str(exc))
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


def _settings(command: str) -> Settings | None:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"relay {command}: configuration error: {exc}", file=sys.stderr)
        return None


def cmd_bots_check(args: argparse.Namespace) -> int:
    settings = _settings("bots check")
    if settings is None:
        return 2
    bots = list(settings.bots)
    if args.bot:
        bots = [b for b in bots if b.app_id == args.bot.strip().lower()]
    if not bots:
        print("relay bots check: no bots to check", file=sys.stderr)
        return 2
    rows = asyncio.run(check_bots(settings, bots))
    print(render(rows, ("BOT", "NAME (CREDENTIAL)")))
    failed = sum(not r.ok for r in rows)
    print(f"{len(rows) - failed} ok, {failed} failed")
    return 1 if failed else 0


def cmd_check(args: argparse.Namespace) -> int:
    settings = _settings("check")
    if settings is None:
        print(render([CheckRow("configuration", "", False, "see the error above")], ("CHECK", "")))
        return 2
    rows = asyncio.run(check_relay(settings))
    print(render(rows, ("CHECK", "TARGET")))
    return 1 if any(not r.ok for r in rows) else 0


def add_parsers(sub: Any) -> None:
    """Register ``bots check`` and ``check`` on the top-level subparsers of relay/cli.py."""
    bots = sub.add_parser("bots", help="the bot registry")
    bsub = bots.add_subparsers(dest="bots_command", required=True)
    check = bsub.add_parser("check", help="get a Bot Framework token for every bot; report each")
    check.add_argument("--bot", help="only this bot (its Entra app id)")
    check.set_defaults(func=cmd_bots_check)
    relay_check = sub.add_parser("check", help="check configuration, store and Neo API access")
    relay_check.set_defaults(func=cmd_check)
