"""Command line: ``relay serve`` runs the service; the other subcommands help set it up.

Configuration errors end the process with one line naming the key to fix and exit status 2, before
anything listens. Every subcommand's ``--help`` says what it does, the settings it reads and its
exit statuses (relay/cli_help.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from aiohttp import web

from relay.cli_help import CONFIG_ERROR, HelpFormatter, add_bots_file, add_command
from relay.config import Settings, load_settings
from relay.errors import ConfigError
from relay.event_loop import new_event_loop
from relay.ops.logs import configure_logging, secret_values

log = logging.getLogger("relay")


def _settings_or_exit(bots_file: Path | None = None) -> Settings:
    try:
        overrides: dict[str, Any] = {"RELAY_BOTS_FILE": bots_file} if bots_file else {}
        return load_settings(None, **overrides)
    except ConfigError as exc:
        print(f"relay: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings_or_exit(args.bots_file)
    configure_logging(
        settings.log_level,
        json_format=args.json_logs or settings.log_format == "json",
        secrets=secret_values(settings),
    )
    from relay.app import create_app, freeze_startup_heap

    app = create_app(settings)
    app.on_startup.append(freeze_startup_heap)  # after the components: they are frozen too
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    loop, loop_name = new_event_loop(settings.uvloop)
    log.info("listening on %s:%d, event loop %s", host, port, loop_name)
    # run_app handles SIGINT/SIGTERM: stop accepting, run on_shutdown (drain turns), exit 0.
    web.run_app(
        app,
        host=host,
        port=port,
        print=None,
        shutdown_timeout=settings.shutdown_grace + 5,
        loop=loop,
    )
    return 0


SERVE_DESCRIPTION = """\
Run the relay: Teams posts each bot's activities to POST /api/messages; the relay answers
through the Neo API, streaming. Also serves /healthz, /readyz and /metrics. SIGTERM (or Ctrl-C)
stops taking new messages, lets running answers finish (RELAY_SHUTDOWN_GRACE), and exits 0."""
SERVE_SETTINGS = (
    "NEO_API_KEY, and RELAY_BOTS_FILE (or --bots-file) or RELAY_ALLOW_ANONYMOUS=true; every\n"
    "  other setting has a default (README, Configuration). Read from the environment and .env."
)


def package_version() -> str:
    try:
        return version("neo-teams-relay")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay",
        description="Microsoft Teams ↔ Neo chat relay: one service, many Teams bots, streamed "
        "answers.\nStart with `relay demo` (no account needed); run `relay COMMAND --help` for "
        "any command.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {package_version()} (neo-teams-relay)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = add_command(
        sub,
        "serve",
        summary="run the relay (POST /api/messages)",
        description=SERVE_DESCRIPTION,
        settings=SERVE_SETTINGS,
        exit_codes=[(0, "stopped by SIGTERM/SIGINT after draining"), CONFIG_ERROR],
    )
    serve.add_argument("--host", default=None, help="listen address (overrides RELAY_HOST)")
    serve.add_argument("--port", type=int, default=None, help="port (overrides RELAY_PORT)")
    serve.add_argument(
        "--json-logs", action="store_true", help="one JSON object per log line (RELAY_LOG_FORMAT)"
    )
    add_bots_file(serve)
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
    from relay.devtools.chat_repl import CHAT_DESCRIPTION, add_chat_arguments, run_chat
    from relay.devtools.demo import DEMO_DESCRIPTION, add_demo_arguments, run_demo

    demo = add_command(
        sub,
        "demo",
        summary="run the relay with a local Neo emulator: no key or account needed",
        description=DEMO_DESCRIPTION,
        settings="none: the demo sets its own (it ignores the environment and .env)",
        exit_codes=[
            (0, "stopped with Ctrl-C"),
            (1, "cannot start: the port is taken, or a demo already runs in that --dir"),
        ],
    )
    add_demo_arguments(demo)
    demo.set_defaults(func=run_demo)
    chat = add_command(
        sub,
        "chat",
        summary="chat with a running `relay demo` from the terminal",
        description=CHAT_DESCRIPTION,
        settings="none: reads demo.json in --dir, written by the running `relay demo`",
        exit_codes=[(0, "/quit, Ctrl-D or Ctrl-C"), (1, "no demo is running in --dir")],
    )
    add_chat_arguments(chat)
    chat.set_defaults(func=run_chat)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
