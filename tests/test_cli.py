"""The ``relay`` command line as a newcomer meets it: ``--version`` and complete ``--help`` texts.

Every subcommand's help must say what it does, which settings it reads, its exit statuses, and
each option's default; every command that reads the bot registry takes ``--bots-file``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import version

import pytest

from relay.cli import build_parser

LEAVES = ["serve", "demo", "chat", "check", "bots check", "manifest build", "forget"]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found[name] = child
                found.update({f"{name} {k}": v for k, v in _subparsers(child).items()})
    return found


def test_version_prints_the_installed_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "relay", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"relay {version('neo-teams-relay')} (neo-teams-relay)"


def test_every_command_is_covered_here() -> None:
    commands = _subparsers(build_parser())
    leaves = {name for name, p in commands.items() if not _subparsers(p)}
    assert leaves >= set(LEAVES)


@pytest.mark.parametrize("command", LEAVES)
def test_every_command_help_says_what_it_does_needs_and_returns(command: str) -> None:
    parser = _subparsers(build_parser())[command]
    text = parser.format_help()
    assert len(parser.description or "") > 60, text
    assert "settings:\n" in text
    assert "exit status:\n  0  " in text
    for action in parser._actions:
        if action.default not in (None, False, argparse.SUPPRESS) and action.help:
            assert "(default: " in (parser._get_formatter()._expand_help(action) or ""), action


@pytest.mark.parametrize("command", ["serve", "check", "bots check", "manifest build"])
def test_every_command_that_reads_the_registry_takes_bots_file(command: str) -> None:
    parser = _subparsers(build_parser())[command]
    assert "--bots-file" in parser._option_string_actions


def test_defaults_are_shown_for_options_that_have_one() -> None:
    text = _subparsers(build_parser())["manifest build"].format_help()
    assert "(default: build/teams-apps)" in " ".join(text.split())
