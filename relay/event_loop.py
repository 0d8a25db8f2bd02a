"""The event loop ``relay serve`` runs on: uvloop when it is installed and wanted, else asyncio's.

uvloop (libuv, in C) runs the same asyncio program with less CPU per socket event and timer, and
a relay turn is mostly socket events: Teams' webhook, Neo's calls and SSE tail, Teams' updates.
It is an optional dependency (the ``fast`` extra, installed in the container image) because it
is a compiled package that not every platform has; ``RELAY_UVLOOP=false`` turns it off (e.g. to
rule it out while debugging). Without it the relay runs unchanged on asyncio's own loop, and
says at start-up which loop it got.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version


def new_event_loop(want_uvloop: bool) -> tuple[asyncio.AbstractEventLoop, str]:
    """A new event loop and a phrase naming it for the start-up log."""
    if not want_uvloop:
        return asyncio.new_event_loop(), "asyncio (RELAY_UVLOOP=false)"
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop(), "asyncio (uvloop not installed: the `fast` extra)"
    return uvloop.new_event_loop(), f"uvloop {version('uvloop')}"
