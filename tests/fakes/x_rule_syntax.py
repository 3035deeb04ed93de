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
No public answer quotes X on unbalanced parentheses or quotes or a dangling OR: those sentences
are ours, in the same form (what is wrong, then the position).
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
    return problems
