"""Subject rules shared by both buses: wildcard matching and the validators.

Property tests compare `matches` with a token-by-token reference of nats-server's rules, on
small alphabets so that equal and nearly equal subjects are common.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.bus.subjects import (
    matches,
    validate_publish_subject,
    validate_queue,
    validate_subscribe_subject,
)

LITERALS = ["a", "b", "ab", "mesh", "_INBOX", "x-1"]
"""Tokens of published subjects; few, so that patterns and subjects often line up."""

WHITESPACE = [" ", "\t", "\r", "\n", "\f", "\v", "\u00a0", "\u2003"]

literal_tokens = st.lists(st.sampled_from(LITERALS), min_size=1, max_size=6)
# The server treats a published '*' or '>' as a plain token: subjects may contain them.
published_tokens = st.lists(st.sampled_from([*LITERALS, "*", ">"]), min_size=1, max_size=6)


@st.composite
def pattern_tokens(draw: st.DrawFn) -> list[str]:
    """Tokens of a well-formed subscription: literals and '*', optionally ending in '>'."""
    tokens = draw(st.lists(st.sampled_from([*LITERALS[:3], "*"]), min_size=0, max_size=5))
    if not tokens or draw(st.booleans()):
        tokens.append(">")
    return tokens


def reference_match(pattern: list[str], subject: list[str]) -> bool:
    """nats-server's rule, token by token: '*' is one token, '>' one or more trailing ones."""
    if not pattern:
        return not subject
    head, rest = pattern[0], pattern[1:]
    if head == ">":
        return len(subject) >= 1
    if not subject:
        return False
    return head in ("*", subject[0]) and reference_match(rest, subject[1:])


# -- matches: examples -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("foo.bar", "foo.bar", True),
        ("foo.bar", "foo.baz", False),
        ("foo.bar", "foo", False),
        ("foo.bar", "foo.bar.baz", False),
        ("foo.bar", "Foo.bar", False),
        ("foo.*", "foo.bar", True),
        ("foo.*", "foo", False),
        ("foo.*", "foo.bar.baz", False),
        ("*.bar", "foo.bar", True),
        ("*.bar", "bar", False),
        ("foo.*.baz", "foo.bar.baz", True),
        ("foo.*.baz", "foo.baz", False),
        ("*", "foo", True),
        ("*", "foo.bar", False),
        ("foo.>", "foo.bar", True),
        ("foo.>", "foo.bar.baz.qux", True),
        ("foo.>", "foo", False),
        ("foo.>", "foobar.baz", False),
        (">", "foo", True),
        (">", "foo.bar.baz", True),
        ("*.>", "foo", False),
        ("*.>", "foo.bar", True),
        ("*.b.>", "a.b.c.d", True),
        ("*.b.>", "a.b", False),
        ("*.b.>", "a.c.d", False),
        ("foo.*", "foo.*", True),
        ("foo.*", "foo.>", True),
        ("foo.>", "foo.*", True),
        ("foo.bar", "foo.*", False),
        ("*.bar", "foo.*", False),
    ],
)
def test_matches_follows_server_rules(pattern: str, subject: str, expected: bool) -> None:
    assert matches(pattern, subject) is expected


@pytest.mark.parametrize(
    ("pattern", "subject"),
    [("foo.*.bar", "foo..bar"), ("foo.>", "foo."), (">", ".foo"), ("*.*", "foo.")],
)
def test_subject_with_empty_token_matches_no_pattern(pattern: str, subject: str) -> None:
    assert not matches(pattern, subject)


# -- matches: properties -----------------------------------------------------------------------


@given(pattern=pattern_tokens(), subject=published_tokens)
def test_matches_agrees_with_the_token_reference(pattern: list[str], subject: list[str]) -> None:
    assert matches(".".join(pattern), ".".join(subject)) is reference_match(pattern, subject)


@given(pattern=literal_tokens, subject=published_tokens)
def test_literal_pattern_matches_only_the_same_subject(
    pattern: list[str], subject: list[str]
) -> None:
    assert matches(".".join(pattern), ".".join(subject)) is (pattern == subject)


@given(subject=published_tokens)
def test_full_wildcard_alone_matches_every_subject(subject: list[str]) -> None:
    assert matches(">", ".".join(subject))


@given(subject=published_tokens, data=st.data())
def test_stars_in_place_of_tokens_still_match(subject: list[str], data: st.DataObject) -> None:
    starred = [data.draw(st.sampled_from([token, "*"])) for token in subject]
    assert matches(".".join(starred), ".".join(subject))


@given(pattern=st.lists(st.just("*"), min_size=1, max_size=5), subject=published_tokens)
def test_stars_match_exactly_as_many_tokens(pattern: list[str], subject: list[str]) -> None:
    assert matches(".".join(pattern), ".".join(subject)) is (len(pattern) == len(subject))


