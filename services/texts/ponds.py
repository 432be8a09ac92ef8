"""Texts of the trust boundary: which groups are ponds (`/ponds`), the one notice in a
group that is not a pond, and pond operators' daily /give cap."""

from __future__ import annotations

from aiogram import html
from aiogram.utils.i18n import gettext as _

from storage.models import PondStatus, PondTrust
from storage.repo import PondRecord


def not_a_pond(chat_id: int) -> str:
    return _(
        "ℹ️ This group is not a pond of this shop, so I do nothing here. "
        "If it should be one, the shop's owner can approve it by sending me, "
        "in a private chat: <code>/ponds approve {chat_id}</code>"
    ).format(chat_id=chat_id)


def usage() -> str:
    return _("Usage: /ponds · /ponds approve CHAT_ID · /ponds revoke CHAT_ID")


def bad_chat_id() -> str:
    return _("⚠️ A group's chat id is a negative number, like -1001234567890.") + "\n" + usage()


def in_private_only() -> str:
    return _("ℹ️ /ponds works in a private chat with me.")


def unknown_group(chat_id: int) -> str:
    return _(
        "⚠️ I don't know the group {chat_id}: add me to it first (it then shows its id)."
    ).format(chat_id=chat_id)


def _state(p: PondRecord) -> str:
    if p.status == PondStatus.inactive:
        return _("bot removed")
    if p.trust == PondTrust.operator:
        return _("pond: a global operator is admin")
    if p.trust == PondTrust.approved:
        return _("pond: approved by {user_id}").format(user_id=p.trusted_by or "?")
    if p.trust == PondTrust.revoked:
        return _("revoked by {user_id}").format(user_id=p.trusted_by or "?")
    if p.trust == PondTrust.stranger:
        return _("not a pond")
    return _("not checked yet")


def _line(p: PondRecord) -> str:
    mark = "✅" if p.served else ("💤" if p.status == PondStatus.inactive else "⛔")
    title = html.quote(p.title or "—")
    return f"{mark} <b>{title}</b> · <code>{p.chat_id}</code> · {_state(p)}"


def ponds_list(ponds: list[PondRecord], limit: int = 4000) -> list[str]:
    """The groups, served ones first, as messages of at most `limit` characters."""
    if not ponds:
        return [_("I am in no group yet.")]
    served = sum(1 for p in ponds if p.served)
    head = _("🐟 <b>Groups</b>: {served} pond(s) served of {total}").format(
        served=served, total=len(ponds)
    )
    ordered = sorted(ponds, key=lambda p: (not p.served, p.status != PondStatus.active))
    messages, current = [], head
    for p in ordered:
        line = _line(p)
        if len(current) + 1 + len(line) > limit:
            messages.append(current)
            current = line
        else:
            current += "\n" + line
    messages.append(current + "\n\n" + usage())
    return messages


def approved(p: PondRecord) -> str:
    return _("✅ {title} (<code>{chat_id}</code>) is now a pond of this shop.").format(
        title=html.quote(p.title or "—"), chat_id=p.chat_id
    )


def already_approved(p: PondRecord) -> str:
    return _("✅ {title} (<code>{chat_id}</code>) is already a pond of this shop.").format(
        title=html.quote(p.title or "—"), chat_id=p.chat_id
    )


def revoked(p: PondRecord) -> str:
    return _(
        "🚫 {title} (<code>{chat_id}</code>) is no longer served: nothing was deleted, "
        "/ponds approve brings it back."
    ).format(title=html.quote(p.title or "—"), chat_id=p.chat_id)


def already_revoked(p: PondRecord) -> str:
    return _("🚫 {title} (<code>{chat_id}</code>) is already revoked.").format(
        title=html.quote(p.title or "—"), chat_id=p.chat_id
    )


def give_cap_reached(left: int, cap: int) -> str:
    return _(
        "⛔ Over today's limit for operators of this pond: you can give {left} more points "
        "today (of {cap})."
    ).format(left=left, cap=cap)


def shop_wide_only() -> str:
    return _(
        "⛔ Items and prizes are shop-wide: only the shop's own operators (OPERATOR_IDS) "
        "add or change them. Pond operators can list them and handle redemptions."
    )
