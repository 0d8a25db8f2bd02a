"""Build one Teams app package per white-label bot, validated against the official schema.

Every MSP bot needs its own package — its own manifest ``id``, ``bots[0].botId``, name, icons and
developer URLs (teams-platform.md §7 "White-label") — and a bad one is only discovered when an
admin uploads it. So the package is assembled from the registry's ``[bots.branding]`` (or CLI
overrides), the icons are checked (PNG, 192×192 colour, 32×32 white outline on transparent), and
the manifest is validated with ``jsonschema.Draft4Validator`` against the bundled
``MicrosoftTeams.schema.json`` v1.24 (MIT, see assets/NOTICE.md) *before* the zip is written. Any
problem is a :class:`relay.errors.ConfigError` whose key names the branding field to fix.
jsonschema serves only this command, so it comes with the ``manifest`` extra and is imported here
when a package is validated, not when the relay starts.
"""

from __future__ import annotations

import json
import re
import uuid
import zipfile
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relay.config import BotConfig
from relay.errors import ConfigError
from relay.manifest.png import PngError, read_png, rgba_pixels
from relay.registry_fields import Branding

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

MANIFEST_EXTRA = "pip install 'neo-teams-relay[manifest]'"

# 1.24: widely supported by the Teams admin center and the toolkit (§7 "Versions"), and it has
# everything a chat bot needs. `manifestVersion` is a const that must match the `$schema` URL.
MANIFEST_VERSION = "1.24"
SCHEMA_URL = f"https://developer.microsoft.com/json-schemas/teams/v{MANIFEST_VERSION}/MicrosoftTeams.schema.json"
SCHEMA_RESOURCE = f"MicrosoftTeams.v{MANIFEST_VERSION}.schema.json"
# Fixed namespace: the same bot id always yields the same Teams app id, so a rebuilt package
# updates the installed app instead of appearing as a second one.
APP_ID_NAMESPACE = uuid.UUID("5d0f3c9e-6b2a-4f41-9a57-1c0e8f7b2d64")
BOT_FRAMEWORK_DOMAIN = "*.botframework.com"
COLOR_SIZE, OUTLINE_SIZE = 192, 32
DEFAULTS = {"accent_color": "#2B5797", "version": "1.0.0"}
REQUIRED = ("developer_name", "website_url", "privacy_url", "terms_of_use_url")
COMMANDS = (
    ("/new", "Start a new conversation with a fresh context"),
    ("/reset", "Forget this conversation and start over"),
    ("/smart", "Answer the question typed after it with the most capable model"),
    ("/help", "Show what this assistant can do and the available commands"),
)
_SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_HOST = re.compile(r"^(?:\*\.)?[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::\d{1,5})?$")
# Manifest path (as jsonschema reports it) -> the branding field an operator edits.
FIELD_FOR_PATH = {
    "name.short": "short_name",
    "name.full": "full_name",
    "description.short": "short_description",
    "description.full": "full_description",
    "developer.name": "developer_name",
    "developer.websiteUrl": "website_url",
    "developer.privacyUrl": "privacy_url",
    "developer.termsOfUseUrl": "terms_of_use_url",
    "accentColor": "accent_color",
    "version": "version",
    "id": "manifest_id",
}
_ZIP_DATE = (2024, 1, 1, 0, 0, 0)  # fixed timestamps: the same inputs give the same bytes


@dataclass(frozen=True)
class AppPackage:
    """A validated package, ready to be written."""

    bot_id: str
    manifest: dict[str, Any]
    color_png: bytes
    outline_png: bytes

    def zip_bytes(self) -> bytes:
        import io

        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            # Files at the zip root, never inside a folder (§7 "Package layout").
            for name, data in (
                ("manifest.json", json.dumps(self.manifest, indent=2).encode() + b"\n"),
                ("color.png", self.color_png),
                ("outline.png", self.outline_png),
            ):
                zf.writestr(zipfile.ZipInfo(name, _ZIP_DATE), data)
        return buffer.getvalue()

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.bot_id}.zip"
        path.write_bytes(self.zip_bytes())
        return path


def asset_bytes(name: str) -> bytes:
    return resources.files("relay.manifest").joinpath("assets", name).read_bytes()


@cache
def schema() -> dict[str, Any]:
    """The official v1.24 schema, shipped inside the package (no network, no ../shared)."""
    # No Draft4Validator.check_schema(): the schema's Office-extension part uses ECMA-262 `\p{L}`
    # patterns Python's re cannot compile. They sit under `extensions`, which a bot manifest
    # never has, so validation never evaluates them.
    data: dict[str, Any] = json.loads(asset_bytes(SCHEMA_RESOURCE))
    return data


def app_id_for(bot_id: str) -> str:
    return str(uuid.uuid5(APP_ID_NAMESPACE, bot_id.lower()))


def effective_branding(bot: BotConfig, overrides: dict[str, Any] | None = None) -> Branding:
    """Registry branding, with CLI overrides (non-None values) on top."""
    base = bot.branding or Branding()
    update = {k: v for k, v in (overrides or {}).items() if v is not None}
    return base.model_copy(update=update)


