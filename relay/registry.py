"""The live bot registry: one mutable holder every component reads, and the reloader that swaps it.

Settings are immutable and loaded once, but MSPs add bots, retire them and rotate their secrets
while conversations are running; a restart for each of those would drop or delay every turn in
flight. :class:`BotRegistry` holds the current ``BotConfig`` tuple and is what inbound
authentication (:mod:`relay.teams.auth`) and outbound credentials (:mod:`relay.teams.credentials`)
consult on every lookup, so a :meth:`BotRegistry.replace` takes effect on the next request.
:class:`RegistryReloader` re-reads ``RELAY_BOTS_FILE`` on SIGHUP and by polling (resolving
``secret_env`` names against the environment the settings were loaded from), validates the whole
file first (an invalid file is logged and the old registry stays), and only then swaps.
A removed bot stays usable for *outbound* calls for a grace period, so a turn it accepted before
the reload can still deliver its answer; inbound tokens for it are refused at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from relay.config import BotConfig, load_bots
from relay.errors import ConfigError
from relay.ops.logs import bot_secret_values, register_secrets

log = logging.getLogger(__name__)

# Long enough for any turn accepted before a removal to finish (RELAY_SSE_TOTAL_TIMEOUT default).
RETIRED_GRACE = 900.0
DEFAULT_POLL_INTERVAL = 5.0


@dataclass(frozen=True)
class RegistryChange:
    """What one :meth:`BotRegistry.replace` did (app ids, sorted)."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def describe(self) -> str:
        parts = [
            f"{label} {', '.join(ids)}"
            for label, ids in (
                ("added", self.added),
                ("removed", self.removed),
                ("changed", self.changed),
            )
            if ids
        ]
        return "; ".join(parts) or "no change"


Listener = Callable[[RegistryChange], None]


class BotRegistry:
    """The bots the relay serves right now; thread-safe, swapped atomically by :meth:`replace`."""

    def __init__(self, bots: Iterable[BotConfig] = (), *, retired_grace: float = RETIRED_GRACE):
        self._lock = threading.Lock()
        self._bots: dict[str, BotConfig] = {b.app_id.lower(): b for b in bots}
        self._retired: dict[str, tuple[BotConfig, float]] = {}
        self._listeners: list[Listener] = []
        self._grace = retired_grace
        self.version = 0

    @property
    def bots(self) -> tuple[BotConfig, ...]:
        with self._lock:
            return tuple(self._bots.values())

    def __len__(self) -> int:
        return len(self._bots)

    def __contains__(self, app_id: object) -> bool:
        return isinstance(app_id, str) and app_id.lower() in self._bots

    def get(self, app_id: str) -> BotConfig | None:
        """The registered bot, or None (also for a bot removed by a reload)."""
        return self._bots.get(app_id.lower())

    def get_for_outbound(self, app_id: str) -> BotConfig | None:
        """Like :meth:`get`, but a bot removed less than the grace period ago is still returned,
        so turns it accepted before the reload can deliver their answers."""
        key = app_id.lower()
        bot = self._bots.get(key)
        if bot is not None:
            return bot
        with self._lock:
            retired = self._retired.get(key)
            if retired is None:
                return None
            if time.monotonic() - retired[1] > self._grace:
                del self._retired[key]
                return None
            return retired[0]

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def replace(self, bots: Iterable[BotConfig]) -> RegistryChange:
        """Swap in a new, already validated registry; listeners hear about real changes only."""
        new = {b.app_id.lower(): b for b in bots}
        now = time.monotonic()
        with self._lock:
            old = self._bots
            change = RegistryChange(
                added=tuple(sorted(set(new) - set(old))),
                removed=tuple(sorted(set(old) - set(new))),
                changed=tuple(sorted(k for k in set(old) & set(new) if old[k] != new[k])),
            )
            for key in change.removed:
                self._retired[key] = (old[key], now)
            for key in new:
                self._retired.pop(key, None)
            self._retired = {k: v for k, v in self._retired.items() if now - v[1] <= self._grace}
            self._bots = new
            if not change.empty:
                self.version += 1
        if not change.empty:
            for listener in list(self._listeners):
                try:
                    listener(change)
                except Exception:  # one broken listener must not stop the others
                    log.exception("bot registry listener failed")
        return change


class RegistryReloader:
    """Re-reads the bots file on SIGHUP and whenever polling sees a difference.

    Polling re-loads and compares rather than watching one mtime: a rotated secret usually
    changes a referenced ``secret_file`` (a Kubernetes secret mount swaps a symlink), not the
    registry file itself. Loading a registry is a few small file reads, done in a thread.
    """

    def __init__(
        self,
        registry: BotRegistry,
        path: Path,
        *,
        env: Callable[[], Mapping[str, str]] = lambda: os.environ,
        interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        self.registry = registry
        self.path = path
        self._env = env
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._last_error: str | None = None
        self._sighup = False
        self._pending: set[asyncio.Task[bool]] = set()
        self.reloads = 0
        self.rejected = 0

    async def reload(self, *, reason: str = "request") -> bool:
        """Load, validate and swap. Returns False (old registry kept) if the file is invalid."""
        async with self._lock:
            try:
                bots = await asyncio.to_thread(load_bots, self.path, dict(self._env()))
            except ConfigError as exc:
                self.rejected += 1
                text = str(exc)
                # Polling would repeat the same line every few seconds: log each new error once,
                # but a SIGHUP always answers.
                if text != self._last_error or reason == "SIGHUP":
                    log.error(
                        "bot registry reload (%s) rejected, keeping the old one: %s", reason, text
                    )
                self._last_error = text
                return False
            if not bots:
                self.rejected += 1
                log.error("bot registry reload (%s) rejected: the new registry has no bots", reason)
                self._last_error = "empty"
                return False
            self._last_error = None
            # New or rotated secrets must be masked in logs before anything can log them.
            register_secrets(bot_secret_values(bots))
            change = self.registry.replace(bots)
            if not change.empty:
                self.reloads += 1
                log.info(
                    "bot registry reloaded (%s): %s; %d bot(s)",
                    reason,
                    change.describe(),
                    len(bots),
                )
            elif reason == "SIGHUP":
                log.info("bot registry reloaded (SIGHUP): no change")
            return True

    async def start(self) -> None:
        """Install the SIGHUP handler (main thread only) and start polling (if interval > 0)."""
        if self._task is not None or self._sighup:
            return
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
                self._sighup = True
        if self.interval > 0:
            self._task = asyncio.create_task(self._poll(), name="bot-registry-reload")

    async def stop(self) -> None:
        if self._sighup:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._sighup = False
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload(reason="SIGHUP"))
        self._pending.add(task)  # keep a reference until it is done
        task.add_done_callback(self._pending.discard)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.reload(reason="periodic check")
            except Exception:  # never let the watcher die; the next poll tries again
                log.exception("bot registry reload failed")
