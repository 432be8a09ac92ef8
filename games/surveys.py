"""Surveys (问卷, F10): `/survey <duration> <key> <question> | <option 1> | …`. A survey
is a vote whose answers also go to the members' profiles under `key`; its question and
options follow the vote's rules (games/votes.py). Pure functions."""

from __future__ import annotations

import re
from dataclasses import dataclass

from games.parsing import ParseError, fold
from games.votes import VoteArgs, parse_vote

MAX_KEY = 32
# A profile key is one word a spreadsheet column can carry: letters (any script),
# digits, `_` and `-`.
_KEY = re.compile(rf"^[\w-]{{1,{MAX_KEY}}}$")


@dataclass(frozen=True, slots=True)
class SurveyArgs:
    key: str
    vote: VoteArgs


def parse_survey(args: str | None) -> SurveyArgs:
    """`ParseError` codes: those of `parse_vote`, and bad_key."""
    words = (args or "").strip().split(maxsplit=2)
    if len(words) < 3 or "|" not in words[2]:
        raise ParseError("usage")
    duration, key, rest = words[0], fold(words[1]), words[2]
    if "|" in key:
        raise ParseError("usage")
    if not _KEY.match(key):
        raise ParseError("bad_key")
    return SurveyArgs(key.lower(), parse_vote(f"{duration} {rest}"))