def build_package(
    bot: BotConfig, branding: Branding, *, public_host: str | None = None
) -> AppPackage:
    """Assemble and validate one bot's package. Raises ConfigError naming the field."""
    key = f"bot {bot.app_id}: branding"
    values = branding.model_dump()
    for name in REQUIRED:
        if not values.get(name):
            raise ConfigError(
                f"{key}.{name}", "missing: set it in [bots.branding] or on the command line"
            )
    for name in ("website_url", "privacy_url", "terms_of_use_url"):
        # The schema admits http://; Teams' store validation does not (§7 "Required fields").
        if not str(values[name]).lower().startswith("https://"):
            raise ConfigError(f"{key}.{name}", f"must be an https:// URL, not {values[name]!r}")
    version = branding.version or DEFAULTS["version"]
    if not _SEMVER.match(version):
        raise ConfigError(f"{key}.version", f"{version!r} is not a semantic version like 1.0.0")
    color = _load_icon(key, "color_icon", branding.color_icon, "color.png")
    outline = _load_icon(key, "outline_icon", branding.outline_icon, "outline.png")
    check_color_icon(f"{key}.color_icon", color)
    check_outline_icon(f"{key}.outline_icon", outline)
    manifest = manifest_for(bot, branding, public_host=public_host)
    validate_manifest(manifest, key=key)
    return AppPackage(bot.app_id, manifest, color, outline)


def manifest_for(
    bot: BotConfig, branding: Branding, *, public_host: str | None = None
) -> dict[str, Any]:
    short = branding.short_name or bot.name or "Neo Support"
    full = branding.full_name or short
    domains = [BOT_FRAMEWORK_DOMAIN]
    if public_host:
        host = public_host.strip().lower()
        if "://" in host or not _HOST.match(host):
            raise ConfigError("--public-host", f"{public_host!r} is not a host name (no scheme)")
        domains.append(host)
    scopes = ["personal", "team", "groupChat"]
    commands = [{"title": t, "description": d} for t, d in COMMANDS]
    return {
        "$schema": SCHEMA_URL,
        "manifestVersion": MANIFEST_VERSION,
        "version": branding.version or DEFAULTS["version"],
        "id": (branding.manifest_id or app_id_for(bot.app_id)).lower(),
        "developer": {
            "name": branding.developer_name,
            "websiteUrl": branding.website_url,
            "privacyUrl": branding.privacy_url,
            "termsOfUseUrl": branding.terms_of_use_url,
        },
        "name": {"short": short, "full": full},
        "description": {
            "short": branding.short_description or f"{short} answers your IT questions in Teams.",
            "full": branding.full_description
            or (
                f"{short} is your IT support assistant. Ask a question or describe a problem in "
                "a chat or mention it in a channel; it answers in the conversation and can work "
                "with files you share. Type /help to see the commands."
            ),
        },
        "icons": {"color": "color.png", "outline": "outline.png"},
        "accentColor": branding.accent_color or DEFAULTS["accent_color"],
        "bots": [
            {
                "botId": bot.app_id,
                "scopes": scopes,
                "supportsFiles": True,
                "isNotificationOnly": False,
                "commandLists": [{"scopes": scopes, "commands": commands}],
            }
        ],
        "permissions": ["identity", "messageTeamMembers"],
        "validDomains": domains,
    }


def validate_manifest(manifest: dict[str, Any], *, key: str = "manifest") -> None:
    """Draft-04 validation against the bundled official schema (§7 "Validators")."""
    try:
        from jsonschema import Draft4Validator
    except ImportError:
        raise ConfigError(
            "relay manifest build", f"needs the jsonschema package: {MANIFEST_EXTRA}"
        ) from None
    validator = Draft4Validator(schema())
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
    if errors:
        raise _schema_error(errors[0], key)


def _schema_error(error: ValidationError, key: str) -> ConfigError:
    path = ".".join(str(p) for p in error.absolute_path)
    field = FIELD_FOR_PATH.get(path)
    where = f"manifest {path or '(root)'}, schema v{MANIFEST_VERSION}"
    message = error.message
    if error.validator == "maxLength":
        message = f"is too long ({len(error.instance)} > {error.validator_value} characters)"
    elif error.validator == "pattern":
        message = f"{error.instance!r} does not match {error.validator_value}"
    if field is not None:
        return ConfigError(f"{key}.{field}", f"{message} ({where})")
    return ConfigError(key.removesuffix(": branding"), f"{message} ({where})")


def _load_icon(key: str, field: str, path: Path | None, default: str) -> bytes:
    if path is None:
        return asset_bytes(default)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key}.{field}", f"cannot read {path}: {exc.strerror}") from None


def check_color_icon(key: str, blob: bytes) -> None:
    info = _png(key, blob)
    if (info.width, info.height) != (COLOR_SIZE, COLOR_SIZE):
        raise ConfigError(
            key,
            f"colour icon must be {COLOR_SIZE}×{COLOR_SIZE} pixels, not {info.width}×{info.height}",
        )


def check_outline_icon(key: str, blob: bytes) -> None:
    """32×32, a transparent background, and every visible pixel white (Teams' outline rules)."""
    info = _png(key, blob)
    if (info.width, info.height) != (OUTLINE_SIZE, OUTLINE_SIZE):
        raise ConfigError(
            key,
            f"outline icon must be {OUTLINE_SIZE}×{OUTLINE_SIZE} pixels, not "
            f"{info.width}×{info.height}",
        )
    if not info.has_alpha:
        raise ConfigError(key, "outline icon must have a transparent background (no alpha channel)")
    try:
        pixels = rgba_pixels(info)
    except PngError as exc:
        raise ConfigError(key, str(exc)) from None
    transparent = sum(1 for p in pixels if p[3] == 0)
    if transparent < len(pixels) // 4:
        raise ConfigError(
            key,
            f"outline icon must have a transparent background ({transparent} of {len(pixels)} "
            "pixels are transparent)",
        )
    if any(p[3] and min(p[:3]) < 0xE0 for p in pixels):
        raise ConfigError(key, "outline icon must be white on transparent (found coloured pixels)")


def _png(key: str, blob: bytes) -> Any:
    try:
        return read_png(blob)
    except PngError as exc:
        raise ConfigError(key, f"not a valid PNG: {exc}") from None
