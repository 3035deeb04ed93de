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
# Left out of FULL: metrics X gives only to the post's author (user-context OAuth; the stream
# uses an app-only bearer token) and user fields that describe the relation to the
# authenticated user, which an app-only token does not have.
PRIVATE_FIELDS = {
    "tweet_fields": ("non_public_metrics", "organic_metrics", "promoted_metrics"),
    "user_fields": ("connection_status", "receives_your_dm"),
    "media_fields": ("non_public_metrics", "organic_metrics", "promoted_metrics"),
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


def explicit_field_set(lists: dict[str, list[str]]) -> FieldSet:
    """A FieldSet from per-kind lists ({"tweet_fields": [...], ...}; kinds not given are
    empty). ValueError naming the kind and the name when X's stream does not accept it."""
    for kind, names in lists.items():
        unknown = [n for n in names if n not in getattr(ACCEPTED, kind)]
        if unknown:
            raise ValueError(
                f"'x.{kind}' holds {', '.join(map(repr, unknown))}, which X's stream does not "
                f"accept in {PARAMETERS[kind]} (one of: {', '.join(getattr(ACCEPTED, kind))})"
            )
    return FieldSet(**{kind: tuple(names) for kind, names in lists.items()})
