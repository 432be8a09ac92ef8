"""Votes (投票) and invite links (以老带新): parsing and small rules. Pure functions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from games.parsing import ParseError, fold, parse_duration

MIN_OPTIONS = 2
MAX_OPTIONS = 10
MAX_QUESTION = 255
MAX_OPTION = 100
MAX_VOTE = timedelta(days=30)
MIN_VOTE = timedelta(seconds=10)
INVITE_NAME_UTF16 = 32  # Telegram's limit on an invite link's name


@dataclass(frozen=True, slots=True)
class VoteArgs:
    """`/vote <duration> <question> | <option 1> | <option 2> …`."""

    duration: timedelta
    question: str
    options: tuple[str, ...]


def parse_vote(args: str | None) -> VoteArgs:
    """`ParseError` codes: usage, bad_duration, too_large, too_short, too_few_options,
    too_many_options, question_too_long, option_too_long, empty_option,
    duplicate_option."""
    text = (args or "").strip()
    head, sep, tail = text.partition(" ")
    if not sep or "|" not in tail:
        raise ParseError("usage")
    duration = parse_duration(head, maximum=MAX_VOTE)
    if duration < MIN_VOTE:
        raise ParseError("too_short")
    pieces = [" ".join(p.split()) for p in tail.split("|")]
    question, options = pieces[0], pieces[1:]
    if not question:
        raise ParseError("usage")
    if len(question) > MAX_QUESTION:
        raise ParseError("question_too_long")
    if any(not o for o in options):
        raise ParseError("empty_option")
    if len(options) < MIN_OPTIONS:
        raise ParseError("too_few_options")
    if len(options) > MAX_OPTIONS:
        raise ParseError("too_many_options")
    if any(len(o) > MAX_OPTION for o in options):
        raise ParseError("option_too_long")
    if len({fold(o).lower() for o in options}) != len(options):
        raise ParseError("duplicate_option")
    return VoteArgs(duration, question, tuple(options))


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def invite_link_name(display_name: str, prefix: str = "邀请·") -> str:
    """The invite link's name: the member's name, cut to Telegram's 32 (UTF-16) units."""
    name = prefix + " ".join(display_name.split())
    while _utf16(name) > INVITE_NAME_UTF16:
        name = name[:-1]
    return name
