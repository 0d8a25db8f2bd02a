"""``relay forget``: erase one person or one conversation from the relay's store.

An MSP that receives an erasure request (GDPR art. 17) for an end user must be able to answer it
without opening the database by hand. ``relay forget --user <Entra object id>`` deletes that
person's turns and, for their 1:1 chats, the whole conversation including its Neo session mapping;
``relay forget --conversation <id> [--bot <app id>]`` deletes one conversation. Both work on either
store (``RELAY_DATABASE_URL``), print what was deleted, and are idempotent: a second run deletes
nothing and says so. What Neo itself keeps is outside the relay; the README's "Erasure" section
says how an MSP erases it there.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from relay.config import load_settings
from relay.domain import BotId, ConversationId
from relay.errors import ConfigError
from relay.store import open_store
from relay.store.lifecycle import Erased


def add_parser(sub: Any) -> None:
    from relay.cli_help import add_command

    forget = add_command(
        sub,
        "forget",
        summary="erase what the relay holds about a person or a conversation",
        description="Delete a person's (or a conversation's) turns, session mappings, notes and "
        "claims from the relay's store. Prints what was deleted and the Neo sessions that held "
        "it (erase those at Neo); safe to repeat: a second run deletes nothing.",
        settings="RELAY_DATABASE_URL (or --database-url); without --database-url the relay's "
        "whole configuration must load (NEO_API_KEY, the bot registry)",
        exit_codes=[
            (0, "done (also when there was nothing to delete)"),
            (2, "bad arguments or configuration"),
        ],
    )
    who = forget.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", metavar="AAD_OBJECT_ID", help="the person's Entra object id")
    who.add_argument("--conversation", metavar="ID", help="a Teams conversation id")
    forget.add_argument(
        "--bot", metavar="APP_ID", help="with --conversation: only this bot's conversation"
    )
    forget.add_argument(
        "--database-url", metavar="URL", help="the store (default: RELAY_DATABASE_URL)"
    )
    forget.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.bot and not args.conversation:
        print("relay forget: --bot needs --conversation", file=sys.stderr)
        return 2
    try:
        url = args.database_url or load_settings().database_url
        erased = asyncio.run(_forget(url, args))
    except ConfigError as exc:
        print(f"relay forget: configuration error: {exc}", file=sys.stderr)
        return 2
    subject = f"user {args.user}" if args.user else f"conversation {args.conversation}"
    if args.bot:
        subject += f" of bot {args.bot}"
    print(f"relay forget {subject}: deleted {erased.describe()}")
    if erased.neo_sessions:
        # The relay cannot delete what Neo keeps: name the sessions for the MSP to erase there.
        sessions = ", ".join(sorted(erased.neo_sessions))
        print(f"Neo sessions that held this data (erase them in Neo too): {sessions}")
    return 0


async def _forget(url: str, args: argparse.Namespace) -> Erased:
    store = open_store(url)
    await store.open()
    try:
        if args.user:
            return await store.forget_user(args.user.strip())
        bot = BotId(args.bot.strip().lower()) if args.bot else None
        return await store.forget_conversation(ConversationId(args.conversation), bot)
    finally:
        await store.close()
