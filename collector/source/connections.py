"""X's Connections API: list the app's stream connections and end stale ones.

    ended = end_stale_connections(cfg, token)   # [StreamConnection(id=..., connected_at=...)]

X keeps counting a stream connection whose client died without closing it (kill -9, a lost
network) and refuses the next one with 429 TooManyConnections (xdevplatform/samples#140). The
Connections API (2025-09; X's OpenAPI 2.167: GET /2/connections, DELETE /2/connections with
{"uuids": [...]}) ends it at once. The collector calls this only while X refuses its own
connection, so every active filtered-stream connection of the app is someone else's: a dead
earlier run of this collector, or another client (x.clear_stale_connections = false keeps those).

Each call is free of post charges. Errors: XNotAvailable (404/403: not available to the
project or access level), XRequestError (network, 401, 429, 5xx). tweepy has no method for
these endpoints: its Client.request sends them (collector.source.usage says why not xdk).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import requests
import tweepy

from collector.config import Config
from collector.errors import XNotAvailable, XRequestError
from collector.source.stream import point_at_base_url
from collector.source.usage import REQUEST_TIMEOUT

log = logging.getLogger(__name__)

ENDPOINTS = {"filter": "filtered_stream", "sample": "sample_stream"}  # X's endpoint names


@dataclass(frozen=True)
class StreamConnection:
    """One connection X counts: id (X's uuid), endpoint_name, connected_at (ISO), client_ip."""

    id: str
    endpoint_name: str | None
    connected_at: str | None
    client_ip: str | None

    def line(self) -> str:
        return f"{self.id} (since {self.connected_at or '?'} from {self.client_ip or '?'})"


def _request(cfg: Config, token: str, method: str, route: str, **kwargs) -> requests.Response:
    client = point_at_base_url(tweepy.Client(bearer_token=token), cfg, REQUEST_TIMEOUT)
    try:
        return client.request(method, route, **kwargs)
    except (tweepy.NotFound, tweepy.Forbidden) as exc:
        raise XNotAvailable(_line(method, route, exc), exc.response.status_code) from None
    except tweepy.HTTPException as exc:
        raise XRequestError(_line(method, route, exc), exc.response.status_code) from None
    except requests.RequestException as exc:
        raise XRequestError(f"X API {method} {route}: {type(exc).__name__}: {exc}") from None


def _line(method: str, route: str, exc: tweepy.HTTPException) -> str:
    said = "; ".join(str(m) for m in exc.api_messages) or exc.response.reason or "no body"
    return f"X API {method} {route}: HTTP {exc.response.status_code}: {said}".replace("\n", " ")


def active_connections(cfg: Config, token: str) -> list[StreamConnection]:
    """The app's active connections to the configured stream (GET /2/connections)."""
    endpoint = ENDPOINTS[cfg.x.stream]
    params = {
        "status": "active",
        "endpoints": endpoint,
        "connection.fields": "id,endpoint_name,connected_at,client_ip",
        "max_results": 100,
    }
    body = _request(cfg, token, "GET", "/2/connections", params=params).json() or {}
    return [
        StreamConnection(
            str(item.get("id")),
            item.get("endpoint_name"),
            item.get("connected_at"),
            item.get("client_ip"),
        )
        for item in body.get("data") or []
        if isinstance(item, dict) and item.get("id")
    ]


def end_stale_connections(cfg: Config, token: str) -> list[StreamConnection]:
    """End every active connection of the app to the configured stream (DELETE
    /2/connections by id);
    returns those X reports ended. Call it only while X refuses this collector's connection."""
    stale = active_connections(cfg, token)
    if not stale:
        return []
    body = _request(
        cfg, token, "DELETE", "/2/connections", json={"uuids": [c.id for c in stale]}
    ).json()
    results = ((body or {}).get("data") or {}).get("results") or []
    ended = {str(r.get("uuid")) for r in results if isinstance(r, dict) and r.get("success")}
    return [c for c in stale if c.id in ended]
