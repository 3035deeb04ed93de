"""The X stand-in's account states: 402 bodies, spending limit, connection limit with a stale
connection, the Connections API and the api-version header, each switched at runtime."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest
import requests

from tests.fakes.x_server import FakeXServer

TOKEN = "t0ken"
STREAM = "/2/tweets/search/stream"


@pytest.fixture
def x_server() -> Iterator[FakeXServer]:
    server = FakeXServer(token=TOKEN, keepalive_interval=0.2).start()
    server.add_rule("python", tag="py")
    yield server
    server.stop()


def connect(server: FakeXServer) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", STREAM, headers={"Authorization": f"Bearer {TOKEN}"})
    return conn.getresponse()


def api(server: FakeXServer, method: str, path: str, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return requests.request(method, server.url + path, headers=headers, timeout=10, **kwargs)


@pytest.mark.parametrize(
    ("title", "body"),
    [
        (
            "CreditsDepleted",
            {
                "title": "CreditsDepleted",
                "detail": "Your enrolled account [1234567890] does not have any credits to "
                "fulfill this request.",
                "type": "https://api.twitter.com/2/problems/credits",
            },
        ),
        (
            "Payment Required",
            {
                "title": "Payment Required",
                "detail": "credits depleted",
                "type": "https://api.x.com/2/problems/credits-depleted",
            },
        ),
    ],
)
def test_both_402_bodies_until_switched_off(x_server: FakeXServer, title: str, body) -> None:
    x_server.control({"refuse_streams": [402, title]})
    refused = connect(x_server)
    assert refused.status == 402 and json.loads(refused.read()) == body
    assert refused.getheader("api-version") == "2.168"
    x_server.control({"refuse_streams": None})
    assert connect(x_server).status == 200


def test_the_spending_limit_refusal_names_the_billing_cycle(x_server: FakeXServer) -> None:
    x_server.refuse_streams(402, "SpendingLimit")
    problem = json.loads(connect(x_server).read())
    assert "spending limit" in problem["detail"] and "billing cycle" in problem["detail"]


def test_api_version_header_follows_the_knob(x_server: FakeXServer) -> None:
    response = connect(x_server)
    assert response.status == 200 and response.getheader("api-version") == "2.168"
    response.close()
    x_server.control({"api_version": "2.169"})
    assert api(x_server, "GET", "/2/tweets/search/stream/rules").headers["api-version"] == "2.169"


def test_a_stale_connection_holds_the_only_place_until_ended_through_the_api(
    x_server: FakeXServer,
) -> None:
    x_server.control({"connection_limit": 1, "stale_connection": 600})
    refused = connect(x_server)
    assert refused.status == 429
    assert json.loads(refused.read())["connection_issue"] == "TooManyConnections"
    listed = api(
        x_server,
        "GET",
        "/2/connections",
        params={"endpoints": "filtered_stream", "connection.fields": "endpoint_name,connected_at"},
    ).json()
    (stale,) = listed["data"]
    assert set(stale) == {"id", "endpoint_name", "connected_at"}
    assert listed["meta"] == {"result_count": 1}
    ended = api(x_server, "DELETE", "/2/connections", json={"uuids": [stale["id"]]}).json()
    assert ended == {
        "data": {
            "successful_kills": 1,
            "failed_kills": 0,
            "results": [{"uuid": stale["id"], "success": True}],
        }
    }
    live = connect(x_server)
    assert live.status == 200
    assert connect(x_server).status == 429  # the live one now holds the place
    by_endpoint = api(x_server, "DELETE", "/2/connections/filtered_stream").json()
    assert by_endpoint["data"]["successful_kills"] == 1
    live.read()  # the stand-in ended the live stream: the chunked answer completes
    assert x_server.stats()["connections_deleted"] == 2
    inactive = api(x_server, "GET", "/2/connections", params={"status": "inactive"}).json()
    assert inactive["meta"]["result_count"] == 2


def test_the_connections_api_can_answer_404_as_for_a_project_without_it(x_server) -> None:
    x_server.control({"connections_api": 404})
    answer = api(x_server, "GET", "/2/connections")
    assert answer.status_code == 404 and answer.content == b""
    x_server.control({"connections_api": None})
    assert api(x_server, "GET", "/2/connections").json() == {
        "data": [],
        "meta": {"result_count": 0},
    }


def test_the_access_level_sets_xs_connection_and_rule_length_limits(x_server) -> None:
    x_server.control({"connection_limit": 1, "access_level": "enterprise"})
    first, second = connect(x_server), connect(x_server)
    assert (first.status, second.status) == (200, 200)
    assert connect(x_server).status == 429  # two redundant connections, no third
    assert x_server.rule_max_length == 2048
    x_server.control({"access_level": "pay-per-use"})
    assert x_server.rule_max_length == 1024
