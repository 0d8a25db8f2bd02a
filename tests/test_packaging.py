"""The production container's build, without a Docker engine: wheel → fresh venv → ``relay serve``.

CI machines have no Docker daemon, so this test performs the Dockerfile's two stages by hand —
``pip wheel --no-deps .`` (builder), then a new virtual environment with only that wheel and its
dependencies installed (runtime) — and starts the installed ``relay serve`` the way the image's
ENTRYPOINT/CMD do, with the image's environment defaults. It probes ``/healthz`` (with the
Dockerfile's own HEALTHCHECK command) and ``/readyz``, reads a JSON log line, then sends SIGTERM and
expects exit status 0. A missing runtime dependency, a module left out of the wheel, or a broken
console script fails here rather than in a cluster.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.fakes.harness import NEO_KEY

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
pytestmark = pytest.mark.timeout(600)


def _dockerfile_instruction(name: str) -> list[str]:
    """Every logical line (continuations joined) starting with instruction ``name``."""
    logical, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        current += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            logical.append(current)
            current = ""
    return [x[len(name) :].strip() for x in logical if x.upper().startswith(name + " ")]


def _run(args: list[str]) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = subprocess.run(args, capture_output=True, text=True, timeout=480, env=env)
    assert done.returncode == 0, f"{args[:4]} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the relay installed from a freshly built wheel, as the Dockerfile does."""
    base = tmp_path_factory.mktemp("container")
    context, wheels, venv = base / "src", base / "wheels", base / "venv"
    # The builder stage's COPY lines: only these reach the image's build context.
    context.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, context / name)
    shutil.copytree(ROOT / "relay", context / "relay", ignore=shutil.ignore_patterns("__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(context)])
    [wheel] = wheels.glob("neo_teams_relay-*.whl")
    _run([sys.executable, "-m", "venv", str(venv)])
    # The runtime stage: the wheel with the `fast` extra, its dependencies pinned by the
    # constraints file.
    assert "COPY constraints.txt /wheels/" in DOCKERFILE.read_text()
    assert '"$(ls /wheels/*.whl)[fast]"' in DOCKERFILE.read_text()
    pins = ["-c", str(ROOT / "constraints.txt")]
    _run([str(venv / "bin" / "pip"), "install", "-q", *pins, f"{wheel}[fast]"])
    return venv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback http
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_dockerfile_runs_as_non_root_with_a_healthcheck_and_relay_entrypoint() -> None:
    assert _dockerfile_instruction("FROM")[0].startswith("${PYTHON_IMAGE} AS builder")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in DOCKERFILE.read_text()
    assert len(_dockerfile_instruction("FROM")) == 2  # builder + runtime
    [user] = _dockerfile_instruction("USER")
    assert user.split(":")[0] not in ("0", "root")
    assert json.loads(_dockerfile_instruction("ENTRYPOINT")[0]) == ["relay"]
    assert json.loads(_dockerfile_instruction("CMD")[-1]) == ["serve"]
    [health] = _dockerfile_instruction("HEALTHCHECK")
    assert "/healthz" in health
    assert "curl" not in health
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored  # deny by default: no .venv, .git, tests or secrets in the context
    assert {"!pyproject.toml", "!README.md", "!relay/", "!constraints.txt"} <= set(ignored)


def test_the_installed_wheel_serves_and_stops_cleanly(installed: Path, tmp_path: Path) -> None:
    bindir = installed / "bin"
    check = subprocess.run(
        [str(bindir / "pip"), "check"], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    port, metrics_port = _free_port(), _free_port()
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "RELAY_ALLOW_ANONYMOUS": "true",
        "NEO_API_KEY": NEO_KEY,
        "NEO_API_BASE_URL": "http://127.0.0.1:9",  # never called: no turn is sent
        "RELAY_HOST": "127.0.0.1",
        "RELAY_PORT": str(port),
        "RELAY_METRICS_PORT": str(metrics_port),
        "RELAY_DATABASE_URL": f"sqlite:///{tmp_path / 'relay.db'}",
        "RELAY_LOG_FORMAT": "json",
    }
    [entrypoint] = _dockerfile_instruction("ENTRYPOINT")
    cmd = json.loads(entrypoint) + json.loads(_dockerfile_instruction("CMD")[-1])
    proc = subprocess.Popen(
        [str(bindir / cmd[0]), *cmd[1:]],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if _get(f"{base}/readyz")[0] == 200:
                    break
            except (OSError, ValueError):
                pass
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "relay serve did not become ready in 30 s"
            time.sleep(0.2)
        assert _get(f"{base}/healthz") == (200, {"status": "ok"})
        assert _get(f"{base}/readyz") == (200, {"status": "ready"})
        metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(metrics, timeout=2) as resp:
            assert b"relay_turns_total" in resp.read()
        with pytest.raises(urllib.error.HTTPError) as public:  # never on the public port
            urllib.request.urlopen(f"{base}/metrics", timeout=2)  # noqa: S310
        assert public.value.code == 404
        # The image's own HEALTHCHECK command, run with the installed interpreter.
        health = json.loads(_dockerfile_instruction("HEALTHCHECK")[0].split("CMD", 1)[1])
        probe = subprocess.run(
            [str(bindir / health[0]), *health[1:]], env=env, timeout=10, capture_output=True
        )
        assert probe.returncode == 0, probe.stderr
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any("relay ready" in str(r["msg"]) for r in records), err
    assert any("event loop uvloop" in str(r["msg"]) for r in records), err  # the `fast` extra
    assert NEO_KEY not in err, "the Neo key reached the logs"
    assert all(line.startswith("{") for line in err.splitlines() if line), shlex.quote(err)
