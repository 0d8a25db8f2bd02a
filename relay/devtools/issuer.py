"""A local stand-in for the Bot Framework token service and for Entra ID, on 127.0.0.1 only.

It exists so the relay's real authentication code — botbuilder's inbound JWT validation and msal's
client-credentials flow — can be exercised end to end without Microsoft: tests use it, and so
will ``relay demo``, which is why it ships in the package rather than under ``tests/``. It serves
the channel's OpenID metadata and JWKS over plain HTTP (botbuilder fetches them with ``requests``;
teams-platform.md §4.2 "test recipe") and an OAuth2 token endpoint over HTTPS with a freshly
generated CA (msal refuses non-https authorities, §4.4). Both servers run in their own threads,
never on the relay's event loop, because botbuilder fetches metadata synchronously and would
deadlock against a server on the same loop (§4.2).
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import ipaddress
import json
import logging
import shutil
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from jwt.algorithms import RSAAlgorithm

log = logging.getLogger(__name__)

BOT_FRAMEWORK_AUDIENCE = "https://api.botframework.com"
BOT_FRAMEWORK_SCOPE = BOT_FRAMEWORK_AUDIENCE + "/.default"
_JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _new_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class _SigningKey:
    kid: str
    key: rsa.RSAPrivateKey
    endorsements: tuple[str, ...]

    def jwk(self) -> dict[str, Any]:
        data: dict[str, Any] = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        data.update(kid=self.kid, use="sig", alg="RS256", endorsements=list(self.endorsements))
        return data


@dataclass(frozen=True)
class _Client:
    secret: str | None  # None: a certificate client, or a managed identity
    tenant: str
    certificate: x509.Certificate | None = None
    managed_identity: bool = False


class LocalIssuer:
    """Channel token issuer (HTTP) plus Entra-like token endpoint (HTTPS), each in a thread."""

    def __init__(
        self,
        *,
        issuer: str = "https://issuer.test",
        channel_id: str = "msteams",
        token_lifetime: int = 3600,
    ) -> None:
        self._issuer = issuer
        self._channel_id = channel_id
        self.token_lifetime = token_lifetime
        self._lock = threading.Lock()
        self._keys: dict[str, _SigningKey] = {}
        self.default_kid = self.add_key()
        # Published from the start so tests need not wait out the relay's refresh rate limit.
        self.unendorsed_kid = self.add_key(endorsements=("webchat",))
        self._foreign: rsa.RSAPrivateKey | None = None
        self._entra_key = _new_rsa()  # signs the outbound (bot -> connector) access tokens
        self._clients: dict[str, _Client] = {}
        self._failures: list[int] = []
        self.metadata_requests = 0
        self.discovery_requests = 0
        self.token_requests = 0
        self.assertions: list[dict[str, Any]] = []  # verified client-assertion headers
        self.msi_requests = 0
        self.identity_header = f"local-{uuid.uuid4().hex}"  # App Service's X-IDENTITY-HEADER
        self._http: _Server | None = None
        self._https: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._tmp: Path | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> LocalIssuer:
        if self._http is not None:
            return self
        self._tmp = Path(tempfile.mkdtemp(prefix="relay-issuer-"))
        tls = self._make_tls(self._tmp)
        self._http = self._serve(_MetadataHandler, tls=None)
        self._https = self._serve(_TokenHandler, tls=tls)
        log.debug("local issuer on %s and %s", self.openid_metadata_url, self.login_url)
        return self

    def stop(self) -> None:
        for server in (self._http, self._https):
            if server is not None:
                server.shutdown()
                server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._http = self._https = None
        self._threads.clear()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> LocalIssuer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self, handler: type[_BaseHandler], *, tls: ssl.SSLContext | None) -> _Server:
        server = _Server(("127.0.0.1", 0), handler)
        server.issuer = self  # type: ignore[attr-defined]  # read back by the handlers
        if tls is not None:
            # Handshake lazily in the per-request thread so one stalled client cannot block accept.
            server.socket = tls.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        name = f"relay-issuer-{handler.__name__}"
        # A short poll interval makes stop() quick (shutdown() waits for the next poll).
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
        return server

    # -- addresses ------------------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def metadata_base_url(self) -> str:
        assert self._http is not None, "LocalIssuer.start() first"
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    @property
    def openid_metadata_url(self) -> str:
        return f"{self.metadata_base_url}/v1/.well-known/openidconfiguration"

    @property
    def jwks_url(self) -> str:
        return f"{self.metadata_base_url}/v1/.well-known/keys"

    @property
    def login_url(self) -> str:
        assert self._https is not None, "LocalIssuer.start() first"
        return f"https://127.0.0.1:{self._https.server_address[1]}"

    @property
    def ca_file(self) -> str:
        assert self._tmp is not None, "LocalIssuer.start() first"
        return str(self._tmp / "ca.pem")

    # -- inbound (channel -> bot) tokens ---------------------------------------------------------

    def add_key(self, kid: str | None = None, *, endorsements: Sequence[str] = ("msteams",)) -> str:
        """Publish a new signing key (key rotation); returns its kid."""
        kid = kid or f"key-{uuid.uuid4().hex[:12]}"
        with self._lock:
            self._keys[kid] = _SigningKey(kid, _new_rsa(), tuple(endorsements))
        return kid

    def remove_key(self, kid: str) -> None:
        with self._lock:
            self._keys.pop(kid, None)

    @property
    def foreign_key(self) -> rsa.RSAPrivateKey:
        """A key that is never published: tokens signed with it must fail signature checks."""
        if self._foreign is None:
            self._foreign = _new_rsa()
        return self._foreign

    def sign(
        self,
        aud: str,
        service_url: str,
        *,
        kid: str | None = None,
        expires_in: int = 300,
        issuer: str | None = None,
        key: rsa.RSAPrivateKey | None = None,
        extra_claims: dict[str, Any] | None = None,
    ) -> str:
        """An RS256 channel token. No ``ver`` claim: botbuilder would treat it as a skill (§4.1)."""
        kid = kid or self.default_kid
        if key is None:
            with self._lock:
                key = self._keys[kid].key
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": issuer or self._issuer,
            "aud": aud,
            "serviceurl": service_url,
            "nbf": now - 5,
            "iat": now - 5,
            "exp": now + expires_in,
        }
        claims.update(extra_claims or {})
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})

    def signing_key_pem(self, kid: str | None = None) -> str:
        """A published key's private half (PKCS#8 PEM), so another process can sign channel
        tokens this issuer vouches for (``relay demo`` hands it to ``relay chat``)."""
        with self._lock:
            key = self._keys[kid or self.default_kid].key
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return pem.decode()

    def bot_token_public_key_pem(self) -> str:
        """The public key that verifies outbound bot tokens (see :meth:`verify_bot_token`)."""
        pem = self._entra_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem.decode()

    def expired_token(self, aud: str, service_url: str) -> str:
        """Expired well beyond botbuilder's 5-minute clock tolerance."""
        return self.sign(aud, service_url, expires_in=-900)

    def unknown_kid_token(self, aud: str, service_url: str) -> str:
        return self.sign(aud, service_url, kid="kid-nobody-published", key=self.foreign_key)

    def foreign_key_token(self, aud: str, service_url: str) -> str:
        """Claims a published kid but is signed by another key (a forged signature)."""
        return self.sign(aud, service_url, key=self.foreign_key)

    def unendorsed_token(self, aud: str, service_url: str) -> str:
        """Signed by a published key whose endorsements do not include the channel."""
        return self.sign(aud, service_url, kid=self.unendorsed_kid)

    def _metadata(self) -> dict[str, Any]:
        return {
            "issuer": self._issuer,
            "jwks_uri": self.jwks_url,
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def _jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [k.jwk() for k in self._keys.values()]}

    # -- outbound (bot -> connector) tokens, the Entra side ---------------------------------------

    def register_client(self, app_id: str, secret: str, tenant: str) -> None:
        with self._lock:
            self._clients[app_id.lower()] = _Client(secret, tenant.lower())

    def register_certificate_client(
        self, app_id: str, certificate: x509.Certificate, tenant: str
    ) -> None:
        """A client that authenticates with a JWT client assertion signed by this cert's key."""
        with self._lock:
            self._clients[app_id.lower()] = _Client(None, tenant.lower(), certificate=certificate)

    def register_managed_identity(self, client_id: str) -> None:
        """A user-assigned managed identity, served by :attr:`identity_endpoint`."""
        with self._lock:
            self._clients[client_id.lower()] = _Client(None, "", managed_identity=True)

    @property
    def identity_endpoint(self) -> str:
        """An App Service-style managed identity endpoint (msal reads ``IDENTITY_ENDPOINT`` and
        ``IDENTITY_HEADER`` from the environment and then calls it)."""
        return f"{self.metadata_base_url}/msi/token"

    def managed_identity_env(self) -> dict[str, str]:
        return {
            "IDENTITY_ENDPOINT": self.identity_endpoint,
            "IDENTITY_HEADER": self.identity_header,
        }

    def fail_token_requests(self, n: int, status: int = 500) -> None:
        """Answer the next ``n`` token requests with ``status`` and an AADSTS-style error."""
        with self._lock:
            self._failures.extend([status] * n)

    def verify_bot_token(self, token: str) -> str:
        """Check an outbound ``Authorization`` token; return its app id or raise jwt.PyJWTError."""
        claims = jwt.decode(
            token,
            self._entra_key.public_key(),
            algorithms=["RS256"],
            audience=BOT_FRAMEWORK_AUDIENCE,
            options={"require": ["exp", "aud", "appid"]},
        )
        app_id = str(claims["appid"]).lower()
        with self._lock:
            if app_id not in self._clients:
                raise jwt.InvalidTokenError("token for an unregistered client")
        return app_id

    def _discovery(self, tenant: str) -> dict[str, Any]:
        base = f"{self.login_url}/{tenant}"
        return {
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_types_supported": ["code", "token"],
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
        }

    def _token(self, tenant: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.token_requests += 1
            failure = self._failures.pop(0) if self._failures else None
            client = self._clients.get(form.get("client_id", "").lower())
        if failure is not None:
            return failure, _aad_error(
                "temporarily_unavailable", "AADSTS50196: The server is temporarily unavailable."
            )
        if form.get("grant_type") != "client_credentials":
            return 400, _aad_error("unsupported_grant_type", "AADSTS70003: unsupported grant.")
        app_id = form.get("client_id", "")
        if client is None or client.tenant != tenant.lower():
            return 400, _aad_error(
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{app_id}' was not found in the "
                f"directory '{tenant}'.",
            )
        if client.managed_identity:
            return 400, _aad_error(
                "unauthorized_client",
                "AADSTS700016: A managed identity cannot use the client credentials grant.",
            )
        if "client_assertion" in form or client.certificate is not None:
            problem = self._check_assertion(client, app_id, tenant, form)
            if problem is not None:
                return 401, _aad_error("invalid_client", problem)
        elif client.secret is None or not hmac.compare_digest(
            client.secret.encode(), form.get("client_secret", "").encode()
        ):
            return 401, _aad_error(
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in "
                f"the request is the client secret value, not the client secret ID, for a secret "
                f"added to app '{app_id}'.",
            )
        if form.get("scope") != BOT_FRAMEWORK_SCOPE:
            return 400, _aad_error("invalid_scope", "AADSTS1002012: The provided scope is invalid.")
        token = self._access_token(app_id, tenant)
        body = {"token_type": "Bearer", "expires_in": self.token_lifetime, "access_token": token}
        return 200, body

    def _access_token(self, app_id: str, tenant: str) -> str:
        now = int(time.time())
        claims = {
            "aud": BOT_FRAMEWORK_AUDIENCE,
            "iss": f"https://sts.windows.net/{tenant}/",
            "appid": app_id.lower(),
            "tid": tenant,
            "iat": now,
            "nbf": now,
            "exp": now + self.token_lifetime,
        }
        return jwt.encode(claims, self._entra_key, algorithm="RS256", headers={"kid": "entra"})

    def _check_assertion(
        self, client: _Client, app_id: str, tenant: str, form: dict[str, str]
    ) -> str | None:
        """Verify a certificate client assertion the way Entra does; None when it is good."""
        assertion = form.get("client_assertion", "")
        if client.certificate is None or not assertion:
            return (
                "AADSTS7000218: The request body must contain the following parameter: "
                "'client_assertion' or 'client_secret'."
            )
        if form.get("client_assertion_type") != _JWT_BEARER:
            return "AADSTS50027: Invalid client assertion type."
        cert = client.certificate
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return "AADSTS50027: JWT token is invalid or malformed."
        sha1 = _b64url(cert.fingerprint(hashes.SHA1()))  # noqa: S303 - x5t is SHA-1 by spec
        sha256 = _b64url(cert.fingerprint(hashes.SHA256()))
        # msal keeps base64 padding on x5t; RFC 7515 omits it: compare without.
        x5t, x5t256 = (str(header.get(k, "")).rstrip("=") for k in ("x5t", "x5t#S256"))
        if x5t != sha1 and x5t256 != sha256:
            return (
                "AADSTS700027: The certificate with identifier used to sign the client assertion "
                f"is not registered on application. [Reason - The key was not found., "
                f"Thumbprint of key used by client: '{header.get('x5t')}']"
            )
        try:
            claims = jwt.decode(
                assertion,
                cert.public_key(),  # type: ignore[arg-type]  # RSA certificates only
                algorithms=["RS256", "PS256"],
                audience=f"{self.login_url}/{tenant}/oauth2/v2.0/token",
                options={"require": ["exp", "aud", "iss", "sub"]},
            )
        except jwt.PyJWTError as exc:
            return f"AADSTS700027: Client assertion failed signature validation. ({exc})"
        if claims["iss"] != claims["sub"] or str(claims["sub"]).lower() != app_id.lower():
            return "AADSTS700021: Client assertion application identifier doesn't match."
        with self._lock:
            self.assertions.append(header)
        return None

    def _managed_identity_token(
        self, query: dict[str, str], identity_header: str | None
    ) -> tuple[int, dict[str, Any]]:
        """App Service managed identity protocol (api-version 2019-08-01), as msal calls it."""
        with self._lock:
            self.msi_requests += 1
            failure = self._failures.pop(0) if self._failures else None
            client = self._clients.get(query.get("client_id", "").lower())
        if failure is not None:
            return failure, {"statusCode": failure, "message": "temporarily unavailable"}
        if identity_header != self.identity_header:
            return 401, {"statusCode": 401, "message": "X-IDENTITY-HEADER is missing or wrong"}
        if client is None or not client.managed_identity:
            return 400, {"statusCode": 400, "message": "No managed identity with that client_id"}
        if query.get("resource") != BOT_FRAMEWORK_AUDIENCE:
            return 400, {"statusCode": 400, "message": "unsupported resource"}
        token = self._access_token(query["client_id"], "managed-identity")
        body = {
            "access_token": token,
            "expires_on": str(int(time.time()) + self.token_lifetime),
            "resource": BOT_FRAMEWORK_AUDIENCE,
            "token_type": "Bearer",
            "client_id": query["client_id"],
        }
        return 200, body

    # -- TLS --------------------------------------------------------------------------------------

    @staticmethod
    def _make_tls(directory: Path) -> ssl.SSLContext:
        """A throwaway CA and a 127.0.0.1 server certificate (EC keys: generated instantly)."""
        now = dt.datetime.now(dt.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay local issuer CA")])
        ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(ca_ski, critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        (directory / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
        (directory / "server.pem").write_bytes(cert.public_bytes(pem))
        (directory / "server.key").write_bytes(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(directory / "server.pem", directory / "server.key")
        return ctx


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _aad_error(error: str, description: str) -> dict[str, Any]:
    trace = str(uuid.uuid4())
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return {
        "error": error,
        "error_description": f"{description} Trace ID: {trace} Timestamp: {stamp}",
        "error_codes": [int(description[6:].split(":")[0])],
        "trace_id": trace,
        "correlation_id": str(uuid.uuid4()),
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # e.g. a client that does not trust the CA aborts the handshake: expected, not a crash.
        log.debug("local issuer: request from %s failed", client_address, exc_info=True)


class _BaseHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real services do

    @property
    def issuer(self) -> LocalIssuer:
        return self.server.issuer  # type: ignore[attr-defined,no-any-return]

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("local issuer: " + format, *args)

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if status >= 500 or status == 429:
            # msal caches 5xx/429 answers for Retry-After seconds (5 by default); 0 keeps an
            # injected failure to exactly the requests it was meant for.
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(data)


class _MetadataHandler(_BaseHandler):
    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/msi/token":
            query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
            status, token = self.issuer._managed_identity_token(
                query, self.headers.get("X-IDENTITY-HEADER")
            )
            self._send_json(status, token)
            return
        if path == "/v1/.well-known/openidconfiguration":
            body = self.issuer._metadata()
        elif path == "/v1/.well-known/keys":
            body = self.issuer._jwks()
        else:
            self._send_json(404, {"error": "not_found"})
            return
        with self.issuer._lock:
            self.issuer.metadata_requests += 1
        self._send_json(200, body)


class _TokenHandler(_BaseHandler):
    def do_GET(self) -> None:
        parts = urlsplit(self.path).path.strip("/").split("/")
        # msal 1.39, instance_discovery=False: {authority}/v2.0/.well-known/openid-configuration
        if len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            with self.issuer._lock:
                self.issuer.discovery_requests += 1
            self._send_json(200, self.issuer._discovery(parts[0]))
        else:
            self._send_json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace")
        parts = urlsplit(self.path).path.strip("/").split("/")
        if len(parts) != 4 or parts[1:] != ["oauth2", "v2.0", "token"]:
            self._send_json(404, {"error": "not_found"})
            return
        form = {k: v[0] for k, v in parse_qs(raw).items()}
        status, body = self.issuer._token(parts[0], form)
        self._send_json(status, body)
