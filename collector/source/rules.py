"""Filtered-stream rules: list them, and make the live rules equal to the config.

Our rules are marked by a tag prefix derived from collector_id (`collector-1:python`), so a
sync only ever deletes rules this collector made; rules someone else made on the same app stay.
Rules are changed through the rules endpoint only: the stream connection is not touched.
"""

from __future__ import annotations

import builtins
import logging
from dataclasses import dataclass

import requests
import tweepy

from collector.config import Config, ConfigError, bearer_token_source, load_config
from collector.errors import RulesAuthError, RulesError
from collector.source.access import access_level
from collector.source.stream import make_client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveRule:
    id: str
    value: str
    tag: str | None

    def to_dict(self) -> dict:
        return {"id": self.id, "value": self.value, "tag": self.tag}


SHOWN_VALUE_LENGTH = 60  # characters of a long rule value a message shows


def shown_value(value: str) -> str:
    """A rule value for a one-line message: whole when short, else its start and its length."""
    if len(value) <= SHOWN_VALUE_LENGTH + 20:
        return repr(value)
    return f"{value[:SHOWN_VALUE_LENGTH]!r}... ({len(value):,} characters)"


@dataclass(frozen=True)
class Refusal:
    """A rule X refused, with X's own reason (its error's title and details or detail)."""

    value: str
    tag: str | None
    reason: str

    def line(self) -> str:
        """One line; a long value is shown once, shortened (X's reason quotes it again)."""
        reason = self.reason
        if len(self.value) > SHOWN_VALUE_LENGTH + 20:
            reason = reason.replace(f"'{self.value}'", "the rule").replace(self.value, "the rule")
        return f"{shown_value(self.value)} (tag {self.tag}): {reason}"


@dataclass(frozen=True)
class SyncResult:
    added: list[tuple[str, str]]
    deleted: list[LiveRule]
    kept: list[LiveRule]
    others: list[LiveRule]
    refused: list[Refusal]
    # (value, our tag, the live rule that already holds the value: another client's)
    shared: list[tuple[str, str, LiveRule]]

    @property
    def failed(self) -> list[str]:
        return [refusal.line() for refusal in self.refused]


@dataclass(frozen=True)
class RulesDiff:
    """What `sync` would change, found without changing anything (`rules sync --check`).

    to_add: configured (value, tag) pairs that are not live and that X accepts (dry run);
    to_delete: our live rules that are no longer configured; refused: configured rules X
    refuses (dry run), with X's reason. A value live under another client's tag is in sync.
    """

    to_add: list[tuple[str, str]]
    to_delete: list[LiveRule]
    refused: list[Refusal]

    @property
    def in_sync(self) -> bool:
        return not (self.to_add or self.to_delete or self.refused)


