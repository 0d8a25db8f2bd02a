"""The README is true: every setting documented, only existing files named, its commands real.

A newcomer follows the README literally, so it is checked like code: the configuration table lists
every setting ``relay/config.py`` reads; every repository path it (or bench/README.md, the
Dockerfile and the deploy/ comments) names exists; its sections come in reading order; and its two
commands do what it says — ``make demo``/``make run`` install the runtime only, ``make test`` adds
the dev extra and is what ``.ci/run`` runs.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from relay.config import Settings, _alias

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCUMENTS = [
    ROOT / "README.md",
    ROOT / "bench" / "README.md",
    ROOT / "Dockerfile",
    ROOT / "Makefile",
    ROOT / ".ci" / "run",
    *sorted((ROOT / "deploy").glob("*.yaml")),
]
# A path inside the repository, as documents name them: `relay/turns.py`, `deploy/`, `.ci/run`.
REPO_PATH = re.compile(r"(?<![\w./-])((?:relay|tests|bench|deploy|manifest|\.ci)/[\w./-]*)")
# A document or module named on its own (`DESIGN.md`, `teams-platform.md`, `container_smoke.sh`).
FILE_NAME = re.compile(r"(?<![\w.-])([\w-]+\.(?:md|sh|py))\b")


def test_the_configuration_table_lists_every_setting() -> None:
    table = README.split("### Configuration", 1)[1].split("\n### ", 1)[0]
    missing = [
        _alias(name)
        for name in Settings.model_fields
        if name != "bots" and f"`{_alias(name)}`" not in table
    ]
    assert not missing, f"settings missing from the README's configuration table: {missing}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_documents_name_only_files_that_exist(document: Path) -> None:
    text = document.read_text()
    named = {m.rstrip(".") for m in REPO_PATH.findall(text)}
    missing = sorted(p for p in named if "<" not in p and not (ROOT / p).exists())
    tracked = {p.name for p in ROOT.rglob("*") if ".venv" not in p.parts and ".git" not in p.parts}
    missing += sorted(n for n in set(FILE_NAME.findall(text)) if n not in tracked)
    assert not missing, f"{document.name} names files the repository does not have: {missing}"


def test_sections_come_in_reading_order() -> None:
    headings = re.findall(r"^## (.+)$", README, flags=re.MULTILINE)
    assert headings == ["Quick start", "Demo", "Production", "How it works", "Operations",
                        "Development"]  # fmt: skip


def test_the_playground_install_names_the_package_and_version() -> None:
    assert re.search(r"npm install -g @microsoft/m365agentsplayground@\d+\.\d+\.\d+", README)


def _make_dry_run(target: str, tmp_path: Path) -> str:
    # -n: print the recipe without running it; -B: as if nothing were installed yet.
    done = subprocess.run(
        ["make", "-n", "-B", f"VENV={tmp_path / 'venv'}", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("target", ["demo", "run"])
def test_demo_and_run_install_the_runtime_only(target: str, tmp_path: Path) -> None:
    recipe = _make_dry_run(target, tmp_path)
    assert "pip install -q -c constraints.txt -e .\n" in recipe
    assert "[dev]" not in recipe
    assert f"/bin/relay {'demo' if target == 'demo' else 'serve'}" in recipe


def test_make_test_adds_the_dev_extra_and_is_what_ci_runs(tmp_path: Path) -> None:
    recipe = _make_dry_run("test", tmp_path)
    assert "pip install -q -c constraints.txt -e '.[dev]'" in recipe
    assert "/bin/pytest -q" in recipe
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.MULTILINE)
    assert "apt-get" not in ci
    assert "make demo" in README
    assert "make test" in README
