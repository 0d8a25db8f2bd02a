"""The optional parts of a bot registry entry: certificate credentials and white-label branding.

A bot authenticates outbound with a client secret, a certificate or a managed identity
(teams-platform.md §4.3, §4.4); the certificate's private key is, like a secret, given only *by
reference* (a file or an environment variable) so the registry stays committable. Branding feeds
``relay manifest build`` (§7 "White-label"): it is parsed strictly here (unknown keys and wrong
types are refused when the registry loads) but its values are judged against the official
manifest schema only when a package is built, where the error can name the schema's limit.
Kept out of :mod:`relay.config` so that module stays about settings; it imports nothing of ours
but the error type.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

from relay.errors import ConfigError

CERTIFICATE_FIELDS = frozenset(
    {
        "certificate_thumbprint",
        "certificate_key_file",
        "certificate_key_env",
        "certificate_public_file",
    }
)
_THUMBPRINT = re.compile(r"^[0-9a-fA-F]{40}$")  # SHA-1, as Entra shows it (msal sends it as x5t)


class CertificateCredential(BaseModel):
    """A certificate registered on the bot's Entra app: thumbprint plus PEM private key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    thumbprint: str
    private_key: SecretStr  # PEM
    # PEM certificate (chain); sent as the x5c header for subject-name/issuer (SNI) auth.
    public_certificate: str | None = None

    def msal_credential(self) -> dict[str, str]:
        """msal's ``client_credential`` dict (§4.4 "Certificate auth")."""
        cred = {"thumbprint": self.thumbprint, "private_key": self.private_key.get_secret_value()}
        if self.public_certificate:
            cred["public_certificate"] = self.public_certificate
        return cred


class Branding(BaseModel):
    """White-label fields of a bot's Teams app package; all optional, defaults come at build."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    short_name: str | None = None
    full_name: str | None = None
    short_description: str | None = None
    full_description: str | None = None
    developer_name: str | None = None
    website_url: str | None = None
    privacy_url: str | None = None
    terms_of_use_url: str | None = None
    accent_color: str | None = None
    version: str | None = None
    manifest_id: str | None = None  # the Teams app id; derived from the bot id when absent
    color_icon: Path | None = None  # resolved against the registry file's folder
    outline_icon: Path | None = None


def check_known_fields(key: str, raw: Mapping[str, Any], known: Iterable[str]) -> None:
    """Refuse fields the registry does not define, naming each (with the nearest known name)."""
    names = sorted(known)
    unknown = sorted(set(raw) - set(names))
    if not unknown:
        return
    described, guessed = [], True
    for field in unknown:
        near = difflib.get_close_matches(field, names, n=1, cutoff=0.6)
        described.append(f"{field!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
        guessed = guessed and bool(near)
    text = ("unknown field " if len(unknown) == 1 else "unknown fields ") + ", ".join(described)
    raise ConfigError(key, text if guessed else f"{text}; known fields: {', '.join(names)}")


def parse_branding(key: str, raw: Any, base_dir: Path) -> Branding:
    """Validate a ``[bots.branding]`` table; ``key`` prefixes every error."""
    if not isinstance(raw, Mapping):
        raise ConfigError(key, "must be a table/object")
    check_known_fields(key, raw, Branding.model_fields)
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if not isinstance(value, str):
            raise ConfigError(f"{key}.{name}", f"must be a string, not {type(value).__name__}")
        if name in ("color_icon", "outline_icon"):
            path = Path(value)
            values[name] = path if path.is_absolute() else base_dir / path
        else:
            values[name] = value.strip()
    return Branding(**values)


def parse_certificate(
    key: str, raw: Mapping[str, Any], base_dir: Path, env: Mapping[str, str]
) -> CertificateCredential | None:
    """The certificate credential of one registry entry, or None if it names none."""
    if not CERTIFICATE_FIELDS & set(raw):
        return None
    thumbprint = str(raw.get("certificate_thumbprint") or "").replace(":", "").strip()
    if not thumbprint:
        raise ConfigError(f"{key}.certificate_thumbprint", "missing")
    if not _THUMBPRINT.match(thumbprint):
        raise ConfigError(
            f"{key}.certificate_thumbprint", "must be the certificate's SHA-1 thumbprint (40 hex)"
        )
    if raw.get("certificate_key_file") and raw.get("certificate_key_env"):
        raise ConfigError(
            f"{key}.certificate_key_file", "give certificate_key_file or certificate_key_env"
        )
    if raw.get("certificate_key_env"):
        var = str(raw["certificate_key_env"])
        pem = env.get(var, "")
        if not pem:
            raise ConfigError(
                f"{key}.certificate_key_env", f"environment variable {var} is not set"
            )
        source = f"{key}.certificate_key_env"
    elif raw.get("certificate_key_file"):
        pem = _read(f"{key}.certificate_key_file", raw["certificate_key_file"], base_dir)
        source = f"{key}.certificate_key_file"
    else:
        raise ConfigError(
            f"{key}.certificate_key_file",
            "missing: give certificate_key_file or certificate_key_env",
        )
    if "PRIVATE KEY-----" not in pem:
        raise ConfigError(source, "is not a PEM private key")
    public = None
    if raw.get("certificate_public_file"):
        public = _read(f"{key}.certificate_public_file", raw["certificate_public_file"], base_dir)
        if "BEGIN CERTIFICATE" not in public:
            raise ConfigError(f"{key}.certificate_public_file", "is not a PEM certificate")
    return CertificateCredential(
        thumbprint=thumbprint.upper(), private_key=SecretStr(pem), public_certificate=public
    )


def _read(key: str, value: Any, base_dir: Path) -> str:
    path = Path(str(value))
    path = path if path.is_absolute() else base_dir / path
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(key, f"cannot read {path}: {getattr(exc, 'strerror', exc)}") from None
    if not text.strip():
        raise ConfigError(key, f"{path} is empty")
    return text
