"""Each credential kind a bot may use, exercised at the credential boundary against LocalIssuer.

Client secret is covered by test_auth.py. Here: a certificate (msal builds and signs a real
client assertion that the issuer verifies against the registered certificate) and a user-assigned
managed identity (msal's ManagedIdentityClient really calls an App Service-style identity
endpoint, located through the IDENTITY_ENDPOINT / IDENTITY_HEADER variables msal reads).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from relay.config import AppType, BotConfig, Settings, load_bots
from relay.devtools.issuer import LocalIssuer
from relay.domain import BotId, TenantId
from relay.errors import CredentialError
from relay.teams.credentials import TokenProvider

CERT_BOT = "0c0c0c0c-5555-4555-8555-cccccccccccc"
CERT_TENANT = "7e7e7e7e-6666-4666-8666-cccccccccccc"
MSI_BOT = "0d0d0d0d-7777-4777-8777-dddddddddddd"
MSI_TENANT = TenantId(CERT_TENANT)


def make_certificate(
    common_name: str = "relay test bot",
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def key_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def thumbprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - Entra's thumbprint


def write_cert_registry(
    tmp: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate, *, public: bool
) -> Path:
    (tmp / "bot.key").write_text(key_pem(key))
    (tmp / "bot.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    lines = [
        "[[bots]]",
        f'app_id = "{CERT_BOT}"',
        f'tenant_id = "{CERT_TENANT}"',
        f'certificate_thumbprint = "{thumbprint(cert)}"',
        'certificate_key_file = "bot.key"',
    ]
    if public:
        lines.append('certificate_public_file = "bot.crt"')
    path = tmp / "bots.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def cert_issuer() -> LocalIssuer:
    with LocalIssuer() as issuer:
        yield issuer  # type: ignore[misc]


def _settings(
    make: Callable[..., Settings], issuer: LocalIssuer, bots: tuple[BotConfig, ...]
) -> Settings:
    return make(issuer, bots=bots)


@pytest.mark.parametrize("public", [False, True], ids=["thumbprint", "thumbprint+x5c"])
async def test_certificate_bot_gets_a_token_with_a_signed_client_assertion(
    tmp_path: Path,
    cert_issuer: LocalIssuer,
    auth_make_settings: Callable[..., Settings],
    public: bool,
) -> None:
    key, cert = make_certificate()
    cert_issuer.register_certificate_client(CERT_BOT, cert, CERT_TENANT)
    bots = load_bots(write_cert_registry(tmp_path, key, cert, public=public), env={})
    assert bots[0].certificate is not None
    assert bots[0].secret is None
    tokens = TokenProvider(
        _settings(auth_make_settings, cert_issuer, bots), verify=cert_issuer.ca_file
    )
    try:
        token = await tokens.token(BotId(CERT_BOT))
    finally:
        tokens.close()
    assert cert_issuer.verify_bot_token(token) == CERT_BOT
    [header] = cert_issuer.assertions
    assert header["alg"] == "RS256"
    assert "x5t" in header
    assert ("x5c" in header) is public  # SNI auth sends the public certificate chain


async def test_certificate_not_registered_on_the_app_is_refused_with_entra_text(
    tmp_path: Path, cert_issuer: LocalIssuer, auth_make_settings: Callable[..., Settings]
) -> None:
    _registered_key, registered = make_certificate("registered")
    other_key, other = make_certificate("other")
    cert_issuer.register_certificate_client(CERT_BOT, registered, CERT_TENANT)
    bots = load_bots(write_cert_registry(tmp_path, other_key, other, public=False), env={})
    tokens = TokenProvider(
        _settings(auth_make_settings, cert_issuer, bots), verify=cert_issuer.ca_file
    )
    with pytest.raises(CredentialError) as info:
        await tokens.token(BotId(CERT_BOT))
    tokens.close()
    assert "AADSTS700027" in str(info.value)
    assert "PRIVATE KEY" not in str(info.value)
    assert cert_issuer.assertions == []


async def test_right_thumbprint_wrong_key_fails_signature_validation(
    tmp_path: Path, cert_issuer: LocalIssuer, auth_make_settings: Callable[..., Settings]
) -> None:
    _, registered = make_certificate("registered")
    wrong_key, _ = make_certificate("wrong")
    cert_issuer.register_certificate_client(CERT_BOT, registered, CERT_TENANT)
    # The registry names the registered certificate's thumbprint but holds another private key.
    path = write_cert_registry(tmp_path, wrong_key, registered, public=False)
    bots = load_bots(path, env={})
    tokens = TokenProvider(
        _settings(auth_make_settings, cert_issuer, bots), verify=cert_issuer.ca_file
    )
    with pytest.raises(CredentialError, match="signature validation"):
        await tokens.token(BotId(CERT_BOT))
    tokens.close()


async def test_managed_identity_bot_gets_a_token_from_the_identity_endpoint(
    cert_issuer: LocalIssuer,
    auth_make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cert_issuer.register_managed_identity(MSI_BOT)
    for name, value in cert_issuer.managed_identity_env().items():
        monkeypatch.setenv(name, value)
    bot = BotConfig(app_id=BotId(MSI_BOT), app_type=AppType.USER_ASSIGNED_MSI, tenant_id=MSI_TENANT)
    tokens = TokenProvider(_settings(auth_make_settings, cert_issuer, (bot,)))
    try:
        token = await tokens.token(BotId(MSI_BOT))
        assert await tokens.token(BotId(MSI_BOT)) == token  # cached: one endpoint call
    finally:
        tokens.close()
    assert cert_issuer.verify_bot_token(token) == MSI_BOT
    assert cert_issuer.msi_requests == 1
    assert cert_issuer.token_requests == 0  # never the client-credentials endpoint


async def test_managed_identity_refusal_is_a_credential_error(
    cert_issuer: LocalIssuer,
    auth_make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in cert_issuer.managed_identity_env().items():
        monkeypatch.setenv(name, value)
    # Not registered as an identity on this "host".
    bot = BotConfig(app_id=BotId(MSI_BOT), app_type=AppType.USER_ASSIGNED_MSI, tenant_id=MSI_TENANT)
    tokens = TokenProvider(_settings(auth_make_settings, cert_issuer, (bot,)))
    with pytest.raises(CredentialError, match="No managed identity"):
        await tokens.token(BotId(MSI_BOT))
    tokens.close()
    assert cert_issuer.msi_requests == 1
