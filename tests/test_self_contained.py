"""A clone of the repository tests itself alone: no code reads outside the clone.

CI checks the repository out with a ``shared/`` folder of reference material beside it, but a user
clones the repository alone; a test that reads ``../shared`` passes in CI and fails for them. This
scans every Python file under relay/, tests/ and bench/ for paths that leave the clone, and checks
that every fixture file the tests name is present.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.paths import FIXTURES, REPO

# The parent folder's shared/ (relative), an absolute /work/… path, or one built with `.parent /`.
OUTSIDE = re.compile(r"""["']\.\./shared|["']/work/|parents?(\[\d\])?\s*/\s*["']shared["']""")


def _sources() -> list[Path]:
    files = [p for top in ("relay", "tests", "bench") for p in (REPO / top).rglob("*.py")]
    return [p for p in files if p != Path(__file__).resolve()]


def test_no_code_reads_outside_the_clone() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in _sources()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not offenders, "reads outside the repository:\n" + "\n".join(offenders)


def test_the_pattern_catches_the_ways_a_path_leaves_the_clone() -> None:
    # Assembled at run time so that this file itself holds no such path literal.
    up, folder = "..", "shared"
    for line in (
        f'SHARED = REPO.parent / "{folder}"',
        f'Path("/work/{folder}/fixtures/aisdk-v6/full.sse")',
        f'open("{up}/{folder}/schemas/x.json")',
        f"ROOT.parents[1] / '{folder}'",
    ):
        assert OUTSIDE.search(line), line
    assert not OUTSIDE.search('fixture("aisdk-v6", "full.sse")')


def test_every_fixture_folder_says_where_its_files_come_from() -> None:
    folders = [p for p in FIXTURES.iterdir() if p.is_dir()]
    assert folders
    for folder in folders:
        readme = (folder / "README.md").read_text()
        assert "Licen" in readme, f"{folder.name}/README.md names no licence"
