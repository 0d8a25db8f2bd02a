"""``relay demo``: the real relay, on a laptop, answering in a minute — no cloud account, no key.

Someone evaluating the relay cannot start with its real job (a Neo API key, registered Teams bots),
so this module runs the production code path against loopback stand-ins: the relay itself
(``create_app``, embedded SQLite in the demo directory), the Neo API emulator the tests use, with
:class:`~relay.devtools.demo_script.DemoScript` streaming paced AI SDK v6 answers, and — unless
``--anonymous`` — the local token issuer with one demo bot, so inbound Bot Framework tokens and
outbound msal tokens are checked for real. Everything binds 127.0.0.1 only. When ready it writes
``demo.json`` (relay URL, the demo bot, and the throwaway issuer's signing key) for ``relay chat``,
which plays the Teams channel; anonymous mode also suits the Microsoft 365 Agents Playground,
which sends no tokens. One demo owns its directory (a lock held while it runs): a second
``relay demo`` on the same directory refuses instead of wiping the running demo's state.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from relay.devtools.demo_script import DemoScript
from relay.devtools.issuer import LocalIssuer
from relay.devtools.neo_emulator import NeoEmulator

log = logging.getLogger(__name__)

DEFAULT_DIR = Path(".relay-demo")
DEMO_FILE = "demo.json"
LOCK_FILE = "demo.lock"
DEFAULT_PORT = 3978  # the Agents Playground's default bot endpoint port
DEFAULT_CHUNK_DELAY = 0.06  # 40–80 ms per chunk is what a hosted model's stream looks like
# Matches the Neo key format (neo_sk_<env>_<secret>); the emulator accepts only this key.
DEMO_NEO_KEY = "neo_sk_demo_localEmulatorOnly0001"
DEMO_BOT_ID = "0de40000-0000-4000-8000-00000000b07a"
DEMO_TENANT_ID = "0de40000-0000-4000-8000-0000000e7a1e"
DEMO_BOT_NAME = "Neo Demo"
# Where replies may go: relay chat's connector (127.0.0.1) and the Agents Playground (localhost).
DEMO_SERVICE_URLS = "http://127.0.0.1,http://localhost"


DEMO_DESCRIPTION = """\
Run the real relay on 127.0.0.1 with a local Neo API emulator (scripted, streamed answers) and,
unless --anonymous, a local token issuer with one demo bot, so every Bot Framework token is
checked for real. Then talk to it with `relay chat` in another terminal, or (--anonymous) with
the Microsoft 365 Agents Playground. State lives in --dir and is reset at each start; one demo
per directory."""


class DemoNotRunning(Exception):
    """No usable ``demo.json``: ``relay demo`` is not running in that directory."""


class DemoAlreadyRunning(Exception):
    """Another ``relay demo`` holds the directory's lock."""


@dataclass(frozen=True)
class DemoInfo:
    """What ``relay chat`` needs to play the Teams channel against a running demo."""

    relay_url: str
    neo_url: str
    bot_id: str
    bot_name: str
    tenant_id: str
    anonymous: bool
    pid: int
    issuer: str | None = None
    signing_kid: str | None = None
    # The throwaway local issuer's key: only ever valid for this demo run, on loopback.
    signing_key_pem: SecretStr | None = None
    bot_token_key_pem: str | None = None

    @property
    def messages_url(self) -> str:
        return f"{self.relay_url}/api/messages"

    def save(self, path: Path) -> None:
        data = asdict(self)
        if self.signing_key_pem is not None:
            data["signing_key_pem"] = self.signing_key_pem.get_secret_value()
        tmp = path.with_suffix(".tmp")
        # Owner-only: the file holds a signing key, even if a throwaway one.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2)
        tmp.replace(path)

    @classmethod
    def load(cls, directory: Path) -> DemoInfo:
        path = directory / DEMO_FILE
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            key = data.pop("signing_key_pem", None)
            return cls(**data, signing_key_pem=SecretStr(key) if key else None)
        except FileNotFoundError:
            raise DemoNotRunning(
                f"no demo found in {directory}/ — start `relay demo` first (in another terminal)"
            ) from None
        except (ValueError, TypeError) as exc:
            raise DemoNotRunning(f"{path} is not a demo file: {exc}") from None


