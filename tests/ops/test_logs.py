"""Log formats, correlation ids and redaction (DESIGN.md invariant 7).

The formatters are exercised through a real ``logging`` handler, and the end-to-end test captures
what the relay logs while a turn runs against the emulators, so a log line that loses its turn id
or leaks a secret fails here.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from relay.ops.logs import (
    ContextFilter,
    JsonFormatter,
    RedactingFilter,
    TextFormatter,
    configure_logging,
    log_context,
    redact,
    register_secrets,
    secret_values,
    turn_context,
)
from tests.fakes.harness import BOT_A, BOT_B, NEO_KEY, Harness

ENTRA_SECRET = "abc8Q~" + "Zy9_xW8.vU7-tS6~rQ5pO4nM3lK2jI1hG0f"


@pytest.fixture
def capture() -> Iterator[tuple[io.StringIO, logging.Handler]]:
    """A handler wired the way configure_logging wires one, writing into a buffer."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buf, handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def _lines(buf: io.StringIO) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]
    return [line for line in lines if str(line["logger"]).startswith("relay")]


def _turn(session_id: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        turn_id="t-123", activity_id="a-9", session_id=session_id, bot_id=BOT_A.app_id
    )


def test_redact_masks_every_secret_shape() -> None:
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    text = f"key {NEO_KEY} auth Bearer abc.def-ghi jwt {jwt} entra {ENTRA_SECRET} end"
    out = redact(text)
    for secret in (NEO_KEY, "abc.def-ghi", jwt, ENTRA_SECRET):
        assert secret not in out
    assert out.startswith("key neo_sk_test_*** auth Bearer *** jwt eyJhbGciOiJSUzI1NiJ9***")
    assert out.endswith(" entra *** end")


def test_registered_secrets_are_masked_wherever_they_appear() -> None:
    register_secrets(["plain-bot-secret-42", "short"])
    assert redact("x plain-bot-secret-42 y") == "x *** y"
    assert redact("a short word") == "a short word"  # too short to be registered


def test_secret_values_cover_the_settings(tmp_path: object) -> None:
    from relay.config import load_settings

    env = {"NEO_API_KEY": NEO_KEY, "RELAY_ALLOW_ANONYMOUS": "true"}
    settings = load_settings(env, database_url="redis://:hunter2-pass@127.0.0.1:6379/0")
    assert secret_values(settings) == [NEO_KEY, "hunter2-pass"]


def test_json_lines_carry_the_turn_context(capture: tuple[io.StringIO, logging.Handler]) -> None:
    buf, _ = capture
    log = logging.getLogger("relay.test")
    turn = _turn()
    log.info("outside")
    with turn_context(turn):  # type: ignore[arg-type]
        log.info("before session")
        turn.session_id = "s-77"  # learnt half-way through the turn
        with log_context(request_id="req-1"):
            log.warning("neo said no")
        log.info("explicit", extra={"turn_id": "override"})
    outside, before, neo, explicit = _lines(buf)
    assert "turn_id" not in outside
    assert before["turn_id"] == "t-123"
    assert before["activity_id"] == "a-9"
    assert before["bot_id"] == BOT_A.app_id
    assert "session_id" not in before
    assert neo["session_id"] == "s-77"
    assert neo["request_id"] == "req-1"
    assert neo["level"] == "warning"
    assert neo["logger"] == "relay.test"
    assert explicit["turn_id"] == "override"


async def test_tasks_started_inside_a_turn_inherit_its_context(
    capture: tuple[io.StringIO, logging.Handler],
) -> None:
    buf, _ = capture

    async def child() -> None:
        logging.getLogger("relay.child").info("from a task")

    with turn_context(_turn("s-1")):  # type: ignore[arg-type]
        task = asyncio.create_task(child())
    await task
    [line] = _lines(buf)
    assert line["turn_id"] == "t-123"
    assert line["session_id"] == "s-1"


def test_text_format_is_readable_and_redacted() -> None:
    fmt = TextFormatter()
    record = logging.LogRecord("relay.x", logging.INFO, __file__, 1, "got %s", (NEO_KEY,), None)
    record.turn_id = "t-1"
    line = fmt.format(record)
    assert " INFO    relay.x: got neo_sk_test_*** [turn=t-1]" in line
    assert NEO_KEY not in line


def test_tracebacks_are_redacted_in_both_formats() -> None:
    try:
        raise RuntimeError(f"boom Authorization: Bearer {ENTRA_SECRET}")
    except RuntimeError:
        import sys

        record = logging.LogRecord("r", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    for fmt in (JsonFormatter(), TextFormatter()):
        out = fmt.format(record)
        assert "RuntimeError" in out
        assert ENTRA_SECRET not in out


def test_configure_logging_picks_the_format(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO", json_format=True, secrets=["configured-secret-xyz"])
        logging.getLogger("relay.t").info("value configured-secret-xyz")
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert json.loads(err)["msg"] == "value ***"
        configure_logging("INFO", json_format=False)
        logging.getLogger("relay.t").info("plain")
        assert capsys.readouterr().err.rstrip().endswith("relay.t: plain")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


async def test_a_real_turn_logs_correlated_lines_and_no_secret(
    harness: Harness, capture: tuple[io.StringIO, logging.Handler]
) -> None:
    buf, _ = capture
    register_secrets(secret_values(harness.settings))
    harness.neo.fail_next("create_session", 500, code="internal", times=1)
    act = harness.activity(BOT_A, "hello", conversation_id="a:conv-l1")
    assert (await harness.deliver(act, bot=BOT_A)).status == 200
    await harness.wait_for(lambda: len(harness.teams.messages("a:conv-l1")) == 1, what="reply")
    await harness.wait_idle()
    lines = _lines(buf)
    text = buf.getvalue()
    for secret in (NEO_KEY, BOT_A.secret, BOT_B.secret):
        assert secret not in text
    neo_failure = [line for line in lines if "failed: 500" in str(line["msg"])]
    assert neo_failure, "the Neo 500 was not logged"
    assert all(line.get("turn_id") and line.get("activity_id") == act["id"] for line in neo_failure)
    assert all("request_id" in line for line in neo_failure)
