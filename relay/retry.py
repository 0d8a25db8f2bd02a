"""The relay's retry policy, declared in one place.

Every retry loop in the relay goes through :func:`retry_call` with one of the named policies below,
so "how often, how long, which failures" can be read and tuned here. Whether a failure *may* be
retried is decided by its class in :mod:`relay.errors`: :class:`RetryableError` always (waiting
``retry_after`` when the server said so), :class:`AmbiguousError` only when the caller vouches the
call is idempotent (Neo's ``client_message_id``, a Teams update by id, a typing indicator) — a
Teams message *create* that failed ambiguously is never repeated, because the Bot Connector has no
idempotency key and a replay shows the user the answer twice (openclaw#121116, reference
peers-and-pitfalls.md §5).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from relay.errors import AmbiguousError, RetryableError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter; ``attempts`` counts the first try."""

    name: str
    attempts: int
    base: float
    cap: float
    max_retry_after: float = 60.0  # never sleep longer than this on a server's say-so

    def backoff(self, attempt: int) -> float:
        """Delay before retry ``attempt`` (1-based): random in [c/2, c], c = min(cap, base*2^n)."""
        ceiling = min(self.cap, self.base * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)


# Neo: session create, message post (idempotent via client_message_id), reset, uploads.
NEO = RetryPolicy("neo", attempts=5, base=0.5, cap=8.0)
# Teams connector: sends, updates, typing. Microsoft's guidance: Retry-After, else backoff + jitter.
TEAMS = RetryPolicy("teams", attempts=6, base=1.0, cap=16.0)
# Attachment downloads from Teams / SharePoint (a GET; a turn should not wait long on a file).
DOWNLOAD = RetryPolicy("download", attempts=3, base=0.5, cap=4.0)
# The install greeting: whole rounds of TEAMS retries, for an outage longer than one round; the
# greeting is a courtesy, so a few rounds, then the claim is given back (relay.commands).
GREETING = RetryPolicy("greeting", attempts=3, base=30.0, cap=120.0)
# Bot token acquisition from Entra.
TOKEN = RetryPolicy("token", attempts=4, base=1.0, cap=8.0)

# Observers of every scheduled retry (relay.ops.metrics counts them); called before the sleep.
ON_RETRY: list[Callable[[RetryPolicy, BaseException], None]] = []


def notify_retry(policy: RetryPolicy, error: BaseException) -> None:
    """Tell the ON_RETRY observers a retry is scheduled (for loops that pace their own retries)."""
    for hook in ON_RETRY:
        hook(policy, error)


class _Testing:
    """Lets tests shrink every wait without changing the policies (like stamina.set_testing)."""

    scale: float = 1.0


def set_delay_scale(scale: float) -> None:
    """Multiply every retry delay by ``scale`` (tests use a small value to stay fast)."""
    _Testing.scale = scale


async def retry_call(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    idempotent: bool = False,
    deadline: float | None = None,
    what: str = "call",
) -> T:
    """Run ``fn`` until it succeeds, a non-retryable error escapes, or the policy runs out.

    Args:
        fn: the call; a fresh attempt each time.
        policy: how many attempts and which delays.
        idempotent: the caller vouches a repeat is harmless, so :class:`AmbiguousError` is retried.
        deadline: a ``time.monotonic()`` instant after which no new attempt starts.
        what: a label for log lines.

    Raises:
        The last error when attempts run out, or the first error that may not be retried.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return await fn()
        except RetryableError as exc:
            delay = exc.retry_after if exc.retry_after is not None else policy.backoff(attempt)
            delay = min(delay, policy.max_retry_after)
            err: Exception = exc
        except AmbiguousError as exc:
            if not idempotent:
                raise
            delay, err = policy.backoff(attempt), exc
        if attempt >= policy.attempts:
            raise err
        delay *= _Testing.scale
        if deadline is not None and time.monotonic() + delay > deadline:
            raise err
        log.warning(
            "retrying %s in %.2fs (attempt %d/%d): %s",
            what,
            delay,
            attempt + 1,
            policy.attempts,
            err,
            extra={"retry_policy": policy.name},
        )
        notify_retry(policy, err)
        await asyncio.sleep(delay)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)
