"""One shape for every ``relay`` subcommand's ``--help``: what it does, what it needs, how it ends.

Each subcommand lives beside the code it drives (relay/checks.py, relay/manifest/cli.py,
relay/devtools/), so each registers its own parser; this module gives them one formatter (the
description as written, every option's default shown) and one epilog layout — the settings the
command reads and its exit statuses — so ``relay X --help`` answers the same questions for every X.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions keep their line breaks; options with a real default say so (not flags)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or isinstance(action, argparse._VersionAction):
            return action.help
        return super()._get_help_string(action)


def add_command(
    sub: Any,
    name: str,
    *,
    summary: str,
    description: str,
    settings: str | None = None,
    exit_codes: Iterable[tuple[int, str]] = (),
) -> argparse.ArgumentParser:
    """``sub.add_parser(name)`` with the shared formatter and a Settings / Exit status epilog."""
    epilog = []
    if settings:
        epilog.append(f"settings:\n  {settings}")
    codes = list(exit_codes)
    if codes:
        epilog.append("exit status:\n" + "\n".join(f"  {code}  {text}" for code, text in codes))
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog="\n\n".join(epilog) or None,
        formatter_class=HelpFormatter,
    )
    return parser


def add_bots_file(parser: argparse.ArgumentParser) -> None:
    """``--bots-file``: the registry to read instead of ``RELAY_BOTS_FILE``."""
    parser.add_argument(
        "--bots-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="bot registry file (TOML or JSON) to use instead of RELAY_BOTS_FILE",
    )


CONFIG_ERROR = (2, "configuration error: one line on stderr names the setting to fix")
