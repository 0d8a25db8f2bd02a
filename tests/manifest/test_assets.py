"""The shipped assets: default icons, the bundled schema, and the PNG reader they rely on."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import zlib
from pathlib import Path

import pytest
from jsonschema import Draft4Validator

from relay.manifest.build import asset_bytes, check_color_icon, check_outline_icon
from relay.manifest.png import PngError, read_png, rgba_pixels, write_png

ROOT = Path(__file__).resolve().parents[2]


def _make_icons() -> object:
    spec = importlib.util.spec_from_file_location("make_icons", ROOT / "manifest" / "make_icons.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_default_icons_are_generated_reproducibly_and_both_copies_match() -> None:
    make = _make_icons()
    color, outline = make.color_icon(), make.outline_icon()  # type: ignore[attr-defined]
    assert asset_bytes("color.png") == color == (ROOT / "manifest" / "color.png").read_bytes()
    assert asset_bytes("outline.png") == outline == (ROOT / "manifest" / "outline.png").read_bytes()
    check_color_icon("color", color)
    check_outline_icon("outline", outline)


# SHA-256 of Microsoft's v1.24 schema as published in the npm package @microsoft/app-manifest 1.1.2
# (build/json-schemas/teams/v1.24/MicrosoftTeams.schema.json, MIT) and of its notice: the bundled
# copies must stay byte-identical to what was taken, so an edited schema cannot pass as official.
OFFICIAL_SCHEMA_SHA256 = "768bf3055bb335c225e1a8fe4d3071dc02d1d499a8fc0dc07570b6858443441e"
NOTICE_SHA256 = "cf1e5162488b693e57c12842bef36cabaa59304e20908fbe42b786a257b88c8f"


def test_bundled_schema_and_notice_are_the_official_copies() -> None:
    schema = asset_bytes("MicrosoftTeams.v1.24.schema.json")
    assert hashlib.sha256(schema).hexdigest() == OFFICIAL_SCHEMA_SHA256
    notice = asset_bytes("NOTICE.md")
    assert hashlib.sha256(notice).hexdigest() == NOTICE_SHA256
    assert b"MIT" in notice
    document = json.loads(schema)
    assert document["$schema"] == "http://json-schema.org/draft-04/schema#"
    # (check_schema would trip on the schema's \p{L} patterns, which Python's re lacks.)
    errors = {e.message for e in Draft4Validator(document).iter_errors({"manifestVersion": "1.24"})}
    assert "'id' is a required property" in errors


def test_png_reader_round_trips_and_detects_damage() -> None:
    pixels = [(x, y, (x * y) % 256, 255 if x % 2 else 0) for y in range(5) for x in range(7)]
    blob = write_png(7, 5, pixels)
    info = read_png(blob)
    assert (info.width, info.height, info.color_type, info.has_alpha) == (7, 5, 6, True)
    assert rgba_pixels(info) == pixels
    with pytest.raises(PngError, match="CRC"):
        read_png(blob[:20] + bytes([blob[20] ^ 1]) + blob[21:])
    with pytest.raises(PngError, match="signature"):
        read_png(b"\x89PNX" + blob[4:])
    with pytest.raises(PngError, match="IEND"):
        read_png(blob[:-12])


def test_png_reader_undoes_every_filter_type() -> None:
    # A 3×2 RGB image, one row per filter (Sub, Up) and Average/Paeth on a second image:
    # the reader must reconstruct the same pixels whatever filter the encoder chose.
    import struct

    def png(rows: list[bytes], width: int, height: int) -> bytes:
        def chunk(kind: bytes, body: bytes) -> bytes:
            return (
                struct.pack(">I", len(body))
                + kind
                + body
                + struct.pack(">I", zlib.crc32(kind + body))
            )

        ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + chunk(b"IEND", b"")
        )

    # Raw pixels row0 = (10,20,30)(11,21,31)(12,22,32); row1 = (20,30,40)(22,32,42)(24,34,44)
    sub = bytes([1, 10, 20, 30, 1, 1, 1, 1, 1, 1])
    up = bytes([2, 10, 10, 10, 11, 11, 11, 12, 12, 12])
    info = read_png(png([sub, up], 3, 2))
    assert rgba_pixels(info) == [
        (10, 20, 30, 255),
        (11, 21, 31, 255),
        (12, 22, 32, 255),
        (20, 30, 40, 255),
        (22, 32, 42, 255),
        (24, 34, 44, 255),
    ]
    # Average: row1 = x + floor((left + up)/2); Paeth picks left/up/up-left.
    avg_row1 = bytes(
        [3, 20 - 5, 30 - 10, 40 - 15, 22 - 15, 32 - 25, 42 - 35, 24 - 17, 34 - 27, 44 - 37]
    )
    paeth_row1 = bytes([4, 10, 10, 10, 0, 0, 0, 0, 0, 0])
    assert rgba_pixels(read_png(png([sub, avg_row1], 3, 2)))[3:] == [
        (20, 30, 40, 255),
        (22, 32, 42, 255),
        (24, 34, 44, 255),
    ]
    paeth = rgba_pixels(read_png(png([sub, paeth_row1], 3, 2)))[3:]
    assert paeth[0] == (20, 30, 40, 255)
