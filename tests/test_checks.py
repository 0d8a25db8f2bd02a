"""``relay bots check`` and ``relay check`` end to end: the real CLI (``relay.cli.main``, run in a
worker thread because it calls ``asyncio.run``) against the local issuer — secret, certificate and
managed-identity bots — and the Neo emulator, over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from relay.checks import readable
from relay.cli import main
from relay.devtools.issuer import LocalIssuer
from relay.devtools.neo_emulator import NeoEmulator
from tests.fakes.harness import BOT_A, BOT_B, NEO_KEY
from tests.teams.test_credential_kinds import key_pem, make_certificate, thumbprint

CERT_BOT = "0c0c0c0c-5555-4555-8555-cccccccccccc"
MSI_BOT = "0d0d0d0d-7777-4777-8777-dddddddddddd"
TENANT = "7e7e7e7e-6666-4666-8666-cccccccccccc"


@dataclass
class Env:
    tmp: Path
    issuer: LocalIssuer
    neo: NeoEmulator
    monkeypatch: pytest.MonkeyPatch

    async def run(self, *argv: str) -> int:
        return await asyncio.to_thread(main, list(argv))


@pytest.fixture
async def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    issuer = LocalIssuer().start()
    neo = NeoEmulator(NEO_KEY)
    neo_url = await neo.start()
    key, cert = make_certificate()
    (tmp_path / "cert.key").write_text(key_pem(key))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    issuer.register_client(BOT_A.app_id, BOT_A.secret, BOT_A.tenant_id)
    issuer.register_client(BOT_B.app_id, "the-real-secret-of-b", BOT_B.tenant_id)
    issuer.register_certificate_client(CERT_BOT, cert, TENANT)
    issuer.register_managed_identity(MSI_BOT)
    (tmp_path / "bots.toml").write_text(
        f"""
[[bots]]
app_id = "{BOT_A.app_id}"
tenant_id = "{BOT_A.tenant_id}"
name = "Contoso"
secret_env = "CHECK_SECRET_A"

[[bots]]
app_id = "{CERT_BOT}"
tenant_id = "{TENANT}"
name = "Certified"
certificate_thumbprint = "{thumbprint(cert)}"
certificate_key_file = "cert.key"
certificate_public_file = "cert.pem"

[[bots]]
app_id = "{MSI_BOT}"
app_type = "UserAssignedMSI"
tenant_id = "{TENANT}"
name = "Managed"
"""
    )
    monkeypatch.chdir(tmp_path)  # no stray .env
    values = {
        "CHECK_SECRET_A": BOT_A.secret,
        "NEO_API_KEY": NEO_KEY,
        "NEO_API_BASE_URL": neo_url,
        "RELAY_BOTS_FILE": str(tmp_path / "bots.toml"),
        "RELAY_DATABASE_URL": f"sqlite:///{tmp_path / 'relay.db'}",
        "RELAY_LOGIN_URL": issuer.login_url,
        "RELAY_LOGIN_CA_FILE": issuer.ca_file,
        "RELAY_OPENID_METADATA_URL": issuer.openid_metadata_url,
        "RELAY_TOKEN_ISSUER": issuer.issuer,
        **issuer.managed_identity_env(),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    try:
        yield Env(tmp_path, issuer, neo, monkeypatch)
    finally:
        await neo.stop()
        issuer.stop()


def _row(out: str, bot_id: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(bot_id))


async def test_bots_check_all_three_credential_kinds_ok(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await env.run("bots", "check") == 0
    out = capsys.readouterr().out
    assert "client secret" in _row(out, BOT_A.app_id)
    assert "certificate" in _row(out, CERT_BOT)
    assert "managed identity" in _row(out, MSI_BOT)
    for bot in (BOT_A.app_id, CERT_BOT, MSI_BOT):
        assert "  ok  " in _row(out, bot)
    assert "3 ok, 0 failed" in out
    assert env.issuer.token_requests == 2  # secret + certificate; the MSI used its endpoint
    assert env.issuer.msi_requests == 1
    assert len(env.issuer.assertions) == 1


async def test_bots_check_reports_entra_errors_per_bot_and_fails(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (env.tmp / "bots.toml").read_text()
    (env.tmp / "bots.toml").write_text(
        text
        + f"""
