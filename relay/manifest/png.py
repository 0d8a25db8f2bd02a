"""A small PNG reader and writer (stdlib only) for checking and making Teams app icons.

Teams wants a 192×192 colour icon and a 32×32 white outline icon on a transparent background
(teams-platform.md §7); a wrong icon is only discovered when an admin uploads the package, so
``relay manifest build`` checks them first. Pillow would do, but the checks need nothing beyond
IHDR, tRNS and the decoded pixels of small images, and this keeps the relay's dependency list
short. The writer exists to generate the default icons reproducibly (manifest/make_icons.py) and
bad icons in tests.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
MAX_PIXELS = 4096 * 4096  # refuse to decode anything larger (an icon never is)


class PngError(ValueError):
    """Not a PNG this module can read; the message says why."""


@dataclass(frozen=True)
class PngInfo:
    width: int
    height: int
    bit_depth: int
    color_type: int
    interlaced: bool
    has_trns: bool
    data: bytes  # concatenated IDAT payload (compressed)
    trns: bytes = b""

    @property
    def has_alpha(self) -> bool:
        return self.color_type in (4, 6) or self.has_trns


def read_png(blob: bytes) -> PngInfo:
    """Parse the chunks of a PNG file (CRC-checked). Raises :class:`PngError`."""
    if not blob.startswith(SIGNATURE):
        raise PngError("not a PNG file (bad signature)")
    pos, ihdr, idat, trns = len(SIGNATURE), None, bytearray(), b""
    seen_iend = False
    while pos + 8 <= len(blob):
        length, kind = struct.unpack(">I4s", blob[pos : pos + 8])
        body = blob[pos + 8 : pos + 8 + length]
        crc = blob[pos + 8 + length : pos + 12 + length]
        if len(body) != length or len(crc) != 4:
            raise PngError("truncated PNG chunk")
        if struct.unpack(">I", crc)[0] != zlib.crc32(kind + body):
            raise PngError(f"bad CRC in {kind.decode('latin-1')} chunk")
        if kind == b"IHDR":
            ihdr = body
        elif kind == b"IDAT":
            idat += body
        elif kind == b"tRNS":
            trns = body
        elif kind == b"IEND":
            seen_iend = True
            break
        pos += 12 + length
    if ihdr is None or len(ihdr) != 13:
        raise PngError("missing IHDR chunk")
    if not seen_iend:
        raise PngError("missing IEND chunk (truncated file)")
    width, height, depth, ctype, _comp, _filt, interlace = struct.unpack(">IIBBBBB", ihdr)
    if ctype not in _CHANNELS or width == 0 or height == 0:
        raise PngError("invalid IHDR")
    return PngInfo(width, height, depth, ctype, interlace == 1, bool(trns), bytes(idat), trns=trns)


def rgba_pixels(info: PngInfo) -> list[tuple[int, int, int, int]]:
    """Decode to 8-bit RGBA (non-interlaced, bit depth 8 only — what icon tools write)."""
    if info.interlaced or info.bit_depth != 8 or info.color_type == 3:
        raise PngError(
            "cannot check pixels: use a non-interlaced 8-bit RGBA, RGB or grey PNG "
            f"(this one: colour type {info.color_type}, depth {info.bit_depth}, "
            f"interlaced {info.interlaced})"
        )
    if info.width * info.height > MAX_PIXELS:
        raise PngError("image too large to check")
    channels = _CHANNELS[info.color_type]
    stride = info.width * channels
    try:
        raw = zlib.decompress(info.data)
    except zlib.error as exc:
        raise PngError(f"corrupt image data: {exc}") from None
    if len(raw) != (stride + 1) * info.height:
        raise PngError("image data has the wrong size")
    rows = _unfilter(raw, stride, channels, info.height)
    trns_key = struct.unpack(f">{len(info.trns) // 2}H", info.trns) if info.trns else ()
    pixels: list[tuple[int, int, int, int]] = []
    for row in rows:
        for x in range(0, stride, channels):
            px = row[x : x + channels]
            if channels == 4:
                pixels.append((px[0], px[1], px[2], px[3]))
            elif channels == 3:
                alpha = 0 if trns_key == (px[0], px[1], px[2]) else 255
                pixels.append((px[0], px[1], px[2], alpha))
            elif channels == 2:
                pixels.append((px[0], px[0], px[0], px[1]))
            else:
                alpha = 0 if trns_key == (px[0],) else 255
                pixels.append((px[0], px[0], px[0], alpha))
    return pixels


def _unfilter(raw: bytes, stride: int, bpp: int, height: int) -> list[bytes]:
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up = prev[i]
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
            elif kind == 4:
                up_left = prev[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + _paeth(left, up, up_left)) & 0xFF
            elif kind != 0:
                raise PngError(f"unknown filter type {kind}")
        rows.append(bytes(line))
        prev = line
    return rows


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def write_png(width: int, height: int, pixels: list[tuple[int, int, int, int]]) -> bytes:
    """An 8-bit RGBA PNG (filter 0, max compression); deterministic for the same pixels."""
    if len(pixels) != width * height:
        raise ValueError("pixel count does not match the size")
    raw = bytearray()
    for y in range(height):
        raw.append(0)
        for r, g, b, a in pixels[y * width : (y + 1) * width]:
            raw += bytes((r, g, b, a))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        SIGNATURE
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(bytes(raw), 9))
        + chunk(b"IEND", b"")
    )
