"""Logging set-up: a human format for local use, JSON lines for production.

Log records never carry secrets: the relay logs ids and reasons, not headers or bodies, and
:class:`RedactingFilter` masks anything shaped like a Neo key or a bearer token as a last line of
defence (DESIGN.md invariant 7).
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

_SECRET = re.compile(
    r"(neo_sk_[A-Za-z0-9]+_)[A-Za-z0-9_\-]+|(Bearer\s+)[A-Za-z0-9._\-]+|(eyJ[A-Za-z0-9_\-]{8,})\.[A-Za-z0-9._\-]+"
)


def redact(text: str) -> str:
    return _SECRET.sub(lambda m: (m.group(1) or m.group(2) or "") + "***", text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_CONTEXT_KEYS = ("turn_id", "activity_id", "session_id", "request_id", "bot_id", "retry_policy")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in _CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


def configure_logging(level: str = "INFO", *, json_format: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter())
    if json_format:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log adds a line per Teams request; keep it at WARNING unless debugging.
    logging.getLogger("aiohttp.access").setLevel(
        logging.WARNING if level.upper() != "DEBUG" else logging.DEBUG
    )
    logging.getLogger("msal").setLevel(logging.WARNING)