class DemoEnvironment:
    """The relay, the Neo emulator and (signed mode) the local issuer, started and stopped together.

    Usage::

        demo = DemoEnvironment(Path(".relay-demo"), port=0)
        info = await demo.start()   # also writes .relay-demo/demo.json
        ...
        await demo.stop()
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int = DEFAULT_PORT,
        anonymous: bool = False,
        chunk_delay: float = DEFAULT_CHUNK_DELAY,
        log_level: str = "INFO",
    ) -> None:
        self.directory = directory
        self.port = port
        self.anonymous = anonymous
        self.neo = NeoEmulator(
            DEMO_NEO_KEY, script=DemoScript(), chunk_delay=chunk_delay, first_chunk_delay=0.3
        )
        self.issuer: LocalIssuer | None = None
        self.log_level = log_level
        self._runner: web.AppRunner | None = None
        self._lock: int | None = None

    def _claim_directory(self) -> None:
        """Hold ``demo.lock`` for this run; the kernel releases it if the process dies."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise DemoAlreadyRunning(self._running_description()) from None
        self._lock = fd

    def _running_description(self) -> str:
        try:
            other = DemoInfo.load(self.directory)
        except DemoNotRunning:
            where = "it is still starting"
        else:
            where = f"pid {other.pid}, {other.messages_url}"
        return (
            f"a demo is already running in {self.directory}/ ({where}); use that one, "
            "stop it with Ctrl-C, or pass another --dir"
        )

    def _fresh_directory(self) -> None:
        # Each run starts clean: sessions and journaled turns of a previous run point at an
        # emulator that no longer exists.
        self.directory.mkdir(parents=True, exist_ok=True)
        for name in (DEMO_FILE, "relay.db", "relay.db-wal", "relay.db-shm", "bots.toml"):
            (self.directory / name).unlink(missing_ok=True)

    def _relay_env(self, neo_url: str) -> dict[str, str]:
        env = {
            "NEO_API_KEY": DEMO_NEO_KEY,
            "NEO_API_BASE_URL": neo_url,
            "RELAY_DATABASE_URL": f"sqlite:///{(self.directory / 'relay.db').resolve()}",
            "RELAY_SERVICE_URL_ALLOWLIST": DEMO_SERVICE_URLS,
            "RELAY_LOG_LEVEL": self.log_level,
            "RELAY_SHUTDOWN_GRACE": "2",
        }
        if self.anonymous:
            env["RELAY_ALLOW_ANONYMOUS"] = "true"
            return env
        issuer = self.issuer = LocalIssuer().start()
        secret = secrets.token_urlsafe(24)  # lives only in this process: msal ↔ local issuer
        issuer.register_client(DEMO_BOT_ID, secret, DEMO_TENANT_ID)
        bots = self.directory / "bots.toml"
        bots.write_text(
            "[[bots]]\n"
            f'app_id = "{DEMO_BOT_ID}"\napp_type = "SingleTenant"\n'
            f'tenant_id = "{DEMO_TENANT_ID}"\nname = "{DEMO_BOT_NAME}"\n'
            'secret_env = "RELAY_DEMO_BOT_SECRET"\n'
        )
        env.update(
            {
                "RELAY_DEMO_BOT_SECRET": secret,
                "RELAY_BOTS_FILE": str(bots),
                "RELAY_OPENID_METADATA_URL": issuer.openid_metadata_url,
                "RELAY_TOKEN_ISSUER": issuer.issuer,
                "RELAY_LOGIN_URL": issuer.login_url,
                "RELAY_LOGIN_CA_FILE": issuer.ca_file,
            }
        )
        env.setdefault("RELAY_METRICS_PORT", "0")  # never clash with a relay already on 9464
        return env

    async def start(self) -> DemoInfo:
        """Start everything on 127.0.0.1, then write ``demo.json``; returns what it wrote."""
        from relay.app import create_app
        from relay.config import load_settings

        self._claim_directory()
        self._fresh_directory()
        neo_url = await self.neo.start()
        settings = load_settings(self._relay_env(neo_url))
        self._runner = web.AppRunner(create_app(settings), access_log=None, shutdown_timeout=2)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        port = self._runner.addresses[0][1]
        issuer = self.issuer
        info = DemoInfo(
            relay_url=f"http://127.0.0.1:{port}",
            neo_url=neo_url,
            bot_id=DEMO_BOT_ID,
            bot_name=DEMO_BOT_NAME,
            tenant_id=DEMO_TENANT_ID,
            anonymous=self.anonymous,
            pid=os.getpid(),
            issuer=issuer.issuer if issuer else None,
            signing_kid=issuer.default_kid if issuer else None,
            signing_key_pem=SecretStr(issuer.signing_key_pem()) if issuer else None,
            bot_token_key_pem=issuer.bot_token_public_key_pem() if issuer else None,
        )
        info.save(self.directory / DEMO_FILE)
        return info

    async def stop(self) -> None:
        if self._lock is None:
            return  # never claimed the directory (another demo has it): nothing of ours to stop
        (self.directory / DEMO_FILE).unlink(missing_ok=True)
        if self._runner is not None:
            await self._runner.cleanup()  # drains running turns (RELAY_SHUTDOWN_GRACE)
            self._runner = None
        await self.neo.stop()
        if self.issuer is not None:
            self.issuer.stop()
            self.issuer = None
        with contextlib.suppress(OSError):
            os.close(self._lock)  # releases the lock
        self._lock = None


