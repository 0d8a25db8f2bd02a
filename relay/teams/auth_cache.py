"""A bounded memory of inbound Bot Framework tokens that already passed full validation.

Teams sends every activity of a conversation, for up to an hour, with the same channel token, and
checking it through botbuilder (base64 and JSON of three segments, an RSA signature, issuer,
endorsement, expiry, the ``serviceurl`` claim) was the webhook's largest CPU cost after the body
itself. :class:`ValidatedTokens` remembers the outcome of a *successful* check, keyed by the exact
token string, so a repeat costs one dictionary lookup. Only success is remembered (a failure always
goes the full way again, so nothing an attacker sends can poison the cache); an entry is served
only until the token's own ``exp`` and only while the signing-key set it was verified against is
unchanged (any refresh of the OpenID keys — scheduled, or for a rotated ``kid`` — voids every
entry); and only for an activity with the same ``channelId`` (the key's endorsement was checked for
it) and ``serviceUrl`` (the claim was compared with it). Whatever depends on the activity or on the
live bot registry — the audience being a registered bot, the recipient, the ``serviceurl`` claim —
is checked by :class:`relay.teams.auth.InboundAuthenticator` on every request, hit or not.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_ENTRIES = 1024  # Teams reuses one token per bot for an hour: a handful are live


@dataclass(frozen=True, slots=True)
class ValidatedToken:
    """What full validation established about one token, for the activity it came with."""

    claims: dict[str, Any]
    caller_id: str | None
    channel_id: str
    service_url: str
    expires_at: float  # the token's ``exp`` (epoch seconds): never served at or after it
    key_generation: object  # the signing-key set it was verified against
    request_result: Any = field(default=None, compare=False, repr=False)


def token_expiry(claims: dict[str, Any]) -> float | None:
    """The ``exp`` claim as epoch seconds, or None when absent or not a number (then uncached)."""
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


class ValidatedTokens:
    """LRU of successfully validated tokens (never failures); see the module docstring."""

    def __init__(
        self, max_entries: int = DEFAULT_MAX_ENTRIES, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_entries = max_entries
        self.clock = clock  # wall clock: ``exp`` is epoch seconds
        self._entries: OrderedDict[str, ValidatedToken] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(
        self, token: str, *, channel_id: str | None, service_url: str | None, key_generation: object
    ) -> ValidatedToken | None:
        """The entry for ``token`` if it is still servable for this activity, else None."""
        entry = self._entries.get(token)
        if entry is None:
            self.misses += 1
            return None
        if entry.key_generation != key_generation or self.clock() >= entry.expires_at:
            del self._entries[token]  # void for everyone: keys changed or the token expired
            self.misses += 1
            return None
        if entry.channel_id != channel_id or entry.service_url != service_url:
            # Another activity shape: the full check decides (and refuses a mismatched claim).
            self.misses += 1
            return None
        self._entries.move_to_end(token)
        self.hits += 1
        return entry

    def put(self, token: str, entry: ValidatedToken) -> None:
        if self.max_entries <= 0 or self.clock() >= entry.expires_at:
            return
        self._entries[token] = entry
        self._entries.move_to_end(token)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
