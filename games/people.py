"""Who a member is in the pond's messages, and whether they are in the pond. Pure.

`display_name` is the one rule for a person's shown name, whatever the message (a
check-in reply, a board, a result, a member export):

* the first and last name joined by a space, trimmed (Telegram requires a first name,
  but it may be blank spaces, and the last name is optional);
* if that leaves nothing, `@username`;
* if there is no username either, `fallback` — callers pass the user id as text, or the
  chat's title, whichever names the person best where the name is shown.

Names are returned as given: escaping for HTML is the text layer's work.

`is_present` reads a Telegram chat-member status: a member is in the chat as its
creator, an administrator or a member, or restricted while still a member (a restricted
status also describes someone who has left, with `is_member` false).
"""

from __future__ import annotations

from dataclasses import dataclass


def display_name(
    first_name: str | None,
    last_name: str | None,
    username: str | None,
    fallback: str = "",
) -> str:
    """`"First Last"` trimmed; else `"@username"`; else `fallback`."""
    full = f"{first_name or ''} {last_name or ''}".strip()
    if full:
        return full
    if username:
        return f"@{username}"
    return fallback


PRESENT = frozenset({"creator", "administrator", "member", "restricted"})


def is_present(status: str, is_member: bool | None) -> bool:
    """Whether a chat-member `status` (with the restricted status's `is_member`) means the
    person is in the chat."""
    return status in PRESENT and (status != "restricted" or bool(is_member))


@dataclass(frozen=True, slots=True)
class UserInfo:
    """What Telegram tells about a user, independent of any bot library."""

    id: int
    first_name: str = ""
    last_name: str = ""
    username: str | None = None
    language_code: str | None = None
    is_bot: bool = False

    @property
    def display_name(self) -> str:
        """How the pond's messages name this person (`display_name` above)."""
        return display_name(self.first_name, self.last_name, self.username, str(self.id))
