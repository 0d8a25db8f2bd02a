"""``GET /metrics`` end to end: counters move when real turns run against the emulators.

Each test drives the in-process relay over loopback HTTP (tests/fakes/harness.py) and reads the
Prometheus text exposition back through the official parser, so a renamed metric, a lost label or
a hook that no longer fires fails here.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from relay.app import create_app
from relay.devtools.neo_emulator_streams import TurnInput
from relay.ops.metrics import RelayMetrics
from relay.store import open_store
from relay.store.base import Store
from tests.fakes.harness import BOT_A, BOT_B, NEO_KEY, Harness

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _answer(turn: TurnInput) -> list[dict[str, object]]:
    return [
        {"type": "start", "messageId": "m1"},
        {"type": "text-start", "id": "t"},
        {"type": "text-delta", "id": "t", "delta": "Answer: "},
        {"type": "text-delta", "id": "t", "delta": turn.message},
        {"type": "text-end", "id": "t"},
        {"type": "finish", "finishReason": "stop"},
    ]


async def _scrape(h: Harness) -> tuple[str, Samples]:
    assert h.http is not None
    async with h.http.get(h.metrics_url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return text, samples


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _sum(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= lab)


async def test_a_delivered_turn_moves_every_happy_path_metric(harness: Harness) -> None:
    harness.neo.script = _answer
    act = harness.activity(BOT_A, "hello", conversation_id="a:conv-m1")
    assert (await harness.deliver(act, bot=BOT_A)).status == 200
    await harness.wait_for(lambda: len(harness.teams.messages("a:conv-m1")) == 1, what="answer")
    await harness.wait_idle()

    _, s = await _scrape(harness)
    assert _get(s, "relay_activities_total", type="message", bot=BOT_A.app_id) == 1
    assert _get(s, "relay_activities_total", type="message", bot=BOT_B.app_id) == 0
    assert _get(s, "relay_inbound_responses_total", status="200") == 1
    assert _get(s, "relay_turns_total", outcome="delivered") == 1
    assert _get(s, "relay_turn_first_text_seconds_count") == 1
    assert _get(s, "relay_turn_final_answer_seconds_count") == 1
    first = _get(s, "relay_turn_first_text_seconds_sum")
    final = _get(s, "relay_turn_final_answer_seconds_sum")
    assert 0 < first <= final < 10
    assert _get(s, "relay_active_streams") == 0
    assert _get(s, "relay_store_seconds_count", operation="add_turn") == 1
    assert _get(s, "relay_store_seconds_count", operation="save_turn") >= 3
    assert _sum(s, "relay_teams_requests_total", operation="POST message") >= 1
    assert _sum(s, "relay_teams_errors_total") == 0
    assert _sum(s, "relay_neo_errors_total") == 0
    assert _get(s, "process_resident_memory_bytes") > 0  # process collector is on the registry


async def test_rejected_requests_are_counted_by_status(harness: Harness) -> None:
    act = harness.activity(BOT_A, "hi")
    assert (await harness.deliver(act, token="not-a-jwt")).status == 401
    _, s = await _scrape(harness)
    assert _get(s, "relay_inbound_responses_total", status="401") == 1
    assert _sum(s, "relay_activities_total") == 0  # only authenticated activities count


async def test_neo_429_is_an_error_a_throttle_and_a_retry(harness: Harness) -> None:
    harness.neo.script = _answer
    harness.neo.fail_next("post_message", 429, code="rate_limited", retry_after=0, times=2)
    act = harness.activity(BOT_A, "busy?", conversation_id="a:conv-m2")
    assert (await harness.deliver(act, bot=BOT_A)).status == 200
    await harness.wait_for(lambda: len(harness.teams.messages("a:conv-m2")) == 1, what="answer")
    await harness.wait_idle()

    _, s = await _scrape(harness)
    assert _get(s, "relay_neo_errors_total", status="429", code="rate_limited") == 2
    assert _get(s, "relay_throttled_total", service="neo") == 2
    assert _get(s, "relay_retries_total", policy="neo", kind="retryable") == 2
    assert _get(s, "relay_turns_total", outcome="delivered") == 1


async def test_teams_429_and_failed_turns_are_counted(harness: Harness) -> None:
    harness.neo.script = _answer
    harness.teams.fail_next(429, retry_after=0, match=lambda a: a.get("type") == "message")
    harness.neo.fail_next("create_session", 400, code="bad_request")
    # A group chat: the error notice is a plain message sent through relay.retry.
    act = harness.activity(BOT_A, "x", conversation_id="a:conv-m3", conversation_type="groupChat")
    assert (await harness.deliver(act, bot=BOT_A)).status == 200
    await harness.wait_for(lambda: len(harness.teams.messages("a:conv-m3")) == 1, what="error")
    await harness.wait_idle()

    _, s = await _scrape(harness)
    assert _get(s, "relay_turns_total", outcome="failed") == 1
    assert _get(s, "relay_neo_errors_total", status="400", code="bad_request") == 1
    assert _get(s, "relay_throttled_total", service="teams") == 1
    assert _get(s, "relay_teams_errors_total", operation="POST message", status="429") == 1
    assert _get(s, "relay_retries_total", policy="teams", kind="retryable") == 1
    # A failed turn shows its error, but no answer latency is recorded for it.
    assert _get(s, "relay_turn_final_answer_seconds_count") == 0


async def test_active_streams_gauge_counts_a_turn_in_flight(harness: Harness) -> None:
    harness.neo.script = _answer
    harness.neo.stall_stream_after(2, seconds=1.0)
    act = harness.activity(BOT_A, "slow", conversation_id="a:conv-m4")
    assert (await harness.deliver(act, bot=BOT_A)).status == 200
    await harness.wait_for(lambda: harness.components.worker.active == 1, what="turn running")
    await harness.wait_for(
        lambda: any(r.path.endswith("/events") for r in harness.neo.requests), what="tail open"
    )
    _, s = await _scrape(harness)
    assert _get(s, "relay_active_streams") == 1
    await harness.wait_idle()
    _, s = await _scrape(harness)
    assert _get(s, "relay_active_streams") == 0


async def test_no_secret_reaches_the_metrics(harness: Harness) -> None:
    harness.neo.script = _answer
    harness.neo.fail_next("create_session", 401, code="invalid_api_key", message=NEO_KEY)
    act = harness.activity(BOT_A, "x", conversation_id="a:conv-m5")
    await harness.deliver(act, bot=BOT_A)
    await harness.deliver(harness.activity(BOT_B, "y"), token=f"{NEO_KEY}.bad")
    await harness.wait_for(lambda: len(harness.teams.messages("a:conv-m5")) == 1, what="error")
    await harness.wait_idle()
    text, _ = await _scrape(harness)
    token = harness.issuer.sign(BOT_A.app_id, harness.service_url)
    for secret in (NEO_KEY, BOT_A.secret, BOT_B.secret, token, "Bearer", "neo_sk_"):
        assert secret not in text


async def test_two_apps_in_one_process_have_their_own_registries(tmp_path: Path) -> None:
    # The default global registry would raise "Duplicated timeseries" on the second app.
    from relay.config import load_settings

    env = {"NEO_API_KEY": NEO_KEY, "RELAY_ALLOW_ANONYMOUS": "true"}
    settings = load_settings(env, database_url="sqlite:///:memory:")
    first, second = create_app(settings), create_app(settings)
    m1 = first[next(k for k in first if isinstance(first[k], RelayMetrics))]
    m2 = second[next(k for k in second if isinstance(second[k], RelayMetrics))]
    assert m1.registry is not m2.registry
    m1.activity("message", None)
    assert m1.activities.labels("message", "unregistered")._value.get() == 1
    assert m2.activities.labels("message", "unregistered")._value.get() == 0
    assert isinstance(first, web.Application)


async def test_label_values_are_bounded() -> None:
    m = RelayMetrics(bots=[BOT_A.app_id])
    m.activity("somethingNew", "attacker-chosen-bot")
    m.neo_error(500, "Weird Code/With Spaces " + "x" * 100)
    m.teams_result("POST message", "<script>")
    assert m.activities.labels("other", "unregistered")._value.get() == 1
    names = {
        s.labels.get("code")
        for f in m.registry.collect()
        if f.name == "relay_neo_errors"
        for s in f.samples
    }
    assert names == {"weird_code_with_spaces_" + "x" * 17}
    assert m.teams_requests.labels("POST message", "other")._value.get() == 1


async def test_timed_store_is_a_store_and_times_every_call(tmp_path: Path) -> None:
    m = RelayMetrics()
    store = m.timed_store(open_store(f"sqlite:///{tmp_path / 'r.db'}"))
    assert isinstance(store, Store)
    await store.open()
    try:
        await store.ping()
        await store.ping()
    finally:
        await store.close()
    assert m.store_seconds.labels("ping")._sum.get() > 0
    samples = {
        (s.name, s.labels.get("operation")): s.value
        for f in m.registry.collect()
        for s in f.samples
    }
    assert samples[("relay_store_seconds_count", "ping")] == 2
    assert samples[("relay_store_seconds_count", "open")] == 1
