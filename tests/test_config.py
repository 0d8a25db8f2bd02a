"""Configuration mistakes a newcomer makes, each answered by one ConfigError naming the key.

A misspelt registry field is named as unknown (with the nearest real name), not reported as some
other field missing; a secret too short to be real is refused rather than used and then masked
all over the relay's error text.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import load_bots
from relay.errors import ConfigError
from relay.ops.logs import mask, redact, register_secrets

APP = "0c0c0c0c-5555-4555-8555-cccccccccccc"
TENANT = "7e7e7e7e-6666-4666-8666-cccccccccccc"
SECRET = "Zy9_xW8.vU7-tS6~rQ5pO4nM3lK2jI1hG0fEdCb"  # 40 characters, like Entra's


def load(tmp: Path, body: str, env: dict[str, str] | None = None) -> object:
    path = tmp / "bots.toml"
    path.write_text(f'[[bots]]\napp_id = "{APP}"\ntenant_id = "{TENANT}"\n{body}\n')
    return load_bots(path, env=env if env is not None else {"BOT_SECRET": SECRET})


def test_a_misspelt_field_is_named_with_the_nearest_real_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, 'secret_envv = "BOT_SECRET"')
    assert info.value.key == "RELAY_BOTS_FILE: bots[0]"
    assert info.value.reason == "unknown field 'secret_envv' (did you mean 'secret_env'?)"
    with pytest.raises(ConfigError) as info:
        load(tmp_path, 'secret_env = "BOT_SECRET"\ntenant = "x"\nnmae = "Bot"')
    assert "'nmae' (did you mean 'name'?)" in info.value.reason
    assert "'tenant' (did you mean 'tenant_id'?)" in info.value.reason


def test_a_field_like_no_other_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, 'secret_env = "BOT_SECRET"\ncolour = "blue"')
    assert info.value.reason.startswith("unknown field 'colour'; known fields: app_id, app_type")


def test_a_secret_too_short_to_be_real_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, 'secret_env = "BOT_SECRET"', env={"BOT_SECRET": "x"})
    assert info.value.key == "RELAY_BOTS_FILE: bots[0].secret_env"
    assert "1 characters, too short to be a real client secret" in info.value.reason
    (tmp_path / "secret.txt").write_text("short-secret\n")
    with pytest.raises(ConfigError) as info:
        load(tmp_path, 'secret_file = "secret.txt"')
    assert info.value.key == "RELAY_BOTS_FILE: bots[0].secret_file"
    [bot] = load(tmp_path, 'secret_env = "BOT_SECRET"')  # type: ignore[misc]
    assert bot.secret.get_secret_value() == SECRET


def test_masking_never_garbles_ordinary_words() -> None:
    register_secrets(["x", "e", "Max", SECRET])  # too short to matter: never masked
    line = f"Max retries exceeded with url: /token (secret {SECRET})"
    assert redact(line) == "Max retries exceeded with url: /token (secret ***)"


def test_a_short_value_is_never_masked_inside_words() -> None:
    assert mask("Max retries exceeded", "x") == "Max retries exceeded"
    assert mask(f"refused {SECRET}", SECRET) == "refused ***"
