"""Thin aiogram routers, one module per feature."""

from __future__ import annotations

from aiogram import Router

from handlers import common, errors, membership, operator, points


def setup_routers() -> list[Router]:
    """Routers in the order they are tried."""
    return [errors.setup(), membership.setup(), operator.setup(), common.setup(), points.setup()]
