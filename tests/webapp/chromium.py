"""Headless Chromium for the browser tests: Debian's `chromium` driven by Playwright
(never a browser download of Playwright's own), with the CJK font pondbot ships so
Chinese shows in screenshots; step timings; where screenshots go.

Chromium missing: skipped on a developer's machine, a failure in CI (`CI` set), where
`scripts/test` installs it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
STEP_LIMIT = 30.0  # seconds: generous, only against a hang; the timings are printed


def _chromium() -> str:
    found = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"Chromium is missing ({CHROMIUM}): scripts/test installs Debian's chromium")
    pytest.skip("Chromium is not installed (apt-get install chromium)")


def _fonts(tmp: Path) -> dict[str, str]:
    """A fontconfig setup that adds the CJK font pondbot already ships (for its charts),
    so Chinese shows in screenshots without system CJK fonts."""
    import pylopdf_fonts_zh_cn

    conf = tmp / "fonts.conf"
    conf.write_text(
        '<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd"><fontconfig>'
        '<include ignore_missing="yes">/etc/fonts/fonts.conf</include>'
        f"<dir>{Path(pylopdf_fonts_zh_cn.__file__).parent}</dir>"
        f"<cachedir>{tmp / 'fontcache'}</cachedir></fontconfig>"
    )
    return {**os.environ, "FONTCONFIG_FILE": str(conf)}


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    executable = _chromium()
    try:
        from playwright.async_api import async_playwright
    except ImportError:  # pragma: no cover - the dev extras install it
        if os.environ.get("CI"):
            pytest.fail("playwright is missing: pip install -e .[dev]")
        pytest.skip("playwright is not installed")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=executable, headless=True, env=_fonts(tmp_path),
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            yield b
        finally:
            await b.close()


def shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


class Steps:
    def __init__(self, name: str) -> None:
        self.name = name
        self.times: list[tuple[str, float]] = []
        self._t = time.monotonic()

    def done(self, step: str) -> None:
        now = time.monotonic()
        self.times.append((step, now - self._t))
        assert now - self._t < STEP_LIMIT, (step, now - self._t)
        self._t = now

    def report(self) -> None:
        print(f"\n{self.name}: " + ", ".join(f"{s} {t:.2f}s" for s, t in self.times))
