"""X's usage endpoints: the stand-in answers from its bill; collector.source.usage reads them."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from collector.config import load_config
from collector.errors import XRequestError
from collector.source.usage import credits, post_usage
from tests.collector_support import TOKEN, write_config, x_server_fixture
from tests.fakes.x_server import FakeXServer

x_server = x_server_fixture(keepalive_interval=0.2)


def at(day: str) -> float:
    return datetime.fromisoformat(day + "T12:00:00").replace(tzinfo=UTC).timestamp()


def bill(server: FakeXServer, day: str, ids: range) -> None:
    server.clock = lambda: at(day)
    server.record_delivered([str(i) for i in ids])


def get(server: FakeXServer, path: str, token: str = TOKEN, **params) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return requests.get(server.url + path, params=params, headers=headers, timeout=10)


def test_usage_tweets_answers_xs_documented_shape_from_the_bill(x_server: FakeXServer) -> None:
    x_server.control({"usage_cycle_day": 10})
    bill(x_server, "2026-11-09", range(0, 7))  # the previous cycle
    bill(x_server, "2026-11-10", range(100, 130))
    bill(x_server, "2026-11-11", range(100, 110))  # delivered again the next day: billed again
    bill(x_server, "2026-11-11", range(100, 110))  # and the same day: once
    answer = get(x_server, "/2/usage/tweets")
    assert answer.status_code == 200 and answer.headers["api-version"] == "2.168"
    # without usage.fields: the four fields of X's documentation example, counts as strings
    assert answer.json() == {
        "data": {
            "cap_reset_day": 29,  # days until 2026-12-10
            "project_cap": "3000000",
            "project_id": "1369785403853424",
            "project_usage": "40",
        }
    }
    daily = get(x_server, "/2/usage/tweets", **{"usage.fields": "daily_project_usage", "days": 3})
    assert daily.json() == {
        "data": {
            "daily_project_usage": {
                "project_id": "1369785403853424",
                "usage": [
                    {"date": "2026-11-09T00:00:00.000Z", "usage": "7"},
                    {"date": "2026-11-10T00:00:00.000Z", "usage": "30"},
                    {"date": "2026-11-11T00:00:00.000Z", "usage": "10"},
                ],
            }
        }
    }
    wrong = get(x_server, "/2/usage/tweets", **{"usage.fields": "spend"})
    assert wrong.status_code == 400 and wrong.json()["title"] == "Invalid Request"
    assert get(x_server, "/2/usage/tweets", token="wrong").status_code == 401


def test_usage_tweets_is_rate_limited_as_x_documents(x_server: FakeXServer) -> None:
    for _ in range(50):
        assert get(x_server, "/2/usage/tweets").status_code == 200
    refused = get(x_server, "/2/usage/tweets")
    assert refused.status_code == 429 and refused.headers["x-rate-limit-remaining"] == "0"
    assert x_server.stats()["usage_requests"] == 51


def test_the_collector_reads_usage_into_a_dataclass(tmp_path: Path, x_server) -> None:
    cfg = load_config(write_config(tmp_path, x_server.url))
    bill(x_server, "2026-12-03", range(0, 25))
    usage = post_usage(cfg, TOKEN)
    assert (usage.project_usage, usage.project_cap) == (25, 3_000_000)
    assert usage.project_id == "1369785403853424" and usage.api_version == "2.168"
    assert usage.daily["2026-12-03"] == 25 and len(usage.daily) == 7
    assert usage.cap_reset_day == 29
    assert usage.cap_resets_on(date(2026, 12, 3)) == date(2027, 1, 1)


def test_the_collector_reads_the_credit_balances_or_none_on_xs_empty_404(
    tmp_path: Path, x_server: FakeXServer
) -> None:
    cfg = load_config(write_config(tmp_path, x_server.url))
    x_server.control(
        {"usage_credits": {"total_balance": 12.5, "prepaid_balance": 10, "free_balance": 2.5}}
    )
    balance = credits(cfg, TOKEN)
    assert balance is not None and balance.total_balance == Decimal("12.5")
    assert (balance.prepaid_balance, balance.free_balance) == (Decimal("10"), Decimal("2.5"))
    x_server.control({"usage_credits": None})
    empty = get(x_server, "/2/usage/credits")
    assert empty.status_code == 404 and empty.content == b""
    assert credits(cfg, TOKEN) is None


def test_a_refused_usage_request_is_one_line_naming_the_endpoint(tmp_path: Path, x_server) -> None:
    cfg = load_config(write_config(tmp_path, x_server.url))
    with pytest.raises(XRequestError) as caught:
        post_usage(cfg, "wrong-token")
    assert caught.value.status == 401
    assert str(caught.value).startswith("X API /2/usage/tweets: HTTP 401")
    assert "\n" not in str(caught.value)


def test_a_silent_server_ends_the_request_after_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    import time

    from collector.source import usage

    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    try:
        port = silent.getsockname()[1]
        cfg = load_config(write_config(tmp_path, f"http://127.0.0.1:{port}"))
        monkeypatch.setattr(usage, "REQUEST_TIMEOUT", 0.5)
        started = time.monotonic()
        with pytest.raises(XRequestError) as caught:
            post_usage(cfg, TOKEN)
        assert time.monotonic() - started < 5
        assert str(caught.value).startswith("X API /2/usage/tweets: ReadTimeout")
    finally:
        silent.close()
