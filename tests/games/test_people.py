from __future__ import annotations

import pytest

from games.people import display_name, is_present


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


@pytest.mark.parametrize(
    ("status", "is_member", "expected"),
    [
        ("creator", None, True),
        ("administrator", None, True),
        ("member", None, True),
        ("restricted", True, True),
        ("restricted", False, False),
        ("restricted", None, False),
        ("left", None, False),
        ("kicked", None, False),
    ],
)
def test_is_present(status: str, is_member: bool | None, expected: bool) -> None:
    assert is_present(status, is_member) is expected
