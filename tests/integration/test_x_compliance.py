"""The X stand-in's batch compliance jobs answer tweepy's Client as X does."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
import tweepy

from tests.fakes.x_server import FakeXServer
from tests.integration.test_x_server import TOKEN, LocalRedirect

IDS = [str(1_900_000_000_000_000_000 + n) for n in range(10)]


@pytest.fixture
def x_server() -> Iterator[FakeXServer]:
    server = FakeXServer(token=TOKEN).start()
    yield server
    server.stop()


def client(server: FakeXServer, token: str = TOKEN) -> tweepy.Client:
    api = tweepy.Client(token)
    api.session.mount("https://api.twitter.com", LocalRedirect(server.url))
    return api


def test_a_job_goes_from_created_to_complete_and_lists_only_the_marked_ids(x_server) -> None:
    x_server.control({"compliance_mark": {"ids": IDS[:2], "reason": "deleted"}})
    x_server.control({"compliance_mark": {"ids": [IDS[5]], "reason": "scrub_geo"}})
    api = client(x_server)

    job = api.create_compliance_job("tweets", name="archive").data
    assert job["status"] == "created"
    assert set(job) >= {
        "id", "type", "name", "resumable", "created_at", "upload_url", "upload_expires_at",
        "download_url", "download_expires_at", "status",
    }  # fmt: skip
    assert job["upload_url"].startswith("http://127.0.0.1:")
    put = requests.put(job["upload_url"], data="\n".join(IDS), timeout=5)
    assert put.status_code == 200
    assert api.get_compliance_job(job["id"]).data["status"] == "complete"

    lines = requests.get(job["download_url"], timeout=5).text.splitlines()
    results = {r["id"]: r for r in map(json.loads, lines)}
    assert set(results) == {IDS[0], IDS[1], IDS[5]}
    assert results[IDS[5]]["reason"] == "scrub_geo"
    assert set(results[IDS[0]]) == {"id", "action", "created_at", "redacted_at", "reason"}
    listed = api.get_compliance_jobs("tweets").data
    assert [j["id"] for j in listed] == [job["id"]]
    assert x_server.stats()["compliance_uploaded_ids"] == len(IDS)


def test_one_running_job_per_type_and_a_wrong_token_is_refused(x_server) -> None:
    api = client(x_server)
    first = api.create_compliance_job("tweets").data
    with pytest.raises(tweepy.BadRequest) as refused:
        api.create_compliance_job("tweets")
    assert first["id"] in str(refused.value)
    assert api.create_compliance_job("users").data["type"] == "users"  # another type may run
    with pytest.raises(tweepy.Unauthorized):
        client(x_server, "wrong").get_compliance_job(first["id"])


def test_an_unused_upload_url_expires_after_15_minutes(x_server) -> None:
    now = [1_800_000_000.0]
    x_server.clock = lambda: now[0]
    api = client(x_server)
    job = api.create_compliance_job("tweets").data
    now[0] += 15 * 60
    assert api.get_compliance_job(job["id"]).data["status"] == "expired"
    assert requests.put(job["upload_url"], data=IDS[0], timeout=5).status_code == 400
    assert api.create_compliance_job("tweets").data["status"] == "created"  # no longer running


def test_an_upload_over_the_limit_fails_the_job_with_x_reason(x_server) -> None:
    x_server.control({"compliance_max_ids": 3, "compliance_polls": 2})
    api = client(x_server)
    job = api.create_compliance_job("tweets").data
    requests.put(job["upload_url"], data="\n".join(IDS), timeout=5)
    failed = api.get_compliance_job(job["id"]).data
    assert failed["status"] == "failed"
    assert "more than 3" in failed["error"]
    ok = api.create_compliance_job("tweets").data
    requests.put(ok["upload_url"], data="\n".join(IDS[:3]), timeout=5)
    assert api.get_compliance_job(ok["id"]).data["status"] == "in_progress"
    assert requests.get(ok["download_url"], timeout=5).status_code == 404  # not yet
    assert api.get_compliance_job(ok["id"]).data["status"] == "complete"
