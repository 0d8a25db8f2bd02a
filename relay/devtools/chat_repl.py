"""The interactive side of ``relay chat``: terminal rendering and the read–send–show loop.

Kept apart from :mod:`relay.devtools.chat` so the library the tests drive has no terminal code.
The output is deliberately plain (no curses): a ``·`` status line per informative update or typing
indicator, the streamed text printed as it grows (only the new suffix of each cumulative update),
then the rest of the final message and its citations as a "Sources:" list. Input is read on the
event loop (``add_reader``), so no thread is left blocked in a read when Ctrl-C ends the program.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from pathlib import Path
from typing import TextIO

from relay.devtools.chat import Answer, ChatClient, ChatError, NoAnswer
from relay.devtools.demo import DEFAULT_DIR, DemoInfo, DemoNotRunning

CHAT_DESCRIPTION = """\
Play the Teams side of a running `relay demo`: each line you type is posted to the relay as a
Teams message (signed like Teams signs it, unless the demo is --anonymous) and the answer is
shown as it streams, with its progress lines and sources. Relay commands (/reset, /new,
/smart <question>, /help) are typed as messages; /image <path> [question] pastes an image."""
UNMENTIONED_WAIT = 3.0  # long enough to show that an unmentioned group message stays unanswered
HELP = """\
Type a message and press Enter. Relay commands are typed as messages: /reset (new Neo session),
/new, /smart <question> (the stronger model), /help.
Local commands: /image <path> [question]  (paste an image)   /quit (or Ctrl-D)"""
GROUP_HELP = "Group chat: the bot answers only when mentioned — begin a message with '@bot '."
NOT_MENTIONED = "in a group chat the bot answers only when @mentioned; begin with '@bot '"
# Teams sends no message for an empty box, and the relay answers a bare mention with nothing to
# ask; say so at once instead of waiting for an answer that cannot come.
EMPTY_HINT = "(nothing sent: type a question, or /help)"
BARE_MENTION_HINT = "(nothing sent: a mention needs a question — '@bot how do I …?')"


class TerminalView:
    """Renders an arriving answer on a text stream."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self._started = False
        self._typing = False

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def _status(self, text: str) -> None:
        self._write(("\n" if self._started else "") + f"  · {text}\n")
        self._started = False

    def begin(self) -> None:
        self._started = self._typing = False

    def informative(self, text: str) -> None:
        self._status(text)

    def typing(self) -> None:
        if not self._typing:  # refreshed every few seconds; once is enough on a terminal
            self._typing = True
            self._status("typing…")

    def stream(self, new_text: str) -> None:
        if not self._started:
            self._write("bot> ")
            self._started = True
        self._write(new_text)

    def final(self, answer: Answer, new_text: str) -> None:
        self.stream(new_text)
        self._write("\n")
        if answer.citations:
            self._write("Sources:\n")
            for c in answer.citations:
                self._write(f"  [{c.position}] {c.name}" + (f" — {c.url}" if c.url else "") + "\n")
        self._write("\n")
        self._started = False


class LineReader:
    """Lines from a file descriptor, read on the event loop (no thread left blocked in a read)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = b""
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        data = os.read(self._fd, 65536)
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self._lines.put_nowait(line.decode(errors="replace"))
        if not data:  # end of input: the last unterminated line, then the end
            if self._buffer:
                self._lines.put_nowait(self._buffer.decode(errors="replace"))
            self._lines.put_nowait(None)
            self.close()

    async def readline(self) -> str | None:
        """The next line without its newline; None at end of input."""
        return await self._lines.get()

    def close(self) -> None:
        self._loop.remove_reader(self._fd)


def _parse_image(line: str) -> tuple[Path, str]:
    parts = shlex.split(line)
    if len(parts) < 2:
        raise ValueError("usage: /image <path> [question]")
    path = Path(parts[1]).expanduser()
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    return path, " ".join(parts[2:])


async def _one(client: ChatClient, view: TerminalView, line: str, out: TextIO) -> None:
    image: Path | None = None
    if line.startswith("/image"):
        image, line = _parse_image(line)
    body, mentioned = client.addressed(line)
    if client.group and mentioned and not body and image is None:
        print(f"  {BARE_MENTION_HINT}\n", file=out, flush=True)
        return
    unmentioned = client.group and not mentioned
    try:
        await client.send(line, image=image, timeout=UNMENTIONED_WAIT if unmentioned else 150.0)
    except NoAnswer:
        if unmentioned:
            print(f"  (no answer: {NOT_MENTIONED})\n", file=out, flush=True)
        else:
            print("  (no answer in time)\n", file=out, flush=True)
        return
    if image is not None and not client.connector.attachment_auth:
        print("  (the relay did not download the image)\n", file=out, flush=True)


async def repl(client: ChatClient, view: TerminalView, out: TextIO = sys.stdout) -> None:
    """Read lines until /quit or end of input; send each and show the answer."""
    reader = LineReader(sys.stdin.fileno())
    try:
        while True:
            print("you> ", end="", file=out, flush=True)
            line = await reader.readline()
            if line is None or line.strip() in ("/quit", "/exit"):
                return
            line = line.strip()
            if not line:
                print(f"  {EMPTY_HINT}", file=out, flush=True)
                continue
            try:
                await _one(client, view, line, out)
            except (ChatError, ValueError, OSError) as exc:
                print(f"  ! {exc}\n", file=out, flush=True)
    finally:
        reader.close()


async def _chat(info: DemoInfo, group: bool) -> None:
    view = TerminalView()
    async with ChatClient(info, group=group, view=view) as client:
        kind = "a group chat" if group else "a 1:1 chat"
        auth = "unsigned (anonymous)" if info.anonymous else "signed by the demo's token issuer"
        print(f"relay chat: {kind} with {info.bot_name} via {info.messages_url}; {auth}.")
        print(HELP + ("\n" + GROUP_HELP if group else "") + "\n", flush=True)
        await repl(client, view)


def run_chat(args: argparse.Namespace) -> int:
    """The ``relay chat`` command."""
    try:
        info = DemoInfo.load(Path(args.dir))
    except DemoNotRunning as exc:
        print(f"relay chat: {exc}", file=sys.stderr)
        return 1
    try:
        asyncio.run(_chat(info, args.group))
    except KeyboardInterrupt:
        print()
    except BrokenPipeError:  # e.g. `relay chat | head`: the reader is gone, nothing to report
        pass
    return 0


def add_chat_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir", default=str(DEFAULT_DIR), help="the directory the demo was started with"
    )
    parser.add_argument(
        "--group", action="store_true", help="a group chat: '@bot ' at the start mentions the bot"
    )
