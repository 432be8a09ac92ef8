"""Texts of purchases and tiers: `/order`'s answers, the tier shown on `/points` and the
DM that tells a member about their new tier."""

from __future__ import annotations

from aiogram import html
from aiogram.utils.i18n import gettext as _

from games.orders import yuan
from games.tiers import MEMBER, Tier
from services.texts import refusal


def usage() -> str:
    return _(
        "Usage: /order @username 299.50 [order_no] — or reply to a member: "
        "/order 299.50 [order_no]"
    )


def parse_error(code: str) -> str:
    messages = {
        "not_a_number": _("⚠️ The amount is in yuan with up to 2 decimals, like 299.50."),
        "not_positive": _("⚠️ The amount must be more than 0."),
        "too_precise": _("⚠️ An amount has at most 2 decimals (fen), like 299.50."),
        "too_large": _("⚠️ That amount is too large for one order."),
        "bad_target": _(
            "⚠️ Name the member as @username or a numeric user id, or reply to their message."
        ),
        "bad_order_no": _(
            "⚠️ An order number is up to 64 characters without spaces or commas."
        ),
    }
    return refusal(messages, code, usage())


def tier_label(tier: Tier | None) -> str:
    """`VIP1 (9.8折)`, or the word for a plain member."""
    if tier is None or tier.name == MEMBER:
        return _("member")
    return _("{tier} ({discount}折)").format(
        tier=html.quote(tier.name), discount=tier.discount, percent=tier.percent
    )


def recorded(
    name: str, order_no: str | None, cents: int, points: int, balance: int, tier: str,
    *, promoted: bool,
) -> str:
    head = (
        _("✅ Order {order_no} recorded for {name}: ¥{amount}").format(
            order_no=html.quote(order_no), name=html.quote(name), amount=yuan(cents)
        )
        if order_no is not None
        else _("✅ Order recorded for {name}: ¥{amount}").format(
            name=html.quote(name), amount=yuan(cents)
        )
    )
    lines = [
        head,
        _("+{points} points · balance {balance}").format(points=points, balance=balance),
        (_("⬆️ New tier: {tier}") if promoted else _("Tier: {tier}")).format(tier=tier),
    ]
    return "\n".join(lines)


def already_recorded(order_no: str, name: str, cents: int) -> str:
    return _(
        "ℹ️ Order {order_no} is already recorded (¥{amount} for {name}): nothing changed."
    ).format(order_no=html.quote(order_no), amount=yuan(cents), name=html.quote(name))


def tier_notice(tier: str, spent_cents: int) -> str:
    """The DM to a member who moved up a tier; `tier` as `tier_label` writes it."""
    return _(
        "🎉 Thank you for shopping with us! Your purchases now add up to ¥{spent}: "
        "you are <b>{tier}</b>."
    ).format(spent=yuan(spent_cents), tier=tier)


def points_tier(tier: str, spent_cents: int) -> str:
    """The tier line of `/points`."""
    if spent_cents <= 0:
        return tier
    return _("{tier} · spent ¥{spent}").format(tier=tier, spent=yuan(spent_cents))
