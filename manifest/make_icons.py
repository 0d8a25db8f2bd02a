"""Regenerate the default Teams app icons (run: ``.venv/bin/python manifest/make_icons.py``).

The icons are drawn in code so they are reproducible byte for byte: a white speech bubble on the
default accent colour (color.png, 192×192) and the same bubble as a white outline on a
transparent background (outline.png, 32×32), as Teams requires (teams-platform.md §7). The same
files are written here (the documented template folder) and into ``relay/manifest/assets/`` (what
the installed package loads); tests/manifest/test_assets.py checks that both copies match this
script's output.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.manifest.png import write_png  # noqa: E402

ACCENT = (0x2B, 0x57, 0x97, 255)
WHITE = (255, 255, 255, 255)
CLEAR = (0, 0, 0, 0)


def _in_bubble(x: float, y: float, size: int) -> bool:
    """A rounded speech bubble with a tail, in a size×size square (unit coordinates)."""
    u, v = x / size, y / size
    left, right, top, bottom, r = 0.18, 0.82, 0.2, 0.66, 0.12
    cx = min(max(u, left + r), right - r)
    cy = min(max(v, top + r), bottom - r)
    if (u - cx) ** 2 + (v - cy) ** 2 <= r * r:
        return True
    # The tail: a triangle below the bubble's lower-left part.
    return bottom <= v <= 0.82 and 0.3 <= u <= 0.3 + (0.82 - v) * 1.2


def color_icon(size: int = 192) -> bytes:
    pixels = [
        WHITE if _in_bubble(x + 0.5, y + 0.5, size) else ACCENT
        for y in range(size)
        for x in range(size)
    ]
    return write_png(size, size, pixels)


def outline_icon(size: int = 32) -> bytes:
    inside = [[_in_bubble(x + 0.5, y + 0.5, size) for x in range(size)] for y in range(size)]

    def edge(x: int, y: int) -> bool:
        if not inside[y][x]:
            return False
        around = ((x - 1, y), (x + 1, y), (x, y - 1), (x, y + 1))
        return any(not (0 <= a < size and 0 <= b < size) or not inside[b][a] for a, b in around)

    pixels = [WHITE if edge(x, y) else CLEAR for y in range(size) for x in range(size)]
    return write_png(size, size, pixels)


def main() -> None:
    for folder in (ROOT / "manifest", ROOT / "relay" / "manifest" / "assets"):
        (folder / "color.png").write_bytes(color_icon())
        (folder / "outline.png").write_bytes(outline_icon())
        print(f"wrote {folder}/color.png and outline.png")


if __name__ == "__main__":
    main()