[[bots]]
app_id = "{BOT_B.app_id}"
tenant_id = "{BOT_B.tenant_id}"
name = "Fabrikam"
secret_env = "CHECK_SECRET_B"
"""
    )
    env.monkeypatch.setenv("CHECK_SECRET_B", "a-wrong-secret-for-b")
    assert await env.run("bots", "check") == 1
    out = capsys.readouterr().out
    row_b = _row(out, BOT_B.app_id)
    assert "FAIL" in row_b
    assert "AADSTS7000215" in row_b  # Entra's own words
    assert "a-wrong-secret-for-b" not in out
    assert "  ok  " in _row(out, BOT_A.app_id)
    assert "3 ok, 1 failed" in out


async def test_bots_check_reports_an_unavailable_token_service(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env.issuer.fail_token_requests(10, status=503)  # more than the token retry policy tries
    assert await env.run("bots", "check", "--bot", BOT_A.app_id) == 1
    row = _row(capsys.readouterr().out, BOT_A.app_id)
    assert "FAIL" in row
    assert "503" in row


async def test_relay_check_ok(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert await env.run("check") == 0
    out = capsys.readouterr().out
    for name in ("configuration", "store", "neo"):
        line = next(line for line in out.splitlines() if line.startswith(name))
        assert "  ok" in line
    [probe] = [r for r in env.neo.requests if r.path == "/public-api/til-requests"]
    assert probe.method == "GET"
    assert probe.query == {"page_size": "1"}
    assert probe.headers["authorization"] == f"Bearer {NEO_KEY}"


async def test_relay_check_fails_on_a_refused_neo_key_and_a_broken_store(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env.monkeypatch.setenv("NEO_API_KEY", "neo_sk_test_RevokedKey0123456789")
    env.monkeypatch.setenv("RELAY_DATABASE_URL", f"sqlite:///{env.tmp / 'bots.toml' / 'x.db'}")
    assert await env.run("check") == 1
    out = capsys.readouterr().out
    neo = next(line for line in out.splitlines() if line.startswith("neo"))
    store = next(line for line in out.splitlines() if line.startswith("store"))
    assert "FAIL" in neo
    assert "401" in neo or "UNAUTHORIZED" in neo
    assert "RevokedKey" not in out
    assert "FAIL" in store


async def test_relay_check_configuration_error_exits_2(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env.monkeypatch.setenv("NEO_API_KEY", "changeme")
    assert await env.run("check") == 2
    captured = capsys.readouterr()
    assert "NEO_API_KEY" in captured.err
    assert "FAIL" in captured.out


def test_an_unreachable_token_service_is_one_readable_line_without_chatter(
    tmp_path: Path,
) -> None:
    # A fresh process, as a user runs it: nothing but the table may reach the terminal.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens here once the socket is closed
    (tmp_path / "bots.toml").write_text(
        f'[[bots]]\napp_id = "{BOT_A.app_id}"\ntenant_id = "{BOT_A.tenant_id}"\n'
        'name = "Contoso"\nsecret_env = "CHECK_SECRET_A"\n'
    )
    env = {
        "PATH": os.environ["PATH"],
        "CHECK_SECRET_A": BOT_A.secret,
        "NEO_API_KEY": NEO_KEY,
        "RELAY_LOGIN_URL": f"https://127.0.0.1:{closed}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "relay", "bots", "check", "--bots-file", "bots.toml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 1
    assert done.stderr == ""  # no retry warnings, no traceback
    header, row, summary = done.stdout.splitlines()
    assert header.startswith("BOT ")
    assert row.startswith(BOT_A.app_id)
    assert row.endswith(f"FAIL    cannot reach 127.0.0.1:{closed}: Connection refused")
    assert summary == "0 ok, 1 failed"


def test_readable_keeps_the_host_and_the_innermost_reason_or_entras_words() -> None:
    refused = (
        "ConnectionError: HTTPSConnectionPool(host='login.invalid', port=443): Max retries "
        "exceeded with url: /t/v2.0/.well-known/openid-configuration (Caused by "
        "NameResolutionError(\"HTTPSConnection(host='login.invalid', port=443): Failed to "
        "resolve 'login.invalid' ([Errno -2] Name or service not known)\"))"
    )
    assert readable(refused) == "cannot reach login.invalid:443: Name or service not known"
    entra = (
        "invalid_client: AADSTS7000215: Invalid client secret provided. Trace ID: 1f2e "
        "Correlation ID: 3d4c Timestamp: 2026-11-20 10:00:00Z"
    )
    assert readable(entra) == "invalid_client: AADSTS7000215: Invalid client secret provided."


async def test_relay_check_says_what_passed_once(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await env.run("check", "--bots-file", str(env.tmp / "bots.toml")) == 0
    out = capsys.readouterr().out
    assert "ok ok" not in " ".join(out.split())
