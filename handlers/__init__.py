"""Thin aiogram routers, one module per feature."""

from __future__ import annotations

from aiogram import Router

from handlers import (
    birthday,
    campaign,
    checkin,
    common,
    drops,
    errors,
    guess,
    invites,
    lottery,
    membership,
    operator,
    orders,
    points,
    ponds,
    promo,
    red_packet,
    segments,
    settings,
    shop,
    shop_admin,
    stats,
    survey,
    tasks,
    votes,
    webapp,
)
from services.shortcuts import Shortcuts


def setup_routers(shortcuts: Shortcuts | None = None) -> list[Router]:
    """Routers in the order they are tried; features that can answer a button press
    from memory register with `shortcuts`."""
    red_packet_buttons, red_packet_messages = red_packet.setup(shortcuts)
    return [
        # First: at opening time nearly every update is a check-in, and each router
        # tried before the one that matches costs a full propagation step.
        checkin.setup(),  # before points: it answers `/top streak`
        red_packet_buttons,  # a grab stampede; its callback data is its own
        lottery.setup(),  # a draw stampede on the 🎰 board
        shop.setup(),  # a /redeem storm on the last coupons
        errors.setup(),
        invites.setup(),  # before membership: a join through a link is a referral
        membership.setup(),
        operator.setup(),
        orders.setup(),  # /order: operators record purchases
        ponds.setup(),  # which groups are ponds: global operators, in a private chat
        common.setup(),
        points.setup(),
        drops.setup(),  # /redpacket at|every: before /redpacket's own handler
        red_packet_messages,
        guess.setup(),
        votes.setup(),
        survey.setup(),  # /survey and its buttons: answers go to profiles
        promo.setup(),
        campaign.setup(),  # /campaign, /plan: operators
        shop_admin.setup(),  # /item, /redemptions, /refund, /fulfil
        stats.setup(),  # /stats, /export, /review
        segments.setup(),  # /segments: operators
        settings.setup(),  # /settings: operators
        tasks.setup(),  # /tasks: the day's task list and its bonus
        birthday.setup(),  # /birthday in the DM; the birthday and expiry tasks at start
        webapp.setup(),  # /me: the members' page (Mini App)
    ]
