"""``relay manifest build``: packages validated against the official v1.24 schema, clear errors.

The command runs in-process through ``relay.cli.main`` with a real registry file; packages are
read back from the zip and re-validated with the schema the package ships (its bytes are pinned to
the official copy in tests/manifest/test_assets.py), so a drifted bundled schema would fail there.
"""

from __future__ import annotations

import json
import sys
import uuid
import zipfile
from pathlib import Path

import pytest
from jsonschema import Draft4Validator

from relay.cli import main
from relay.config import load_bots
from relay.manifest.build import MANIFEST_VERSION, SCHEMA_URL, app_id_for, asset_bytes
from relay.manifest.png import write_png

BOT_1 = "11111111-2222-3333-4444-555555555555"
BOT_2 = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
TENANT = "99999999-8888-7777-6666-555555555555"
# The bundled copy; tests/manifest/test_assets.py checks it is the official file.
SCHEMA_FILE = (
    Path(__file__).resolve().parents[2] / "relay/manifest/assets/MicrosoftTeams.v1.24.schema.json"
)

BRANDING = """
[bots.branding]
short_name = "Contoso IT"
full_name = "Contoso IT Helpdesk"
developer_name = "Contoso MSP"
website_url = "https://contoso.example"
privacy_url = "https://contoso.example/privacy"
terms_of_use_url = "https://contoso.example/terms"
accent_color = "#112233"
version = "2.1.0"
"""


def registry(tmp: Path, *, branding: str = BRANDING, extra: str = "") -> Path:
    text = f"""
[[bots]]
app_id = "{BOT_1}"
tenant_id = "{TENANT}"
name = "Contoso Support"
secret_env = "SECRET_THAT_IS_NOT_SET"
{branding}
[[bots]]
app_id = "{BOT_2}"
tenant_id = "{TENANT}"
name = "Fabrikam"
secret_env = "SECRET_THAT_IS_NOT_SET"
[bots.branding]
developer_name = "Fabrikam Ltd"
website_url = "https://fabrikam.example"
privacy_url = "https://fabrikam.example/privacy"
terms_of_use_url = "https://fabrikam.example/terms"
{extra}
"""
    path = tmp / "bots.toml"
    path.write_text(text)
    return path


def build(tmp: Path, *args: str) -> int:
    return main(
        [
            "manifest",
            "build",
            "--bots-file",
            str(tmp / "bots.toml"),
            "--out",
            str(tmp / "out"),
            *args,
        ]
    )


def read_package(path: Path) -> tuple[dict[str, object], dict[str, bytes]]:
    with zipfile.ZipFile(path) as zf:
        files = {name: zf.read(name) for name in zf.namelist()}
    return json.loads(files["manifest.json"]), files


def test_every_bot_gets_a_valid_package(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry(tmp_path)
    assert build(tmp_path, "--public-host", "relay.contoso.example") == 0
    packages = sorted((tmp_path / "out").glob("*.zip"))
    assert [p.stem for p in packages] == [BOT_1, BOT_2]
    official = json.loads(SCHEMA_FILE.read_text())
    manifests = []
    for path in packages:
        manifest, files = read_package(path)
        assert sorted(files) == ["color.png", "manifest.json", "outline.png"]  # at the zip root
        assert list(Draft4Validator(official).iter_errors(manifest)) == []
        manifests.append(manifest)
    first, second = manifests
    assert first["$schema"] == SCHEMA_URL
    assert first["manifestVersion"] == MANIFEST_VERSION == "1.24"
    assert first["id"] == str(uuid.uuid5(uuid.UUID("5d0f3c9e-6b2a-4f41-9a57-1c0e8f7b2d64"), BOT_1))
    assert first["id"] != second["id"]
    assert first["name"] == {"short": "Contoso IT", "full": "Contoso IT Helpdesk"}
    assert first["developer"]["name"] == "Contoso MSP"
    assert first["accentColor"] == "#112233"
    assert first["version"] == "2.1.0"
    assert first["validDomains"] == ["*.botframework.com", "relay.contoso.example"]
    [bot] = first["bots"]  # type: ignore[misc]
    assert bot["botId"] == BOT_1
    assert sorted(bot["scopes"]) == ["groupChat", "personal", "team"]
    assert bot["supportsFiles"] is True
    titles = [c["title"] for c in bot["commandLists"][0]["commands"]]
    assert sorted(titles) == ["/help", "/new", "/reset", "/smart"]
    # The second bot has no names of its own: its registry name is the default.
    assert second["name"]["short"] == "Fabrikam"
    assert "manifest v1.24" in capsys.readouterr().out


def test_app_id_is_stable_and_overridable(tmp_path: Path) -> None:
    registry(tmp_path)
    assert build(tmp_path, "--bot", BOT_1) == 0
    first = (tmp_path / "out" / f"{BOT_1}.zip").read_bytes()
    assert build(tmp_path, "--bot", BOT_1) == 0
    assert (tmp_path / "out" / f"{BOT_1}.zip").read_bytes() == first  # byte-identical rebuild
    assert list((tmp_path / "out").glob("*.zip")) == [tmp_path / "out" / f"{BOT_1}.zip"]
    custom = "0f0f0f0f-1111-4111-8111-121212121212"
    assert build(tmp_path, "--bot", BOT_1, "--manifest-id", custom) == 0
    manifest, _ = read_package(tmp_path / "out" / f"{BOT_1}.zip")
    assert manifest["id"] == custom
    assert app_id_for(BOT_1) != custom


@pytest.mark.parametrize(
    ("flags", "field", "words"),
    [
        (["--short-name", "x" * 31], "branding.short_name", "too long (31 > 30"),
        (["--full-name", "x" * 101], "branding.full_name", "too long (101 > 100"),
        (["--short-description", "x" * 81], "branding.short_description", "81 > 80"),
        (["--developer-name", "x" * 33], "branding.developer_name", "33 > 32"),
        (["--accent-color", "blue"], "branding.accent_color", "does not match"),
        (["--accent-color", "#12345"], "branding.accent_color", "does not match"),
        (["--version", "1.0"], "branding.version", "semantic version"),
        (["--website-url", "http://contoso.example"], "branding.website_url", "https://"),
        (["--manifest-id", "not-a-guid"], "branding.manifest_id", "does not match"),
        (["--public-host", "https://relay.example"], "--public-host", "host name"),
    ],
)
def test_bad_branding_names_the_field_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], field: str, words: str
) -> None:
    registry(tmp_path)
    assert build(tmp_path, "--bot", BOT_1, *flags) == 2
    err = capsys.readouterr().err
    assert field in err
    assert words in err
    assert not (tmp_path / "out").exists()


