"""Host allow-lists: where the relay may send a bot token or fetch a file from.

A Teams activity names the ``serviceUrl`` the reply must go to, and attachment URLs the relay will
download. Both come from the request body, so a forged activity could point them anywhere; the
relay checks every such URL against an operator-controlled allow-list *before* any outbound call
(reference: peers-and-pitfalls.md §1 "Inbound auth", teams-platform.md §5). Patterns are host
globs (``*.botframework.com``) that admit only ``https``; a pattern written with an explicit
``http://`` prefix (``http://127.0.0.1``) also admits plain http, which only tests and local
emulators need.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

# Hosts that may receive the bot's Bot Framework token (inline image downloads), over https on the
# default port, besides the conversation's own serviceUrl origin. Reference teams-platform.md §5:
# "Attach the bot token only to Bot Framework hosts". Exact names, never a wildcard under
# trafficmanager.net: any Azure customer can register a Traffic Manager name (issue 16). The Teams
# connector hosts are Microsoft's documented serviceUrls — public smba.trafficmanager.net, and
# smba.infra.{gcc,gov,dod} for GCC, GCC High and DoD (Microsoft 365 Agents SDK
# ``TeamsServiceEndpoints``); *.botframework.us / *.botframework.azure.us are the US Government
# Bot Framework domains (botframework-connector ``GovernmentConstants``).
BOT_FRAMEWORK_TOKEN_HOSTS = (
    "smba.trafficmanager.net",
    "*.botframework.com",
    "smba.infra.gcc.teams.microsoft.com",
    "smba.infra.gov.teams.microsoft.us",
    "smba.infra.dod.teams.microsoft.us",
    "*.botframework.us",
    "*.botframework.azure.us",
)


@dataclass(frozen=True, slots=True)
class _Pattern:
    host: str
    allow_http: bool


@dataclass(frozen=True)
class HostAllowlist:
    """Decides whether a URL's scheme and host are allowed."""

    patterns: tuple[_Pattern, ...]

    @classmethod
    def parse(cls, entries: tuple[str, ...] | list[str]) -> HostAllowlist:
        out: list[_Pattern] = []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            allow_http = entry.startswith("http://")
            entry = entry.removeprefix("http://").removeprefix("https://").split("/", 1)[0]
            out.append(_Pattern(host=entry, allow_http=allow_http))
        return cls(tuple(out))

    def allows(self, url: str) -> bool:
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
            port = parts.port
        except ValueError:
            return False
        if parts.scheme not in ("https", "http") or not host or parts.username or parts.password:
            return False
        hostport = f"{host}:{port}" if port else host
        for p in self.patterns:
            if parts.scheme == "http" and not p.allow_http:
                continue
            # A pattern without a port matches any port on that host; one with a port, only it.
            target = hostport if ":" in p.host else host
            if fnmatchcase(target, p.host) or (p.host.startswith("*.") and target == p.host[2:]):
                return True
        return False
