"""``relay manifest build``: write a validated Teams app package for one bot or for every bot.

The bots come from ``RELAY_BOTS_FILE`` (or ``--bots-file``) without resolving their secrets, so
packages can be built on a machine that never sees a credential. Branding comes from each bot's
``[bots.branding]`` table; flags override it (for every selected bot). Every package is validated
before anything is written; the first problem ends the command with one line naming the field
and exit status 2, like any configuration error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from relay.cli_help import add_bots_file, add_command
from relay.config import BotConfig, load_bots
from relay.errors import ConfigError
from relay.manifest.build import (
    MANIFEST_EXTRA,
    MANIFEST_VERSION,
    AppPackage,
    build_package,
    effective_branding,
)

_FLAGS = (
    ("short_name", "short app name (≤ 30)"),
    ("full_name", "full app name (≤ 100)"),
    ("short_description", "short description (≤ 80)"),
    ("full_description", "full description (≤ 4000)"),
    ("developer_name", "developer (MSP) name (≤ 32)"),
    ("website_url", "developer website (https)"),
    ("privacy_url", "privacy statement (https)"),
    ("terms_of_use_url", "terms of use (https)"),
    ("accent_color", "accent colour, #RRGGBB"),
    ("version", "app version (semver)"),
    ("manifest_id", "Teams app id (GUID); only with --bot"),
    ("color_icon", "192×192 PNG colour icon"),
    ("outline_icon", "32×32 PNG white outline on transparent"),
)


BUILD_DESCRIPTION = f"""\
Write one Teams app package (manifest.json + two icons, zipped) per registered bot, ready to
upload in Teams admin or Developer Portal. Names, descriptions, URLs, colour and icons come from
each bot's [bots.branding] table; the options below override them for every selected bot.
Every package is validated against the official manifest schema v{MANIFEST_VERSION} before any
is written. Secrets are not read, so this runs where no credential is available. Needs the
manifest extra: {MANIFEST_EXTRA}"""


def add_parser(sub: Any) -> None:
    """Register ``manifest build`` on the top-level subparsers of relay/cli.py."""
    manifest = sub.add_parser(
        "manifest",
        help="Teams app packages for the registered bots",
        description="Commands that make Teams app packages.",
    )
    msub = manifest.add_subparsers(dest="manifest_command", required=True, metavar="COMMAND")
    build = add_command(
        msub,
        "build",
        summary=f"write one Teams app package (manifest v{MANIFEST_VERSION}) per bot",
        description=BUILD_DESCRIPTION,
        settings="RELAY_BOTS_FILE (or --bots-file); nothing else",
        exit_codes=[
            (0, "every package written"),
            (2, "a registry or branding problem: one line names the field; nothing written"),
        ],
    )
    build.add_argument("--bot", help="only this bot (its Entra app id)")
    add_bots_file(build)
    build.add_argument("--out", type=Path, default=Path("build/teams-apps"), help="output folder")
    build.add_argument("--public-host", help="the relay's public host name, added to validDomains")
    for name, text in _FLAGS:
        kind: Any = Path if name.endswith("_icon") else str
        build.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help=text)
    build.set_defaults(func=cmd_build)


def cmd_build(args: argparse.Namespace) -> int:
    try:
        packages = _build_all(args)
    except ConfigError as exc:
        print(f"relay manifest: {exc}", file=sys.stderr)
        return 2
    for package in packages:  # written only once every package validated
        path = package.write(args.out)
        print(
            f"{package.bot_id}: {path} (app id {package.manifest['id']}, "
            f'"{package.manifest["name"]["short"]}", manifest v{MANIFEST_VERSION})'
        )
    return 0


def _build_all(args: argparse.Namespace) -> list[AppPackage]:
    bots = _select(args)
    overrides = {name: getattr(args, name) for name, _ in _FLAGS}
    if overrides["manifest_id"] and len(bots) > 1:
        raise ConfigError("--manifest-id", "only with --bot: every bot needs its own app id")
    packages = [
        build_package(bot, effective_branding(bot, overrides), public_host=args.public_host)
        for bot in bots
    ]
    ids = [p.manifest["id"] for p in packages]
    if len(set(ids)) != len(ids):
        raise ConfigError("branding.manifest_id", "two bots would share one Teams app id")
    return packages


def _select(args: argparse.Namespace) -> list[BotConfig]:
    path = args.bots_file or (
        Path(os.environ["RELAY_BOTS_FILE"]) if os.environ.get("RELAY_BOTS_FILE") else None
    )
    if path is None:
        raise ConfigError("RELAY_BOTS_FILE", "no registry: set RELAY_BOTS_FILE or pass --bots-file")
    bots = list(load_bots(path, credentials=False))
    if args.bot:
        bots = [b for b in bots if b.app_id == args.bot.strip().lower()]
        if not bots:
            raise ConfigError("--bot", f"{args.bot} is not in {path}")
    if not bots:
        raise ConfigError("RELAY_BOTS_FILE", f"{path} registers no bots")
    return bots