def test_missing_developer_url_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry(tmp_path, branding='[bots.branding]\nshort_name = "Contoso"\n')
    assert build(tmp_path) == 2
    assert f"bot {BOT_1}: branding.developer_name: missing" in capsys.readouterr().err


def test_one_bad_bot_stops_every_package(tmp_path: Path) -> None:
    registry(tmp_path, extra='accent_color = "purple"\n')  # the second bot's branding
    assert build(tmp_path) == 2
    assert not (tmp_path / "out").exists()


def icon(size: int, pixel: tuple[int, int, int, int]) -> bytes:
    return write_png(size, size, [pixel] * size * size)


@pytest.mark.parametrize(
    ("flag", "blob", "words"),
    [
        ("--color-icon", icon(32, (1, 2, 3, 255)), "192×192 pixels, not 32×32"),
        ("--color-icon", b"GIF89a not a png", "not a valid PNG"),
        ("--outline-icon", icon(192, (0, 0, 0, 0)), "32×32 pixels, not 192×192"),
        ("--outline-icon", icon(32, (255, 255, 255, 255)), "transparent background"),
        ("--outline-icon", None, "white on transparent"),
    ],
)
def test_bad_icons_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, blob: bytes | None, words: str
) -> None:
    if blob is None:  # transparent background, but a red mark
        pixels = [(0, 0, 0, 0)] * (32 * 32)
        pixels[32 * 16 + 16] = (255, 0, 0, 255)
        blob = write_png(32, 32, pixels)
    registry(tmp_path)
    (tmp_path / "icon.png").write_bytes(blob)
    assert build(tmp_path, "--bot", BOT_1, flag, str(tmp_path / "icon.png")) == 2
    err = capsys.readouterr().err
    assert flag.removeprefix("--").replace("-", "_") in err
    assert words in err


def test_custom_icons_from_the_registry_end_up_in_the_package(tmp_path: Path) -> None:
    (tmp_path / "brand").mkdir()
    color = icon(192, (200, 10, 10, 255))
    (tmp_path / "brand" / "c.png").write_bytes(color)
    registry(tmp_path, branding=BRANDING + 'color_icon = "brand/c.png"\n')
    assert build(tmp_path, "--bot", BOT_1) == 0
    _, files = read_package(tmp_path / "out" / f"{BOT_1}.zip")
    assert files["color.png"] == color
    assert files["outline.png"] == asset_bytes("outline.png")


def test_registry_branding_rejects_unknown_fields(tmp_path: Path) -> None:
    from relay.errors import ConfigError

    path = registry(tmp_path, branding=BRANDING + 'shortname = "typo"\n')
    with pytest.raises(
        ConfigError,
        match=r"bots\[0\]\.branding: unknown field 'shortname' \(did you mean 'short_name'\?\)",
    ):
        load_bots(path, credentials=False)
    path = registry(tmp_path, branding=BRANDING.replace('"2.1.0"', "2"))
    with pytest.raises(ConfigError, match=r"branding\.version: must be a string"):
        load_bots(path, credentials=False)


def test_no_registry_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RELAY_BOTS_FILE", raising=False)
    assert main(["manifest", "build", "--out", str(tmp_path)]) == 2
    assert "RELAY_BOTS_FILE" in capsys.readouterr().err


def test_without_the_manifest_extra_the_command_says_what_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry(tmp_path)
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # as if the extra were not installed
    assert build(tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "pip install 'neo-teams-relay[manifest]'" in err
    assert not (tmp_path / "out").exists()


def test_command_descriptions_say_what_each_command_does(tmp_path: Path) -> None:
    registry(tmp_path)
    assert build(tmp_path, "--bot", BOT_1) == 0
    [package] = (tmp_path / "out").glob("*.zip")
    manifest, _ = read_package(package)
    [command_list] = manifest["bots"][0]["commandLists"]  # type: ignore[index]
    described = {c["title"]: c["description"] for c in command_list["commands"]}
    # /smart answers the question typed after it (relay/commands.py), not the next one.
    assert "question typed after it" in described["/smart"]
    assert "next question" not in " ".join(described.values())
