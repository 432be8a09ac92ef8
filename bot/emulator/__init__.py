"""A local Telegram Bot API emulator: real state, spec validation, flood limits,
fault injection, and users a test or the demo can act as.

No aiogram import here, so ``python -m bot.emulator`` starts fast.
"""

from bot.emulator.client import EmulatorClient
from bot.emulator.limits import FakeClock, FloodRules
from bot.emulator.server import (
    ANONYMOUS_ADMIN_ID,
    DEFAULT_TOKEN,
    ApiError,
    Emulator,
    EmulatorViolation,
)
from bot.emulator.transcript import render_transcript

__all__ = [
    "ANONYMOUS_ADMIN_ID",
    "DEFAULT_TOKEN",
    "ApiError",
    "Emulator",
    "EmulatorClient",
    "EmulatorViolation",
    "FakeClock",
    "FloodRules",
    "render_transcript",
]
