"""``relay demo`` as a newcomer runs it (a subprocess), driven by ``relay chat``'s library.

The demo process is the real relay with the Neo emulator and the local token issuer; the test
plays Teams through :class:`relay.devtools.chat.ChatClient`, whose connector emulator checks every
outbound bot token and Teams' streaming rules. Every wait is bounded and the demo process is
always stopped in teardown.
"""

from __future__ import annotations

import io
import itertools
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from relay.devtools.chat import ChatClient, ChatError, NoAnswer
from relay.devtools.chat_repl import TerminalView
from relay.devtools.demo import DEMO_FILE, DemoInfo, relay_command
from relay.devtools.demo_script import DOCS_URL

START_TIMEOUT = 30.0
ANSWER_TIMEOUT = 30.0


@dataclass
class DemoProcess:
    proc: subprocess.Popen[bytes]
    directory: Path
    log: Path
    started: float = field(default_factory=time.monotonic)

    def info(self) -> DemoInfo:
        return DemoInfo.load(self.directory)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_demo(directory: Path, *extra: str) -> DemoProcess:
    log = directory.parent / f"{directory.name}.log"
    args = [sys.executable, "-m", "relay", "demo", "--dir", str(directory)]
    args += ["--port", str(_free_port()), "--log-level", "WARNING", *extra]
    out = log.open("wb")
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=directory.parent)
    out.close()
    demo = DemoProcess(proc, directory, log)
    deadline = time.monotonic() + START_TIMEOUT
    while not (directory / DEMO_FILE).exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_demo(demo)
            pytest.fail(f"relay demo did not start:\n{demo.output()}")
        time.sleep(0.05)
    return demo


def _stop_demo(demo: DemoProcess) -> int | None:
    if demo.proc.poll() is None:
        demo.proc.send_signal(signal.SIGINT)
        try:
            demo.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            demo.proc.kill()
            demo.proc.wait(timeout=5)
            return None
    return demo.proc.returncode


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoProcess]:
    """Paced as a newcomer sees it (the default 60 ms per chunk): long enough to stream."""
    running = _start_demo(tmp_path_factory.mktemp("demo") / "state")
    try:
        yield running
    finally:
        _stop_demo(running)


@pytest.fixture(scope="module")
def fast_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoProcess]:
    """The same demo with 10 ms per chunk, for tests about what is answered rather than how."""
    running = _start_demo(tmp_path_factory.mktemp("fast") / "state", "--chunk-delay", "0.01")
    try:
        yield running
    finally:
        _stop_demo(running)