def relay_command() -> str:
    """How to run ``relay`` again as this process was run, so printed commands work as typed.

    ``make demo`` runs ``.venv/bin/relay``, which is not on PATH; ``python -m relay`` has no
    script at all.
    """
    script = Path(sys.argv[0])
    if script.name != "relay":  # python -m relay
        return f"{_shorter(Path(sys.executable))} -m relay"
    on_path = shutil.which("relay")
    if on_path and Path(on_path).resolve() == script.resolve():
        return "relay"
    return _shorter(script)


def _shorter(path: Path) -> str:
    """``path`` relative to the working directory when below it, else absolute; shell-quoted."""
    absolute = Path(os.path.abspath(path))
    with contextlib.suppress(ValueError):
        return shlex.quote(str(absolute.relative_to(Path.cwd())))
    return shlex.quote(str(absolute))


def banner(info: DemoInfo, directory: Path, relay: str = "relay") -> str:
    """What to do next, printed once the demo is ready; ``relay`` is how to run the command."""
    mode = (
        "anonymous mode: no tokens, for the Microsoft 365 Agents Playground"
        if info.anonymous
        else "signed mode: one demo bot; every token is checked for real"
    )
    chat = f"{relay} chat" + (
        "" if directory == DEFAULT_DIR else f" --dir {shlex.quote(str(directory))}"
    )
    lines = [
        f"relay demo is running ({mode})",
        f"  relay     {info.messages_url}",
        f"  Neo API   {info.neo_url}  (local emulator, scripted answers)",
        f"  state     {directory}/",
        "",
        "Next, in another terminal:",
        f"  {chat}           a 1:1 chat with the demo bot (answers stream)",
        f"  {chat} --group   a group chat: begin a message with '@bot ' to mention it",
        "  Try: 'How do I restart the print spooler?', then '/smart why?', '/reset', '/help'.",
    ]
    if info.anonymous:
        lines += [
            "",
            "Or point the Microsoft 365 Agents Playground at it (no outside calls; README):",
            "  TEAMSAPPTESTER_BROWSER=none APPLICATION_INSIGHTS_NO_STATSBEAT=true \\",
            f"    agentsplayground -e {info.messages_url} -c msteams --dt",
        ]
    lines += ["", "Ctrl-C stops the demo."]
    return "\n".join(lines)


async def serve_demo(env: DemoEnvironment, *, out: Any = sys.stdout) -> None:
    """Run until SIGINT/SIGTERM, then shut everything down cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        info = await env.start()
        print(banner(info, env.directory, relay_command()), file=out, flush=True)
        await stop.wait()
        print("\nrelay demo: stopping…", file=out, flush=True)
    finally:
        await env.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run_demo(args: argparse.Namespace) -> int:
    """The ``relay demo`` command."""
    from relay.ops.logs import configure_logging

    configure_logging(args.log_level, secrets=[DEMO_NEO_KEY])
    # One line per Neo request would bury the banner; the relay's own lines say enough.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    env = DemoEnvironment(
        Path(args.dir),
        port=args.port,
        anonymous=args.anonymous,
        chunk_delay=args.chunk_delay,
        log_level=args.log_level,
    )
    try:
        asyncio.run(serve_demo(env))
    except DemoAlreadyRunning as exc:
        print(f"relay demo: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"relay demo: cannot start: {exc} (is the port in use? try --port)", file=sys.stderr)
        return 1
    print("relay demo: stopped", flush=True)
    return 0


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir", default=str(DEFAULT_DIR), help="state directory (demo.json, relay.db, bots.toml)"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="relay port (the Playground's default)"
    )
    parser.add_argument(
        "--anonymous",
        action="store_true",
        help="no bot registered, no tokens: for the Microsoft 365 Agents Playground",
    )
    parser.add_argument(
        "--chunk-delay",
        type=float,
        default=DEFAULT_CHUNK_DELAY,
        help="seconds between streamed chunks of an answer",
    )
    parser.add_argument("--log-level", default="INFO", help="relay log level")