def x_rule_reason(error: dict) -> str:
    """X's reason for refusing one rule of a POST .../rules answer (200 with `errors`).

    invalid-rules: {"title": "UnprocessableEntity", "details": [...]}; DuplicateRule: the id
    of the rule that holds the value
    (https://docs.x.com/x-api/posts/filtered-stream/api-reference/post-tweets-search-stream-rules).
    """
    title = error.get("title") or "refused"
    details = error.get("details") or ([error["detail"]] if error.get("detail") else [])
    if title == "DuplicateRule" and not details:
        details = [f"the value is already live as rule {error.get('id')}"]
    return f"{title}: {'; '.join(str(d) for d in details)}" if details else title


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
        except tweepy.Unauthorized as exc:
            raise RulesAuthError(
                f"X API rules endpoint: {_one_line(exc)}: X rejected the bearer token from "
                f"{bearer_token_source(self.cfg)}"
            ) from None
        except tweepy.Forbidden as exc:
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
        refused: list[Refusal] = []
        shared: list[tuple[str, str, LiveRule]] = []
        added: list[tuple[str, str]] = []
        if missing:
            body = self._call(
                self.client.add_rules, [tweepy.StreamRule(value=v, tag=t) for v, t in missing]
            )
            created = {rule.get("value") for rule in body.get("data") or []}
            errors = {e.get("value"): e for e in body.get("errors") or [] if isinstance(e, dict)}
            by_id = {r.id: r for r in live}
            for value, tag in missing:
                error = errors.get(value)
                holder = by_id.get(str((error or {}).get("id")))
                if value in created:
                    added.append((value, tag))
                elif error and error.get("title") == "DuplicateRule" and holder is not None:
                    shared.append((value, tag, holder))  # X matches the value already
                else:
                    reason = x_rule_reason(error) if error else "not created (no reason given)"
                    refused.append(Refusal(value, tag, reason))
        result = SyncResult(
            added=added, deleted=stale, kept=kept, others=others, refused=refused, shared=shared
        )
        log.info(
            "rules synced: %d added, %d deleted, %d unchanged, %d of other clients left alone%s",
            len(result.added),
            len(result.deleted),
            len(result.kept),
            len(result.others),
            f", {len(shared)} already live under another client's tag" if shared else "",
        )
        for refusal in refused:
            log.error("X refused rule %s", refusal.line())
        return result

    def compare(
        self,
        configured: builtins.list[tuple[str, str]] | None = None,
        known: dict[tuple[str, str | None], Refusal | None] | None = None,
    ) -> RulesDiff:
        """The difference between X's live rules and `configured` (default: the config's
        rules), with X's verdict on each missing rule (POST rules with dry_run=true).

        known: X's verdicts already asked for ((value, tag) -> its Refusal, or None when X
        accepted it): not asked again (POST rules is limited to 100 requests per 15 minutes).
        """
        known = {} if known is None else known
        prefix = tag_prefix(self.cfg)
        live = self.list()
        ours = [r for r in live if (r.tag or "").startswith(prefix)]
        wanted = desired_rules(self.cfg) if configured is None else configured
        stale = [r for r in ours if (r.value, r.tag) not in wanted]
        present = {(r.value, r.tag) for r in ours if r not in stale}
        others = {r.value for r in live if r not in ours}
        missing = [pair for pair in wanted if pair not in present and pair[0] not in others]
        # A value live under a stale tag of ours is replaced by sync: X accepted it already.
        stale_values = {r.value for r in stale}
        to_ask = [p for p in missing if p[0] not in stale_values and p not in known]
        refused = self._dry_run(to_ask)
        known.update({pair: None for pair in to_ask})
        known.update({(r.value, r.tag): r for r in refused})
        refused = [r for p in missing if (r := known.get(p)) is not None]
        refused_values = {r.value for r in refused}
        to_add = [pair for pair in missing if pair[0] not in refused_values]
        return RulesDiff(to_add=to_add, to_delete=stale, refused=refused)

    def not_live(self, known: dict | None = None) -> builtins.list[Refusal]:
        """The rules in the config file (re-read: a rules-only deploy changes it without a
        restart) that are not live, each with X's reason (dry run) or, when X would accept
        it, the command that makes it live. known: as for compare (kept between calls)."""
        try:
            cfg = load_config(self.cfg.path) if self.cfg.path else self.cfg
        except (ConfigError, TypeError):
            cfg = self.cfg
        diff = self.compare(desired_rules(cfg), known)
        waiting = [
            Refusal(
                value, tag, "X accepts it (dry run) but it is not live: run collector rules sync"
            )
            for value, tag in diff.to_add
        ]
        return diff.refused + waiting

    def _dry_run(self, pairs: builtins.list[tuple[str, str]]) -> builtins.list[Refusal]:
        """X's refusals of these (value, tag) pairs, asked with dry_run=true (nothing changes)."""
        if not pairs:
            return []
        body = self._call(
            self.client.add_rules,
            [tweepy.StreamRule(value=v, tag=t) for v, t in pairs],
            dry_run=True,
        )
        refused = []
        for error in body.get("errors") or []:
            if isinstance(error, dict) and error.get("title") != "DuplicateRule":
                value = str(error.get("value", ""))
                tag = next((t for v, t in pairs if v == value), None)
                refused.append(Refusal(value, tag, self._with_remedy(value, x_rule_reason(error))))
        return refused

    def _with_remedy(self, value: str, reason: str) -> str:
        """X's reason for a rule it finds too long, with what to do about it."""
        if "too long" not in reason.lower():
            return reason
        remedy = "shorten the rule or split it into two rules (X matches a post on any rule)"
        level = access_level(self.cfg.x.access_level)
        if len(value) <= (self.cfg.x.rule_max_length or level.rule_max_length):
            remedy += (
                f"; X allows fewer characters than x.access_level = {level.name} "
                f"({level.rule_max_length:,}) or x.rule_max_length says: is x.access_level "
                "right for this X project?"
            )
        return f"{reason}: {remedy}"

    def validate(self) -> tuple[builtins.list[tuple[str, str]], builtins.list[Refusal]]:
        """Ask X to check the configured rules without changing anything (dry_run=true).

        Returns (accepted, refused). A value already live is accepted (X holds it).
        """
        live_values = {r.value for r in self.list()}
        wanted = desired_rules(self.cfg)
        refused = self._dry_run([pair for pair in wanted if pair[0] not in live_values])
        refused_values = {r.value for r in refused}
        return [pair for pair in wanted if pair[0] not in refused_values], refused