def _png(path: Path) -> Path:
    """A valid 1×1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
    png += chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b"")
    path.write_bytes(png)
    return path


def _session_of(text: str) -> str:
    return text.rsplit("Neo session `", 1)[1].split("`", 1)[0]


async def test_a_personal_answer_streams_with_progress_and_sources(demo: DemoProcess) -> None:
    screen = io.StringIO()
    async with ChatClient(demo.info(), view=TerminalView(screen)) as chat:
        answer = await chat.send("How do I restart the print spooler?", timeout=ANSWER_TIMEOUT)
        violations = chat.connector.violations

    assert violations == []
    assert "You asked: **How do I restart the print spooler?**" in answer.text
    assert "```sh" in answer.text
    assert "\n1. the relay posted" in answer.text
    assert answer.text.rstrip().endswith("turn 1 · fast model_")
    assert [(c.position, c.url) for c in answer.citations] == [(1, DOCS_URL)]
    shown = screen.getvalue()
    assert "Sources:\n  [1] Stream bot messages" in shown
    assert shown.count("You asked:") == 1  # each cumulative update printed only its new suffix
    assert answer.informative, "no informative (progress) update"
    assert len(answer.snapshots) >= 2, f"{len(answer.snapshots)} streamed snapshot(s)"
    for earlier, later in itertools.pairwise(answer.snapshots):
        assert later.startswith(earlier)
        assert len(later) > len(earlier)
    assert answer.text.startswith(answer.snapshots[-1])
    assert f"  · {answer.informative[0]}" in shown


async def test_reset_starts_a_new_neo_session_and_smart_uses_the_stronger_model(
    fast_demo: DemoProcess,
) -> None:
    async with ChatClient(fast_demo.info()) as chat:
        first = await chat.send("hello", timeout=ANSWER_TIMEOUT)
        await chat.send("/reset", timeout=ANSWER_TIMEOUT)
        after = await chat.send("/smart hello again", timeout=ANSWER_TIMEOUT)
        assert chat.connector.violations == []

    assert "turn 1 · fast model" in first.text
    assert "You asked: **hello again**" in after.text
    assert "smarter model" in after.text
    assert after.text.rstrip().endswith("turn 1 · smart model_")
    assert _session_of(after.text) != _session_of(first.text)


async def test_group_chat_answers_only_when_mentioned(fast_demo: DemoProcess) -> None:
    async with ChatClient(fast_demo.info(), group=True) as chat:
        with pytest.raises(NoAnswer):
            await chat.send("hello everyone", timeout=3.0)
        assert chat.connector.received == []  # not even a typing indicator
        answer = await chat.send("@bot what is new?", timeout=ANSWER_TIMEOUT)
        assert chat.connector.violations == []

    assert "You asked: **what is new?**" in answer.text
    assert not answer.streamed  # group chats never stream (teams-platform.md §1.1)


async def test_an_image_is_offered_like_teams_does(fast_demo: DemoProcess, tmp_path: Path) -> None:
    async with ChatClient(fast_demo.info()) as chat:
        answer = await chat.send("what is this?", image=_png(tmp_path / "shot.png"))
        downloads = list(chat.connector.attachment_auth)
        [sent] = [a for a in answer.activities if a.get("type") == "message"]

    assert "You asked: **what is this?**" in answer.text
    # Fetched once, with the bot's token (the connector emulator verified it), then given to Neo.
    assert len(downloads) == 1
    assert (downloads[0] or "").startswith("Bearer ")
    assert "received 1 attachment(s)" in answer.text
    assert sent["text"] == answer.text


async def test_a_token_from_another_issuer_is_refused(demo: DemoProcess) -> None:
    forged = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = forged.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = replace(demo.info(), signing_key_pem=SecretStr(pem))
    async with ChatClient(info) as chat:
        with pytest.raises(ChatError, match="401"):
            await chat.post("hello")


async def test_anonymous_demo_answers_unsigned_and_stops_cleanly(tmp_path: Path) -> None:
    running = _start_demo(tmp_path / "anon", "--anonymous", "--chunk-delay", "0.01")
    try:
        info = running.info()
        assert info.anonymous
        assert info.signing_key_pem is None
        assert os.stat(running.directory / DEMO_FILE).st_mode & 0o077 == 0
        async with ChatClient(info) as chat:
            answer = await chat.send("hi", timeout=ANSWER_TIMEOUT)
        assert "You asked: **hi**" in answer.text
        assert "agentsplayground -e " in running.output()
    finally:
        code = _stop_demo(running)
    assert code == 0, running.output()
    assert not (running.directory / DEMO_FILE).exists()
    assert "relay demo: stopped" in running.output()


def test_a_second_demo_on_the_same_directory_refuses_and_leaves_the_first_running(
    fast_demo: DemoProcess,
) -> None:
    before = fast_demo.info()
    second = subprocess.run(
        [sys.executable, "-m", "relay", "demo", "--dir", str(fast_demo.directory)],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        cwd=fast_demo.directory.parent,
    )
    assert second.returncode == 1
    assert second.stdout == ""
    [line] = second.stderr.splitlines()
    assert line.startswith(f"relay demo: a demo is already running in {fast_demo.directory}/")
    assert f"pid {before.pid}" in line
    assert fast_demo.proc.poll() is None
    assert fast_demo.info() == before  # demo.json (and the state beside it) untouched


async def test_the_first_demo_still_answers_after_a_refused_second_one(
    fast_demo: DemoProcess,
) -> None:
    async with ChatClient(fast_demo.info()) as chat:
        answer = await chat.send("still there?", timeout=ANSWER_TIMEOUT)
    assert "You asked: **still there?**" in answer.text


def _banner_command(demo: DemoProcess, suffix: str) -> str:
    """The `… chat …` line of the banner, as printed (the words before the explanation)."""
    for line in demo.output().splitlines():
        command = line.strip().split("   ")[0]
        if " chat" in command and command.endswith(suffix):
            return command
    raise AssertionError(f"no chat{suffix} command in the banner:\n{demo.output()}")


def test_the_banner_commands_run_as_typed_and_hint_at_empty_messages(
    fast_demo: DemoProcess,
) -> None:
    command = _banner_command(fast_demo, "--group")
    typed = "\n@bot\n/quit\n"  # an empty line, a bare mention, then quit: no answer awaited
    started = time.monotonic()
    # The banner line, run by a shell exactly as a user would type it.
    done = subprocess.run(  # noqa: S602
        command,
        shell=True,
        input=typed,
        capture_output=True,
        text=True,
        timeout=20,
        cwd=fast_demo.directory.parent,  # where the demo was started, as a user would be
    )
    assert done.returncode == 0, done.stderr
    assert "relay chat: a group chat with Neo Demo" in done.stdout
    assert "(nothing sent: type a question, or /help)" in done.stdout
    assert "(nothing sent: a mention needs a question" in done.stdout
    assert time.monotonic() - started < 15  # hints come at once, not after an answer timeout


def test_the_registry_reload_reads_the_demos_own_environment(demo: DemoProcess) -> None:
    # The reloader checks bots.toml every 5 s; its secret_env lives only in the demo's settings.
    time.sleep(max(0.0, demo.started + 6.5 - time.monotonic()))
    assert demo.proc.poll() is None
    assert "bot registry" not in demo.output(), demo.output()


def test_the_printed_relay_command_is_the_one_that_was_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / ".venv" / "bin" / "relay"  # what `make demo` runs; not on PATH
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(sys, "argv", [str(script), "demo"])
    assert relay_command() == ".venv/bin/relay"
    monkeypatch.setenv("PATH", str(script.parent))  # an activated venv
    assert relay_command() == "relay"
    monkeypatch.setattr(sys, "argv", ["/somewhere/relay/__main__.py", "demo"])
    assert relay_command().endswith(" -m relay")
