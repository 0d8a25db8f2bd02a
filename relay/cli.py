"""Command line: ``relay serve`` runs the service.

Configuration errors end the process with one line naming the key to fix and exit status 2, before
anything listens (issue "The spine", item 2).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from aiohttp import web

from relay.config import Settings, load_settings
from relay.errors import ConfigError
from relay.ops.logs import configure_logging, secret_values

log = logging.getLogger("relay")


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"relay: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings_or_exit()
    configure_logging(
        settings.log_level,
        json_format=args.json_logs or settings.log_format == "json",
        secrets=secret_values(settings),
    )
    from relay.app import create_app

    app = create_app(settings)
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    log.info("listening on %s:%d", host, port)
    # run_app handles SIGINT/SIGTERM: stop accepting, run on_shutdown (drain turns), exit 0.
    web.run_app(app, host=host, port=port, print=None, shutdown_timeout=settings.shutdown_grace + 5)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description="Microsoft Teams ↔ Neo chat relay")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the relay (POST /api/messages)")
    serve.add_argument("--host", default=None, help="override RELAY_HOST")
    serve.add_argument("--port", type=int, default=None, help="override RELAY_PORT")
    serve.add_argument("--json-logs", action="store_true", help="one JSON object per log line")
    serve.set_defaults(func=cmd_serve)
    _add_demo_commands(sub)
    _add_bot_commands(sub)
    _add_forget_command(sub)
    return parser


def _add_forget_command(sub: Any) -> None:
    """``relay forget``: erase a person or a conversation (relay/forget.py)."""
    from relay.forget import add_parser

    add_parser(sub)


def _add_bot_commands(sub: Any) -> None:
    """``relay manifest build``, ``relay bots check``, ``relay check`` (white-label bots)."""
    from relay.checks import add_parsers as add_check_parsers
    from relay.manifest.cli import add_parser as add_manifest_parser

    add_manifest_parser(sub)
    add_check_parsers(sub)


def _add_demo_commands(sub: Any) -> None:
    """``relay demo`` / ``relay chat``: the relay on loopback with emulators (relay/devtools)."""
    from relay.devtools.chat_repl import add_chat_arguments, run_chat
    from relay.devtools.demo import add_demo_arguments, run_demo

    demo = sub.add_parser("demo", help="run the relay with a local Neo emulator: no key needed")
    add_demo_arguments(demo)
    demo.set_defaults(func=run_demo)
    chat = sub.add_parser("chat", help="chat with a running `relay demo` from the terminal")
    add_chat_arguments(chat)
    chat.set_defaults(func=run_chat)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
