"""Filtered-stream rules: list them, and make the live rules equal to the config.

Our rules are marked by a tag prefix derived from collector_id (`collector-1:python`), so a
sync only ever deletes rules this collector made; rules someone else made on the same app stay.
Rules are changed through the rules endpoint only: the stream connection is not touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import requests
import tweepy

from collector.config import Config
from collector.stream import make_client

log = logging.getLogger(__name__)


class RulesError(Exception):
    """The rules endpoint failed (network, 5xx, 429...): worth retrying later."""


class RulesAuthError(RulesError):
    """The X API rejected the token (401) or refused access (403)."""


@dataclass(frozen=True)
class LiveRule:
    id: str
    value: str
    tag: str | None

    def to_dict(self) -> dict:
        return {"id": self.id, "value": self.value, "tag": self.tag}


@dataclass(frozen=True)
class SyncResult:
    added: list[tuple[str, str]]
    deleted: list[LiveRule]
    kept: list[LiveRule]
    others: list[LiveRule]
    failed: list[str]


def tag_prefix(cfg: Config) -> str:
    return f"{cfg.collector_id}:"


def desired_rules(cfg: Config) -> list[tuple[str, str]]:
    """(value, tag) pairs as they should be live, our tag prefix included."""
    return [(rule.value, tag_prefix(cfg) + (rule.tag or rule.value)) for rule in cfg.x.rules]


def _one_line(exc: Exception) -> str:
    if isinstance(exc, tweepy.HTTPException):
        detail = "; ".join(str(m) for m in exc.api_messages) or exc.response.reason
        return f"HTTP {exc.response.status_code}: {detail}".replace("\n", " ")
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")


class RulesClient:
    def __init__(self, cfg: Config, token: str) -> None:
        self.cfg = cfg
        self.client = make_client(cfg, token, return_type=dict)

    def _call(self, method, *args, **kwargs) -> dict:
        try:
            return method(*args, **kwargs) or {}
        except (tweepy.Unauthorized, tweepy.Forbidden) as exc:
            raise RulesAuthError(f"X API rules endpoint: {_one_line(exc)}") from None
        except (tweepy.TweepyException, requests.RequestException) as exc:
            raise RulesError(f"X API rules endpoint: {_one_line(exc)}") from None

    def list(self) -> list[LiveRule]:
        body = self._call(self.client.get_rules)
        return [LiveRule(r["id"], r["value"], r.get("tag")) for r in body.get("data") or []]

    def sync(self) -> SyncResult:
        prefix = tag_prefix(self.cfg)
        live = self.list()
        ours = [r for r in live if (r.tag or "").startswith(prefix)]
        others = [r for r in live if r not in ours]
        wanted = desired_rules(self.cfg)
        stale = [r for r in ours if (r.value, r.tag) not in wanted]
        kept = [r for r in ours if r not in stale]
        present = {(r.value, r.tag) for r in kept}
        missing = [pair for pair in wanted if pair not in present]
        # Delete first: a rule whose tag changed keeps its value, and X refuses duplicate values.
        if stale:
            self._call(self.client.delete_rules, [r.id for r in stale])
        failed: list[str] = []
        refused: set[str] = set()
        if missing:
            body = self._call(
                self.client.add_rules, [tweepy.StreamRule(value=v, tag=t) for v, t in missing]
            )
            for error in body.get("errors") or []:
                refused.add(error.get("value"))
                failed.append(f"{error.get('value')!r}: {error.get('title', 'refused')}")
        result = SyncResult(
            added=[pair for pair in missing if pair[0] not in refused],
            deleted=stale,
            kept=kept,
            others=others,
            failed=failed,
        )
        log.info(
            "rules synced: %d added, %d deleted, %d unchanged, %d of other clients left alone%s",
            len(result.added),
            len(result.deleted),
            len(result.kept),
            len(result.others),
            f"; refused: {', '.join(failed)}" if failed else "",
        )
        return result
