"""End to end: inline images and paperclip files → Neo upload grant → SAS PUT → turn attachments."""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relay.devtools.neo_emulator_streams import TurnInput
from relay.teams.inbound import FILE_DOWNLOAD_INFO
from tests.fakes.files import FileServer
from tests.fakes.harness import BOT_A, Harness, close_harness, make_harness


def png(size: int = 200) -> bytes:
    """A real PNG of roughly ``size`` bytes (the padding is an ancillary chunk)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    pad = chunk(b"tEXt", b"c\x00" + b"x" * max(0, size - 80))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + pad
        + chunk(b"IDAT", pixels)
        + chunk(b"IEND", b"")
    )


def _answer(turn: TurnInput) -> list[dict[str, object]]:
    text = f"Got {len(turn.attachments)} attachment(s): {turn.message or '(no text)'}"
    return [
        {"type": "start"},
        {"type": "text-start", "id": "t"},
        {"type": "text-delta", "id": "t", "delta": text},
        {"type": "text-end", "id": "t"},
        {"type": "finish"},
    ]


def inline_image(url: str) -> dict[str, Any]:
    return {"contentType": "image/*", "contentUrl": url}


def paperclip(url: str, name: str) -> dict[str, Any]:
    return {
        "contentType": FILE_DOWNLOAD_INFO,
        "contentUrl": url,
        "name": name,
        "content": {"downloadUrl": url, "uniqueId": "u-1", "fileType": name.rsplit(".", 1)[-1]},
    }


@pytest.fixture
async def files() -> AsyncIterator[FileServer]:
    server = FileServer()
    await server.start()
    yield server
    await server.stop()


def _put_requests(h: Harness) -> list[Any]:
    return [r for r in h.neo.requests if r.method == "PUT"]


def _notices(h: Harness, conv: str) -> list[str]:
    return [m["text"] for m in h.teams.messages(conv) if not m["text"].startswith("Got ")]


async def test_inline_image_is_fetched_with_the_bot_token_sniffed_and_attached(
    harness: Harness,
) -> None:
    h = harness
    h.neo.script = _answer
    h.teams.attachments["img-1"] = (png(), "application/octet-stream")
    conv = "a:conv-image"
    act = h.activity(BOT_A, "What does this error mean?", conversation_id=conv)
    act["attachments"] = [
        inline_image(h.teams.attachment_url("img-1")),
        {
            "contentType": "text/html",
            "content": "<p><img src='https://us-api.asm.skype.com/x'></p>",
        },
    ]
    await h.deliver(act, bot=BOT_A)
    await h.wait_for(lambda: bool(h.teams.messages(conv)), what="the answer")

    # The Teams attachment endpoint got the bot's own token (the emulator verified it).
    assert len(h.teams.attachment_auth) == 1
    assert h.teams.attachment_auth[0]
    assert h.issuer.verify_bot_token(h.teams.attachment_auth[0].split()[1]) == BOT_A.app_id
    [posted] = h.neo.posted_messages
    [att] = posted["attachments"]
    assert att["mime"] == "image/png"
    assert att["filename"] == "image-1.png"
    assert h.neo.blobs[att["blob_path"]] == (png(), "image/png")
    [put] = _put_requests(h)
    assert put.headers["x-ms-blob-type"] == "BlockBlob"
    assert put.headers["x-ms-blob-content-type"] == "image/png"
    assert "authorization" not in put.headers  # the SAS URL is the credential
    assert h.teams.messages(conv)[-1]["text"].startswith("Got 1 attachment(s)")


async def test_paperclip_file_is_downloaded_without_a_token(
    harness: Harness, files: FileServer
) -> None:
    h = harness
    h.neo.script = _answer
    files.files["report.pdf"] = (b"%PDF-1.7 fake report", "application/pdf")
    conv = "a:conv-file"
    act = h.activity(BOT_A, "", conversation_id=conv)  # a message with only a file is valid
    act["attachments"] = [paperclip(files.url("report.pdf"), "report.pdf")]
    await h.deliver(act, bot=BOT_A)
    await h.wait_for(lambda: bool(h.teams.messages(conv)), what="the answer")
    assert [r.authorization for r in files.requests] == [None]
    [posted] = h.neo.posted_messages
    assert posted["message"] == ""
    [att] = posted["attachments"]
    assert (att["mime"], att["filename"]) == ("application/pdf", "report.pdf")
    assert h.neo.blobs[att["blob_path"]][0] == b"%PDF-1.7 fake report"


async def test_the_bot_token_never_leaves_bot_framework_hosts(
    harness: Harness, files: FileServer
) -> None:
    h = harness
    h.neo.script = _answer
    files.files["pic.png"] = (png(), "image/png")
    conv = "a:conv-leak"
    act = h.activity(BOT_A, "look at this", conversation_id=conv)
    # An "inline image" whose URL is not the Bot Framework / serviceUrl host: same loopback
    # address as the emulator, another port, so only the origin tells them apart.
    act["attachments"] = [inline_image(files.url("pic.png"))]
    await h.deliver(act, bot=BOT_A)
    await h.wait_for(lambda: len(h.teams.messages(conv)) == 2, what="notice and answer")
    assert files.requests == []  # never even asked, so no token could leak
    assert all(r.authorization is None for r in files.requests)
    [notice] = _notices(h, conv)
    assert "allowed to download from" in notice
    [posted] = h.neo.posted_messages
    assert posted["message"] == "look at this"
    assert not posted.get("attachments")


async def test_seven_images_upload_six_and_say_so(harness: Harness) -> None:
    h = harness
    h.neo.script = _answer
    conv = "a:conv-seven"
    act = h.activity(BOT_A, "seven screenshots", conversation_id=conv)
    act["attachments"] = []
    for n in range(7):
        h.teams.attachments[f"s{n}"] = (png(100 + n), "image/png")
        act["attachments"].append(inline_image(h.teams.attachment_url(f"s{n}")))
    await h.deliver(act, bot=BOT_A)
    await h.wait_for(lambda: len(h.teams.messages(conv)) == 2, what="notice and answer")
    [notice] = _notices(h, conv)
    assert "7 files" in notice
    assert "first 6" in notice
    [posted] = h.neo.posted_messages
    assert len(posted["attachments"]) == 6
    assert len(_put_requests(h)) == 6
    assert len(h.teams.attachment_auth) == 6
    assert [h.neo.blobs[a["blob_path"]][0] for a in posted["attachments"]] == [
        png(100 + n) for n in range(6)
    ]


async def test_an_oversized_image_is_refused_before_upload(harness: Harness) -> None:
    h = harness
    h.neo.script = _answer
    h.neo.max_image_bytes = 1000
    h.teams.attachments["big"] = (png(5000), "image/png")
    conv = "a:conv-big"
    act = h.activity(BOT_A, "", conversation_id=conv)  # only the image
    act["attachments"] = [inline_image(h.teams.attachment_url("big"))]
    await h.deliver(act, bot=BOT_A)
    await h.wait_for(lambda: bool(h.teams.messages(conv)), what="the notice")
    await h.wait_idle()
    # The progress bubble's closing final (relay.teams.stream) is not a notice: leave it out.
    [notice] = [
        m["text"]
        for m in h.teams.messages(conv)
        if not any(e.get("type") == "streaminfo" for e in m.get("entities") or [])
    ]
    assert "too large" in notice
    assert "1000" in notice
    assert _put_requests(h) == []
    assert h.neo.blobs == {}
    assert h.neo.posted_messages == []  # nothing left to ask the agent


async def test_unsupported_types_are_named_with_what_neo_accepts(
    harness: Harness, files: FileServer
) -> None:
    h = harness
    h.neo.script = _answer
    files.files["logs.zip"] = (b"PK\x03\x04zip", "application/zip")
    h.teams.attachments["notimg"] = (b"<html>not an image</html>", "text/html")
    conv = "a:conv-types"
    act = h.activity(BOT_A, "two files", conversation_id=conv)
    act["attachments"] = [
        paperclip(files.url("logs.zip"), "logs.zip"),
        inline_image(h.teams.attachment_url("notimg")),
    ]
    await h.deliver(act, bot=BOT_A)
    await h.wait_for(lambda: len(h.teams.messages(conv)) == 2, what="notice and answer")
    [notice] = _notices(h, conv)
    assert "**logs.zip** can't be passed to the agent" in notice
    assert "image/png" in notice
    assert "application/pdf" in notice
    assert "doesn't look like a PNG, JPEG, GIF or WebP image" in notice
    assert h.neo.posted_messages[0]["message"] == "two files"
    assert not h.neo.posted_messages[0].get("attachments")


async def test_downloads_are_capped_while_streaming(tmp_path: Path, files: FileServer) -> None:
    h = await make_harness(tmp_path, max_attachment_bytes=4096)
    try:
        h.neo.script = _answer
        files.files["huge.pdf"] = (b"%PDF" + b"0" * 200_000, "application/pdf")
        conv = "a:conv-huge"
        act = h.activity(BOT_A, "summarise", conversation_id=conv)
        act["attachments"] = [paperclip(files.url("huge.pdf", slow=True), "huge.pdf")]
        await h.deliver(act, bot=BOT_A)
        await h.wait_for(lambda: len(h.teams.messages(conv)) == 2, what="notice and answer")
        [notice] = _notices(h, conv)
        assert "**huge.pdf** is too large" in notice
        assert "4 KB" in notice
        assert _put_requests(h) == []
    finally:
        await close_harness(h)
