"""Fixtures for the Teams auth tests: a local issuer and two registered bots (prefix ``auth_``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from relay.config import AppType, BotConfig, Settings
from relay.devtools.issuer import LocalIssuer
from relay.domain import BotId, TenantId
from relay.teams.inbound_model import Account, Conversation, InboundActivity

AUTH_BOT_A = "0a0a0a0a-1111-4111-8111-aaaaaaaaaaaa"  # SingleTenant
AUTH_TENANT_A = "7e7e7e7e-2222-4222-8222-aaaaaaaaaaaa"
AUTH_SECRET_A = "a-secret-Q7vX~k2"
AUTH_BOT_B = "0b0b0b0b-3333-4333-8333-bbbbbbbbbbbb"  # legacy MultiTenant (tenant botframework.com)
AUTH_SECRET_B = "b-secret-9Zp.Lm4"
AUTH_SERVICE_URL = "https://smba.trafficmanager.net/emea/"
AUTH_NEO_KEY = SecretStr("neo_sk_test_abcdefgh12345")


def auth_bots() -> tuple[BotConfig, ...]:
    return (
        BotConfig(
            app_id=BotId(AUTH_BOT_A),
            app_type=AppType.SINGLE_TENANT,
            tenant_id=TenantId(AUTH_TENANT_A),
            name="Bot A",
            secret=SecretStr(AUTH_SECRET_A),
        ),
        BotConfig(
            app_id=BotId(AUTH_BOT_B),
            app_type=AppType.MULTI_TENANT,
            name="Bot B",
            secret=SecretStr(AUTH_SECRET_B),
        ),
    )


@pytest.fixture(scope="module")
def auth_issuer() -> Iterator[LocalIssuer]:
    """Shared by a module: counters are compared as before/after deltas."""
    with LocalIssuer() as issuer:
        issuer.register_client(AUTH_BOT_A, AUTH_SECRET_A, AUTH_TENANT_A)
        issuer.register_client(AUTH_BOT_B, AUTH_SECRET_B, "botframework.com")
        yield issuer


@pytest.fixture
def auth_make_settings() -> Callable[..., Settings]:
    def make(issuer: LocalIssuer | None, **overrides: Any) -> Settings:
        values: dict[str, Any] = {"neo_api_key": AUTH_NEO_KEY, "bots": auth_bots()}
        if issuer is not None:
            values.update(
                openid_metadata_url=issuer.openid_metadata_url,
                token_issuer=issuer.issuer,
                login_url=issuer.login_url,
            )
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@pytest.fixture
def auth_settings(
    auth_issuer: LocalIssuer, auth_make_settings: Callable[..., Settings]
) -> Settings:
    return auth_make_settings(auth_issuer)


def auth_activity(recipient: str | None = AUTH_BOT_A, **overrides: Any) -> InboundActivity:
    values: dict[str, Any] = {
        "type": "message",
        "id": "1700000000000",
        "channel_id": "msteams",
        "service_url": AUTH_SERVICE_URL,
        "from_property": Account(id="29:user", name="User"),
        "conversation": Conversation(id="a:conv", conversation_type="personal"),
        "recipient": Account(id=f"28:{recipient}") if recipient else None,
        "text": "hi",
    }
    values.update(overrides)
    return InboundActivity(**values)
