"""Teams app packages for white-label bots: ``relay manifest build`` (teams-platform.md §7).

:mod:`relay.manifest.build` assembles and validates a package per bot, :mod:`relay.manifest.png`
checks icons without third-party imaging code, :mod:`relay.manifest.cli` is the command, and
``assets/`` holds the default icons and the official v1.24 schema the packages are validated
against (the top-level ``manifest/`` folder documents the template and regenerates the icons).
"""

from __future__ import annotations

from relay.manifest.build import (
    MANIFEST_VERSION,
    SCHEMA_URL,
    AppPackage,
    app_id_for,
    build_package,
    effective_branding,
    validate_manifest,
)

__all__ = [
    "MANIFEST_VERSION",
    "SCHEMA_URL",
    "AppPackage",
    "app_id_for",
    "build_package",
    "effective_branding",
    "validate_manifest",
]
