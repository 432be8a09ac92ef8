"""Thin aiogram routers, one module per feature."""

from __future__ import annotations

from aiogram import Router

from handlers import (
    checkin,
    common,
    errors,
    guess,
    invites,
    membership,
    operator,
    points,
    promo,
    red_packet,
    votes,
)


def setup_routers() -> list[Router]:
    """Routers in the order they are tried."""
    return [
        errors.setup(),
        invites.setup(),  # before membership: a join through a link is a referral
        membership.setup(),
        operator.setup(),
        common.setup(),
        checkin.setup(),  # before points: it answers `/top streak`
        points.setup(),
        red_packet.setup(),
        guess.setup(),
        votes.setup(),
        promo.setup(),
    ]
