"""What the collector asks X to send with each post: the capture profiles.

X sends only `id`, `text` and `edit_history_tweet_ids` of a post unless the request names more
(https://docs.x.com/x-api/fundamentals/fields) and puts related objects (authors, quoted posts,
media, polls, places) in `includes` only for the expansions it names
(https://docs.x.com/x-api/fundamentals/expansions). A stream cannot be replayed: what was not
asked for is lost for good.

    FULL      every post field, every expansion and every user/media/poll/place field the
              filtered stream accepts for an app-only bearer token (the default; twarc2's
              choice, plus the fields X added since: edit history, edit controls, long posts)
    COMPACT   the fields the report and `collector export` read (the default before FULL)

`FieldSet.query()` is the query string a request carries, `FieldSet.tweepy_arguments()` the
keyword arguments of tweepy's StreamingClient.filter/sample.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields

# Parameter of each kind, in the order X documents them.
PARAMETERS = {
    "tweet_fields": "tweet.fields",
    "expansions": "expansions",
    "user_fields": "user.fields",
    "media_fields": "media.fields",
    "poll_fields": "poll.fields",
    "place_fields": "place.fields",
}
# Names X gives only to a user-context token (OAuth 1.0a or OAuth 2.0 with a user), never to
# the app-only bearer token the stream uses; left out of FULL and refused in per-kind lists.
# Metrics: "Public metrics can be requested with App only Token authentication. Non-public
# metrics can be requested for owned/authorized Posts only. This means developers are required
# to authenticate using OAuth 2.0 or OAuth 1.0a user context authorization"; organic and
# promoted metrics are non-public too (https://docs.x.com/x-api/fundamentals/metrics, for posts
# and media alike). connection_status ("the relationship between two users") and
# receives_your_dm ("if you can send a DM to this User") are relative to the authenticated
# user (X's OpenAPI User schema, https://docs.x.com/xdks/typescript/reference/interfaces/Schemas.User).
_METRICS_WHY = (
    "metrics X gives only to a user-context token of the post's author "
    "(https://docs.x.com/x-api/fundamentals/metrics)"
)
_RELATION_WHY = (
    "the relation to an authenticated user, which X gives only to a user-context token "
    "(https://docs.x.com/xdks/typescript/reference/interfaces/Schemas.User)"
)
PRIVATE_FIELDS = {
    "tweet_fields": ("non_public_metrics", "organic_metrics", "promoted_metrics"),
    "user_fields": ("connection_status", "receives_your_dm"),
    "media_fields": ("non_public_metrics", "organic_metrics", "promoted_metrics"),
}
_PRIVATE_WHY = {"connection_status": _RELATION_WHY, "receives_your_dm": _RELATION_WHY}
# X's OpenAPI 2.167 spells these fields anew in its answers; requests keep the old names.
RESPONSE_SPELLINGS = {
    "edit_history_post_ids": "edit_history_tweet_ids",
    "note_post": "note_tweet",
    "referenced_posts": "referenced_tweets",
    "referenced_posts.id": "referenced_tweets.id",
    "referenced_posts.id.author_id": "referenced_tweets.id.author_id",
}


@dataclass(frozen=True)
class FieldSet:
    """The names a request carries per kind (X's spelling, in a fixed order)."""

    tweet_fields: tuple[str, ...] = ()
    expansions: tuple[str, ...] = ()
    user_fields: tuple[str, ...] = ()
    media_fields: tuple[str, ...] = ()
    poll_fields: tuple[str, ...] = ()
    place_fields: tuple[str, ...] = ()

    def query(self) -> dict[str, str]:
        """{"tweet.fields": "a,b", ...}: the non-empty kinds, as the request's query string."""
        return {PARAMETERS[k]: ",".join(v) for k, v in self.items() if v}

    def tweepy_arguments(self) -> dict[str, list[str] | None]:
        """tweet_fields=[...], expansions=[...], ... for tweepy's StreamingClient.filter/sample
        (None leaves a kind out of the request)."""
        return {kind: list(names) or None for kind, names in self.items()}

    def items(self) -> list[tuple[str, tuple[str, ...]]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


# Every name the filtered stream accepts, per kind (X's OpenAPI for
# GET /2/tweets/search/stream, 2026; twarc/expansions.py lists the same minus later additions).
ACCEPTED = FieldSet(
    tweet_fields=(
        "article", "attachments", "author_id", "card_uri", "community_id",
        "context_annotations", "conversation_id", "created_at", "display_text_range",
        "edit_controls", "edit_history_tweet_ids", "entities", "geo", "id",
        "in_reply_to_user_id", "lang", "media_metadata", "non_public_metrics", "note_tweet",
        "organic_metrics", "possibly_sensitive", "promoted_metrics", "public_metrics",
        "referenced_tweets", "reply_settings", "scopes", "source", "text", "withheld",
    ),
    expansions=(
        "article.cover_media", "article.media_entities", "attachments.media_keys",
        "attachments.media_source_tweet", "attachments.poll_ids", "author_id",
        "edit_history_tweet_ids", "entities.mentions.username",
        "entities.note.mentions.username", "geo.place_id", "in_reply_to_user_id",
        "referenced_tweets.id", "referenced_tweets.id.author_id",
    ),
    user_fields=(
        "affiliation", "connection_status", "created_at", "description", "entities", "id",
        "location", "most_recent_tweet_id", "name", "pinned_tweet_id", "profile_banner_url",
        "profile_image_url", "protected", "public_metrics", "receives_your_dm",
        "subscription_type", "url", "username", "verified", "verified_type", "withheld",
    ),
    media_fields=(
        "alt_text", "duration_ms", "height", "media_key", "non_public_metrics",
        "organic_metrics", "preview_image_url", "promoted_metrics", "public_metrics", "type",
        "url", "variants", "width",
    ),
    poll_fields=("duration_minutes", "end_datetime", "id", "options", "voting_status"),
    place_fields=(
        "contained_within", "country", "country_code", "full_name", "geo", "id", "name",
        "place_type",
    ),
)  # fmt: skip

FULL = FieldSet(
    **{
        kind: tuple(n for n in names if n not in PRIVATE_FIELDS.get(kind, ()))
        for kind, names in ACCEPTED.items()
    }
)

COMPACT = FieldSet(
    # referenced_tweets: post types; conversation_id and in_reply_to_user_id: export columns
    tweet_fields=(
        "created_at", "author_id", "lang", "public_metrics", "entities", "referenced_tweets",
        "conversation_id", "in_reply_to_user_id",
    ),
    expansions=("author_id",),
    user_fields=("username", "public_metrics"),
)  # fmt: skip

PROFILES = {"full": FULL, "compact": COMPACT}


# What each kind counts, for a person reading `check` and the log.
_KIND_WORDS = {
    "tweet_fields": ("post field", "post fields"),
    "expansions": ("expansion", "expansions"),
    "user_fields": ("user field", "user fields"),
    "media_fields": ("media field", "media fields"),
    "poll_fields": ("poll field", "poll fields"),
    "place_fields": ("place field", "place fields"),
}


def describe(field_set: FieldSet) -> str:
    """One phrase for `check` and the run's "running:" line: the profile's name (or "per-kind
    lists") and how many names of each kind the request carries, e.g. "fields full: 26 post
    fields, 13 expansions, 19 user fields, 10 media fields, 5 poll fields, 8 place fields"."""
    name = next((n for n, s in PROFILES.items() if s == field_set), "per-kind lists")
    counts = [
        f"{len(names)} {_KIND_WORDS[kind][len(names) != 1]}"
        for kind, names in field_set.items()
        if names
    ]
    return f"fields {name}: {', '.join(counts) or 'id, text and edit_history_tweet_ids only'}"


def explicit_field_set(lists: dict[str, list[str]]) -> FieldSet:
    """A FieldSet from per-kind lists ({"tweet_fields": [...], ...}; kinds not given are
    empty). ValueError, one line naming the kind and the first name X's stream would not
    answer, and why (`refusal`)."""
    for kind, names in lists.items():
        for name in names:
            why = refusal(kind, name)
            if why:
                raise ValueError(f"'x.{kind}' holds {name!r}: {why}")
    return FieldSet(**{kind: tuple(names) for kind, names in lists.items()})


def refusal(kind: str, name: str) -> str | None:
    """Why the stream cannot give `name` in `kind` (None when it can): a name X gives only to
    a user-context token, a response spelling of a request name, or a name X does not know
    (with the nearest accepted one, when one is near)."""
    accepted = getattr(ACCEPTED, kind)
    if name in PRIVATE_FIELDS.get(kind, ()):
        what = _PRIVATE_WHY.get(name, _METRICS_WHY)
        return f"{what}; the stream uses an app-only bearer token, so leave it out"
    if name in accepted:
        return None
    request_name = RESPONSE_SPELLINGS.get(name)
    if request_name in accepted:
        return (
            f"that is the response spelling of {request_name!r} (X's OpenAPI 2.167 renames it "
            f"in answers); the request name is {request_name!r}, and either spelling is read"
        )
    near = difflib.get_close_matches(name, accepted, n=1, cutoff=0.6)
    hint = f"did you mean {near[0]!r}? " if near else ""
    return (
        f"X's stream does not accept it in {PARAMETERS[kind]} ({hint}one of: "
        f"{', '.join(n for n in accepted if n not in PRIVATE_FIELDS.get(kind, ()))})"
    )
