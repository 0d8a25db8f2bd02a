"""The live bot registry: reloads take effect without a restart and without dropping turns.

End to end through the harness (real relay, botbuilder's inbound validation, msal against the
local issuer, the Teams connector emulator checking every outbound token). The registry file
uses ``secret_file`` references, the way a rotated Kubernetes secret reaches the relay.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.app import REGISTRY, RELOADER
from relay.config import BotConfig
from relay.domain import BotId
from relay.registry import BotRegistry, RegistryReloader
from tests.fakes.harness import BOT_A, BOT_B, Harness, close_harness, make_harness
from tests.fakes.harness import TestBot as Bot


def write_registry(path: Path, bots: list[Bot], secrets: dict[str, str] | None = None) -> None:
    lines: list[str] = []
    for bot in bots:
        secret_path = path.parent / f"{bot.app_id}.secret"
        secret_path.write_text((secrets or {}).get(bot.app_id, bot.secret))
        lines += [
            "[[bots]]",
            f'app_id = "{bot.app_id}"',
            f'tenant_id = "{bot.tenant_id}"',
            f'name = "{bot.name}"',
            f'secret_file = "{secret_path.name}"',
            "",
        ]
    path.write_text("\n".join(lines))


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Harness]:
    """Only BOT_A registered at start; BOT_B is known to the issuer (it exists in Entra)."""
    h = await make_harness(tmp_path, bots=[BOT_A], bots_reload_interval=0)
    h.issuer.register_client(BOT_B.app_id, BOT_B.secret, BOT_B.tenant_id)
    try:
        yield h
    finally:
        await close_harness(h)


def reloader(h: Harness) -> RegistryReloader:
    return h.app[RELOADER]


async def ask(h: Harness, bot: Bot, text: str, conversation: str) -> int:
    resp = await h.deliver(h.activity(bot, text, conversation_id=conversation), bot=bot)
    return resp.status


async def answered(h: Harness, conversation: str, n: int = 1) -> None:
    await h.wait_for(
        lambda: len(h.teams.messages(conversation)) >= n, what=f"answer in {conversation}"
    )


async def test_added_bot_is_rejected_before_and_served_after_a_reload(live: Harness) -> None:
    assert await ask(live, BOT_B, "hello", "a:conv-b1") == 401
    write_registry(live.tmp / "bots.toml", [BOT_A, BOT_B])
    assert await reloader(live).reload() is True
    assert await ask(live, BOT_B, "hello", "a:conv-b2") == 200
    await answered(live, "a:conv-b2")
    assert live.teams.violations == []
    sent = [r for r in live.teams.received if r.conversation_id == "a:conv-b2"]
    assert {r.app_id for r in sent} == {BOT_B.app_id}  # B's own outbound token


async def test_removed_bot_is_rejected_after_a_reload(live: Harness) -> None:
    write_registry(live.tmp / "bots.toml", [BOT_A, BOT_B])
    assert await reloader(live).reload() is True
    assert await ask(live, BOT_A, "hi", "a:conv-a1") == 200
    write_registry(live.tmp / "bots.toml", [BOT_B])
    assert await reloader(live).reload() is True
    assert await ask(live, BOT_A, "hi again", "a:conv-a2") == 401
    assert await ask(live, BOT_B, "still here", "a:conv-b") == 200
    await answered(live, "a:conv-b")


async def test_rotated_secret_is_used_for_the_next_outbound_token(live: Harness) -> None:
    path = live.tmp / "bots.toml"
    write_registry(path, [BOT_A])
    assert await ask(live, BOT_A, "before", "a:conv-r1") == 200
    await answered(live, "a:conv-r1")
    requests_before = live.issuer.token_requests
    # Entra now knows only the new secret; the old cached token stays valid until it expires,
    # but the relay must fetch the next one with the new secret.
    rotated = "rotated-secret-a-777"
    live.issuer.register_client(BOT_A.app_id, rotated, BOT_A.tenant_id)
    write_registry(path, [BOT_A], secrets={BOT_A.app_id: rotated})
    assert await reloader(live).reload() is True
    assert live.app[REGISTRY].get(BOT_A.app_id).secret.get_secret_value() == rotated  # type: ignore[union-attr]
    assert await ask(live, BOT_A, "after", "a:conv-r2") == 200
    await answered(live, "a:conv-r2")
    assert live.issuer.token_requests > requests_before
    assert live.teams.violations == []


async def test_invalid_registry_is_rejected_and_the_old_one_stays(
    live: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    path = live.tmp / "bots.toml"
    registry = live.app[REGISTRY]
    version = registry.version
    for bad in (
        "[[bots]]\napp_id = 'not-a-guid'\n",
        "this is = = not toml",
        f'[[bots]]\napp_id = "{BOT_A.app_id}"\ntenant_id = "{BOT_A.tenant_id}"\nsecret = "x"\n',
        "",  # no bots at all
    ):
        path.write_text(bad)
        with caplog.at_level(logging.ERROR, logger="relay.registry"):
            assert await reloader(live).reload(reason="SIGHUP") is False
        assert "rejected" in caplog.text
        assert "inline" not in caplog.text or "secrets must not be inline" in caplog.text
        caplog.clear()
    assert registry.version == version
    assert [b.app_id for b in registry.bots] == [BOT_A.app_id]
    assert await ask(live, BOT_A, "still served", "a:conv-i") == 200
    await answered(live, "a:conv-i")


async def test_in_flight_turn_completes_across_a_reload_that_removes_its_bot(
    live: Harness,
) -> None:
    live.neo.first_chunk_delay = 1.0  # the turn is in flight for a second
    assert await ask(live, BOT_A, "slow question", "a:conv-slow") == 200
    await live.wait_for(lambda: len(live.neo.posted_messages) == 1, what="the turn to be posted")
    write_registry(live.tmp / "bots.toml", [BOT_B])
    assert await reloader(live).reload() is True
    assert await ask(live, BOT_A, "new question", "a:conv-new") == 401  # inbound: gone at once
    await answered(live, "a:conv-slow")  # outbound: the accepted turn still delivers
    [msg] = live.teams.messages("a:conv-slow")
    assert "slow question" in msg["text"]
    assert live.teams.violations == []


async def test_polling_picks_up_a_changed_file(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, bots=[BOT_A], bots_reload_interval=0.05)
    try:
        write_registry(h.tmp / "bots.toml", [BOT_A, BOT_B])
        await h.wait_for(lambda: BOT_B.app_id in h.app[REGISTRY], what="the poll to reload")
        assert reloader(h).reloads == 1
    finally:
        await close_harness(h)


async def test_sighup_reloads(live: Harness) -> None:
    write_registry(live.tmp / "bots.toml", [BOT_A, BOT_B])
    os.kill(os.getpid(), signal.SIGHUP)
    await live.wait_for(lambda: BOT_B.app_id in live.app[REGISTRY], what="SIGHUP to reload")


def _bot(app_id: str, name: str = "x") -> BotConfig:
    return BotConfig(app_id=BotId(app_id), tenant_id=None, name=name, app_type="MultiTenant")  # type: ignore[arg-type]


async def test_registry_replace_reports_changes_and_keeps_removed_bots_for_outbound() -> None:
    registry = BotRegistry([_bot(BOT_A.app_id)], retired_grace=0.2)
    heard = []
    registry.subscribe(heard.append)
    change = registry.replace([_bot(BOT_A.app_id, "renamed"), _bot(BOT_B.app_id)])
    assert (change.added, change.removed, change.changed) == ((BOT_B.app_id,), (), (BOT_A.app_id,))
    assert registry.replace(registry.bots).empty
    assert len(heard) == 1  # no-op replaces are silent
    registry.replace([_bot(BOT_B.app_id)])
    assert BOT_A.app_id not in registry
    assert registry.get(BOT_A.app_id) is None
    assert registry.get_for_outbound(BOT_A.app_id) is not None  # its grace period
    await asyncio.sleep(0.25)
    assert registry.get_for_outbound(BOT_A.app_id) is None


async def test_reload_resolves_secret_env_where_the_settings_were_loaded_from(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # `relay demo` loads its settings from its own mapping, not os.environ: a reload must find
    # the same secret_env variables there (it once logged "… is not set" every few seconds).
    from relay.config import load_settings

    variable = "RELAY_TEST_ONLY_IN_SETTINGS_SECRET"
    assert variable not in os.environ
    bots = tmp_path / "bots.toml"
    bots.write_text(
        f'[[bots]]\napp_id = "{BOT_A.app_id}"\ntenant_id = "{BOT_A.tenant_id}"\n'
        f'secret_env = "{variable}"\n'
    )
    env = {
        "NEO_API_KEY": "neo_sk_test_Sup3rS3cretValue0123456789",
        "RELAY_BOTS_FILE": str(bots),
        variable: "a-real-looking-secret-0123456789",
    }
    settings = load_settings(env)
    assert settings.environment()[variable] == env[variable]
    registry = BotRegistry(settings.bots)
    ours = RegistryReloader(registry, bots, env=settings.environment, interval=0)
    assert await ours.reload(reason="periodic check")
    process_env = RegistryReloader(registry, bots, interval=0)  # the old behaviour: os.environ
    with caplog.at_level(logging.ERROR, logger="relay.registry"):
        assert not await process_env.reload(reason="periodic check")
    assert "(periodic check) rejected" in caplog.text
    assert f"{variable} is not set" in caplog.text
