from __future__ import annotations

import pytest

from games.people import display_name


@pytest.mark.parametrize(
    ("first", "last", "username", "fallback", "expected"),
    [
        ("Ann", "Lee", "ann", "7", "Ann Lee"),
        ("Ann", "", "ann", "7", "Ann"),
        ("Ann", None, None, "", "Ann"),
        ("", "Lee", None, "7", "Lee"),
        ("  Ann ", " Lee  ", None, "", "Ann   Lee"),
        ("", "", "ann", "7", "@ann"),
        ("   ", None, "ann", "7", "@ann"),
        (None, None, "ann", "", "@ann"),
        ("", "", None, "7", "7"),
        ("", "", "", "7", "7"),
        (None, None, None, "", ""),
        ("", None, None, "The Pond", "The Pond"),
    ],
)
def test_display_name(
    first: str | None, last: str | None, username: str | None, fallback: str, expected: str
) -> None:
    assert display_name(first, last, username, fallback) == expected


def test_fallback_defaults_to_empty() -> None:
    assert display_name("", "", None) == ""
