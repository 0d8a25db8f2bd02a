"""The relay's one exception tree, classified by what the caller may do next.

Foreign exceptions (httpx, msrest, botbuilder, PyJWT, msal) are translated into these at the
package boundary (``relay.neo`` and ``relay.teams``), so the pipeline branches on meaning, not on
library types::

    RelayError
    ├── ConfigError              bad configuration; start-up stops, naming the key
    ├── InboundError             a bad inbound request; answered with ``status`` and nothing else
    │   └── AuthError            401: missing/forged/expired token, unknown audience, ...
    ├── LeaseLost                another replica owns the conversation now: stop, say nothing
    └── UpstreamError            a call to Neo or Teams failed (service, status, code, request_id)
        ├── RetryableError       safe to repeat after ``retry_after`` seconds (429, 503, drop
        │                        before the request was sent, idempotent calls on 5xx)
        ├── AmbiguousError       may or may not have taken effect: never replay a create
        ├── PermanentError       will fail the same way again (4xx other than 429)
        │   └── UserFacingError  the upstream message is written for end users: show it verbatim
        ├── CredentialError      our own credential was refused or could not be obtained
        └── StreamError          Teams ended a streamed message (see ``relay.teams.stream``)
            ├── StreamCancelled  the user pressed Stop: stop sending, no final message
            ├── StreamNotAllowed streaming is not available here: fall back to a normal message
            ├── StreamTimedOut   the 2-minute cap hit: finish outside the stream
            └── StreamRejected   any other stream 403/400: finish outside the stream

Retry *policy* (how many attempts, which delays) lives in ``relay.retry``; this module only says
whether a retry is allowed.
"""

from __future__ import annotations


class RelayError(Exception):
    """Base of every error the relay raises on purpose."""


class ConfigError(RelayError):
    """Configuration that cannot work; ``key`` is the setting an operator must fix."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class InboundError(RelayError):
    """An inbound HTTP request we refuse; ``status`` is the HTTP status to answer with."""

    status = 400

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if status is not None:
            self.status = status


class AuthError(InboundError):
    """The Bot Framework token did not authenticate the request (always a 401, never a 500)."""

    status = 401


class LeaseLost(RelayError):
    """A write was fenced off: a newer holder of the conversation's lease exists (relay.replicas).

    The turn belongs to that holder now; the stale one must stop without a visible effect, since
    anything it told the user would be a second outcome (DESIGN.md invariant 3).
    """

    def __init__(self, key: str, token: int) -> None:
        super().__init__(f"lease {key!r} token {token} is stale")
        self.key = key
        self.token = token


class UpstreamError(RelayError):
    """A call to an upstream service (``neo`` or ``teams``) failed."""

    def __init__(
        self,
        message: str,
        *,
        service: str,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.service = service
        self.status = status
        self.code = code
        self.request_id = request_id

    def __str__(self) -> str:
        bits = [self.service]
        if self.status is not None:
            bits.append(str(self.status))
        if self.code:
            bits.append(self.code)
        head = " ".join(bits)
        tail = f" (request_id {self.request_id})" if self.request_id else ""
        return f"{head}: {self.message}{tail}"


class RetryableError(UpstreamError):
    """Safe to repeat; wait ``retry_after`` seconds first when the server said so."""

    def __init__(
        self,
        message: str,
        *,
        service: str,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, service=service, status=status, code=code, request_id=request_id)
        self.retry_after = retry_after


class AmbiguousError(UpstreamError):
    """The request may have taken effect (timeout or 5xx after sending a create): never replay."""


class PermanentError(UpstreamError):
    """Repeating the request will not help."""


class UserFacingError(PermanentError):
    """Upstream refused with a message meant for the end user (e.g. ``end_company_not_mapped``)."""


class CredentialError(UpstreamError):
    """Our own credential was refused (Neo 401/403) or a bot token could not be obtained."""


class StreamError(UpstreamError):
    """Teams refused a streaming update; subclasses say what to do instead."""


class StreamCancelled(StreamError):
    """The user pressed Stop: send nothing more for this stream."""


class StreamNotAllowed(StreamError):
    """Streaming is not possible in this conversation: deliver as a normal message."""


class StreamTimedOut(StreamError):
    """The stream hit Teams' 2-minute cap: deliver the rest outside the stream."""


class StreamRejected(StreamError):
    """Any other refusal of a streamed update (size, non-cumulative text, already finished)."""
