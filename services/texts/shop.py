"""What the shop (积分兑换) says. Item names and reasons pass `html.quote` once, here.

A code appears only in `code_dm` (its owner's DM) and in `mine(…, in_dm=True)` and
`redemptions(…, show_codes=True)` (an operator's own DM); everything else masks it.
"""

from __future__ import annotations

from aiogram import html
from aiogram.utils.i18n import gettext as _

from storage.shop import RedemptionView


def yuan(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def code_dm(r: RedemptionView) -> str:
    return _(
        "🎁 Your code for <b>{item}</b> (#{rid}):\n<code>{code}</code>\n"
        "Show it at the checkout. Keep it to yourself: it works once."
    ).format(item=html.quote(r.item_name), rid=r.id, code=html.quote(r.code or ""))