@given(prefix=literal_tokens, rest=st.lists(st.sampled_from(LITERALS), max_size=4))
def test_full_wildcard_needs_at_least_one_trailing_token(
    prefix: list[str], rest: list[str]
) -> None:
    assert matches(".".join([*prefix, ">"]), ".".join(prefix + rest)) is bool(rest)


# -- validators --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject", ["foo", "foo.bar", "*", ">", "foo.*", "foo.>", "*.bar.>", "_INBOX.x.y", "añ.ü"]
)
def test_well_formed_subscription_subject_is_accepted(subject: str) -> None:
    validate_subscribe_subject(subject)


@pytest.mark.parametrize(
    "subject",
    [
        "",
        ".",
        "foo..bar",
        ".foo",
        "foo.",
        "foo.>.bar",
        ">.foo",
        ">>",
        "foo*",
        "*foo",
        "foo.*bar",
        "foo.b>",
        "foo bar",
        "foo\tbar",
        "foo\r\nbar",
        " foo",
    ],
)
def test_malformed_subscription_subject_is_rejected(subject: str) -> None:
    with pytest.raises(ValueError, match="invalid subject"):
        validate_subscribe_subject(subject)


@pytest.mark.parametrize("subject", ["foo", "foo.bar", "foo.*", "foo.>", ">", "_INBOX.a.b"])
def test_publish_subject_is_accepted(subject: str) -> None:
    # Wildcard characters are accepted: nats-server treats them as plain tokens.
    validate_publish_subject(subject)


@pytest.mark.parametrize("subject", ["", " ", "foo bar", "foo\tbar", "foo\r\nPING", "foo\n"])
def test_malformed_publish_subject_is_rejected(subject: str) -> None:
    with pytest.raises(ValueError, match="invalid subject"):
        validate_publish_subject(subject)


@pytest.mark.parametrize("subject", ["foo\x00bar", "foo\x01", "foo\x7f"])
def test_publish_subject_with_control_character_is_left_to_the_server(subject: str) -> None:
    validate_publish_subject(subject)  # as nats-py: only emptiness and whitespace are checked


@pytest.mark.parametrize("queue", ["workers", "pool.a", "q*", "q-1"])
def test_queue_name_is_accepted(queue: str) -> None:
    validate_queue(queue)


@pytest.mark.parametrize("queue", ["", "my group", "group\t", "\n"])
def test_malformed_queue_name_is_rejected(queue: str) -> None:
    with pytest.raises(ValueError, match="invalid queue group"):
        validate_queue(queue)


@given(tokens=pattern_tokens())
def test_every_well_formed_pattern_is_accepted(tokens: list[str]) -> None:
    validate_subscribe_subject(".".join(tokens))


@given(tokens=pattern_tokens(), space=st.sampled_from(WHITESPACE), data=st.data())
def test_whitespace_anywhere_is_rejected(
    tokens: list[str], space: str, data: st.DataObject
) -> None:
    subject = ".".join(tokens)
    at = data.draw(st.integers(min_value=0, max_value=len(subject)))
    spaced = subject[:at] + space + subject[at:]
    for validate in (validate_subscribe_subject, validate_publish_subject, validate_queue):
        with pytest.raises(ValueError, match="invalid"):
            validate(spaced)


@given(head=literal_tokens, tail=literal_tokens)
def test_full_wildcard_before_the_last_token_is_rejected(head: list[str], tail: list[str]) -> None:
    with pytest.raises(ValueError, match="'>' must be the last token"):
        validate_subscribe_subject(".".join([*head, ">", *tail]))


@given(
    tokens=literal_tokens,
    wildcard=st.sampled_from(["*", ">"]),
    glued=st.sampled_from(LITERALS),
    before=st.booleans(),
    data=st.data(),
)
def test_wildcard_inside_a_token_is_rejected(
    tokens: list[str], wildcard: str, glued: str, before: bool, data: st.DataObject
) -> None:
    at = data.draw(st.integers(min_value=0, max_value=len(tokens) - 1))
    tokens[at] = wildcard + glued if before else glued + wildcard
    with pytest.raises(ValueError, match="a wildcard must be a whole token"):
        validate_subscribe_subject(".".join(tokens))


@given(tokens=pattern_tokens(), at=st.integers(min_value=0, max_value=6))
def test_empty_token_in_a_pattern_is_rejected(tokens: list[str], at: int) -> None:
    at = min(at, len(tokens))
    with pytest.raises(ValueError, match="invalid subject"):
        validate_subscribe_subject(".".join([*tokens[:at], "", *tokens[at:]]))
