"""Registry entries with certificate credentials: each mistake is one ConfigError naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import load_bots
from relay.errors import ConfigError

APP = "0c0c0c0c-5555-4555-8555-cccccccccccc"
TENANT = "7e7e7e7e-6666-4666-8666-cccccccccccc"
THUMB = "AB" * 20
PEM = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"


def load(tmp: Path, body: str, env: dict[str, str] | None = None) -> object:
    (tmp / "k.pem").write_text(PEM)
    (tmp / "not.pem").write_text("hello")
    path = tmp / "bots.toml"
    path.write_text(f'[[bots]]\napp_id = "{APP}"\ntenant_id = "{TENANT}"\n{body}\n')
    return load_bots(path, env=env or {})


def test_certificate_from_file_or_env(tmp_path: Path) -> None:
    [bot] = load(
        tmp_path, f'certificate_thumbprint = "{THUMB.lower()}"\ncertificate_key_file = "k.pem"'
    )  # type: ignore[misc]
    assert bot.certificate.thumbprint == THUMB
    assert bot.secret is None
    assert PEM not in repr(bot)  # SecretStr
    [bot] = load(  # type: ignore[misc]
        tmp_path,
        f'certificate_thumbprint = "{THUMB}"\ncertificate_key_env = "BOT_KEY"',
        env={"BOT_KEY": PEM},
    )
    assert bot.certificate.private_key.get_secret_value() == PEM


@pytest.mark.parametrize(
    ("body", "key", "words"),
    [
        ('certificate_key_file = "k.pem"', "certificate_thumbprint", "missing"),
        (
            'certificate_thumbprint = "abc"\ncertificate_key_file = "k.pem"',
            "certificate_thumbprint",
            "40 hex",
        ),
        (f'certificate_thumbprint = "{THUMB}"', "certificate_key_file", "missing"),
        (
            f'certificate_thumbprint = "{THUMB}"\ncertificate_key_file = "nope.pem"',
            "certificate_key_file",
            "cannot read",
        ),
        (
            f'certificate_thumbprint = "{THUMB}"\ncertificate_key_file = "not.pem"',
            "certificate_key_file",
            "not a PEM",
        ),
        (
            f'certificate_thumbprint = "{THUMB}"\ncertificate_key_env = "UNSET"',
            "certificate_key_env",
            "not set",
        ),
        (
            f'certificate_thumbprint = "{THUMB}"\ncertificate_key_file = "k.pem"\n'
            'certificate_public_file = "not.pem"',
            "certificate_public_file",
            "not a PEM certificate",
        ),
        (
            f'certificate_thumbprint = "{THUMB}"\ncertificate_key_file = "k.pem"\nsecret_env = "S"',
            "certificate_thumbprint",
            "one credential",
        ),
        (
            f'app_type = "UserAssignedMSI"\ncertificate_thumbprint = "{THUMB}"\n'
            'certificate_key_file = "k.pem"',
            "certificate_thumbprint",
            "one credential",
        ),
        (
            f'certificate_thumbprint = "{THUMB}"\ncertificate_key_file = "k.pem"\n'
            'certificate_passphrase = "x"',
            "bots[0]",
            "unknown field 'certificate_passphrase'",
        ),
    ],
)
def test_certificate_mistakes_name_the_key(tmp_path: Path, body: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, body, env={"S": "a-real-looking-secret"})
    assert key in info.value.key
    assert words in info.value.reason
    assert "BEGIN PRIVATE KEY" not in str(info.value)
