"""How X refuses the syntax of a filtered-stream rule (POST .../rules, errors[].details).

X answers a rule it cannot parse with 200, an `UnprocessableEntity` error of type
`.../problems/invalid-rules` and one `details` sentence ending in "(at position N)", N counted
from 1. Sentences quoted from X's answers:
  - an operator X does not know: "Reference to invalid operator 'has:geo'. Operator is not
    available in current product or product packaging. Please refer to complete available
    operator list at http://t.co/operators. (at position 13)" (xdevplatform/search-tweets-python#87)
  - a lower-case or between clauses: "Ambiguous use of or as a keyword. Use OR to logically join
    two clauses, or \"or\" to find occurrences of or in text (at position 25)"
    (felixdorn/twitter-stream-api#10)
  - a rule of negated terms only ("--b"): two sentences, "Rules must contain a non-negation term
    (at position 1)" and "Rules must contain at least one positive, non-stopword clause (at
    position 1)" (a recorded v2 answer quoted in a public client's source; Gnip PowerTrack gave
    the same pair for "-follow").
X's build-a-rule page (docs.x.com/x-api/posts/filtered-stream/integrate/build-a-rule) says
conjunction-required operators (is:, has:, lang:, sample:) "cannot be used by themselves in a rule;
they can only be used when at least one standalone operator is included", and that a negated
operator cannot be used alone.
No public answer quotes X on unbalanced parentheses or quotes, a dangling OR, or a rule of
conjunction-required operators only: those sentences are ours, in the same form (what is wrong,
then the position).
"""

from __future__ import annotations

import re

# The operators of filtered-stream rules, without their value
# (https://docs.x.com/x-api/posts/filtered-stream/integrate/build-a-rule).
STREAM_OPERATORS = frozenset(
    {
        "from", "to", "url", "retweets_of", "context", "entity", "conversation_id", "bio",
        "bio_name", "bio_location", "place", "place_country", "point_radius", "bounding_box",
        "is", "has", "sample", "lang", "followers_count", "tweets_count", "following_count",
        "listed_count", "url_title", "url_description", "url_contains", "source",
        "in_reply_to_tweet_id", "retweets_of_tweet_id", "quotes_of_tweet_id",
    }
)  # fmt: skip
# Operators that "cannot be used by themselves": they need a standalone term beside them.
CONJUNCTION_REQUIRED = frozenset({"is", "has", "lang", "sample"})
_OPERATOR = re.compile(r"-?([A-Za-z_]+):(?!//)\S")
INVALID_OPERATOR = (
    "Reference to invalid operator '{token}'. Operator is not available in current product or "
    "product packaging. Please refer to complete available operator list at "
    "http://t.co/operators. (at position {position})"
)
AMBIGUOUS_OR = (
    'Ambiguous use of or as a keyword. Use OR to logically join two clauses, or "or" to find '
    "occurrences of or in text (at position {position})"
)
DANGLING_OR = "OR must join two clauses: nothing on its {side} (at position {position})"
UNMATCHED_QUOTE = 'Unmatched double quote: a phrase needs a closing " (at position {position})'
UNMATCHED_OPEN = "Missing closing parenthesis for this one (at position {position})"
UNMATCHED_CLOSE = "Closing parenthesis without an opening one (at position {position})"
NO_NON_NEGATION = "Rules must contain a non-negation term (at position {position})"
NO_POSITIVE_CLAUSE = (
    "Rules must contain at least one positive, non-stopword clause (at position {position})"
)
CONJUNCTION_ONLY = (
    "Rules must contain a standalone operator: '{token}' cannot be used by itself "
    "(at position {position})"
)


def _tokens(value: str) -> tuple[list[tuple[str, int]], list[str]]:
    """(tokens with their 1-based position, problems with quotes and parentheses)."""
    tokens: list[tuple[str, int]] = []
    opened: list[int] = []
    problems: list[str] = []
    i, n = 0, len(value)
    while i < n:
        char = value[i]
        if char.isspace():
            i += 1
        elif char == '"':
            end = value.find('"', i + 1)
            while end > 0 and value[end - 1] == "\\":
                end = value.find('"', end + 1)
            if end < 0:
                problems.append(UNMATCHED_QUOTE.format(position=i + 1))
                break
            tokens.append((value[i : end + 1], i + 1))
            i = end + 1
        elif char in "()":
            if char == "(":
                opened.append(i + 1)
            elif opened:
                opened.pop()
            else:
                problems.append(UNMATCHED_CLOSE.format(position=i + 1))
            tokens.append((char, i + 1))
            i += 1
        else:
            start = i
            while i < n and not value[i].isspace() and value[i] not in '()"':
                i += 1
            tokens.append((value[start:i], start + 1))
    problems += [UNMATCHED_OPEN.format(position=p) for p in opened]
    return tokens, problems


def rule_syntax_problems(value: str) -> list[str]:
    """X's `details` for a rule it cannot parse; [] when the syntax is fine."""
    tokens, problems = _tokens(value)
    for index, (token, position) in enumerate(tokens):
        before = tokens[index - 1][0] if index else "("
        after = tokens[index + 1][0] if index + 1 < len(tokens) else ")"
        if token == "OR":
            if before in ("(", "OR"):
                problems.append(DANGLING_OR.format(side="left", position=position))
            elif after == ")":
                problems.append(DANGLING_OR.format(side="right", position=position))
        elif token == "or" and before not in ("(", "OR") and after not in (")", "OR"):
            problems.append(AMBIGUOUS_OR.format(position=position))
        elif (match := _OPERATOR.match(token)) and match[1].lower() not in STREAM_OPERATORS:
            problems.append(INVALID_OPERATOR.format(token=token.lstrip("-"), position=position))
    return problems or _standalone_problems(tokens)


def _standalone_problems(tokens: list[tuple[str, int]]) -> list[str]:
    """X's refusal of a rule without a positive standalone term (negations or is:/has:/... only)."""
    terms = [(token, position) for token, position in tokens if token not in ("(", ")", "OR")]
    positive = [(token, position) for token, position in terms if not token.startswith("-")]
    if terms and not positive:
        return [NO_NON_NEGATION.format(position=1), NO_POSITIVE_CLAUSE.format(position=1)]
    for token, _ in positive:
        match = _OPERATOR.match(token)
        if not match or match[1].lower() not in CONJUNCTION_REQUIRED:
            return []
    if not positive:
        return []
    token, position = positive[0]
    return [CONJUNCTION_ONLY.format(token=token, position=position)]
