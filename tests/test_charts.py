"""Charts: drawn off-screen with the CJK font the project installs as a package, every
Chinese label covered by its glyphs; matplotlib stays out of start-up and the CLI."""

from __future__ import annotations

import asyncio
import gettext
import io
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

from PIL import Image

from games.promo import plan
from services import charts
from services.i18n import LANGUAGES
from services.texts import stats as texts

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Every text a chart draws, as the stats texts define them (their Chinese translations
# are checked below).
CHART_TEXT_FUNCTIONS = (
    texts.chart_checkin_rate, texts.chart_issued, texts.chart_spent, texts.chart_games,
    texts.all_orders, texts.chart_buyers, texts.all_buyers, texts.new_buyers,
    texts.returning_buyers, texts.chart_points, texts.issued, texts.redeemed,
    texts.chart_nothing,
)


def zh_catalog() -> gettext.GNUTranslations:
    locales = ROOT / "services" / "locales"
    return gettext.translation("pondbot", localedir=locales, languages=["zh"])


def chinese_chart_texts() -> list[str]:
    zh = zh_catalog()
    from aiogram.utils.i18n import I18n

    i18n = I18n(path=ROOT / "services" / "locales", default_locale="zh", domain="pondbot")
    with i18n.context(), i18n.use_locale("zh"):
        drawn = [f() for f in CHART_TEXT_FUNCTIONS]
        drawn += list(texts.kind_labels().values()) + list(texts.game_labels().values())
        drawn += [texts.stats_chart_title(30), texts.review_chart_title("双十一"),
                  texts.chart_orders_by_phase(15050)]
        drawn += [texts.target_label(texts.Target(plan(200, 5), source, "12-06"), what)
                  for source in texts.TargetSource for what in ("sales", "buyers")]
        from services.texts.promo import phase_labels

        drawn += list(phase_labels().values())
    assert zh.gettext("Check-in rate per day") != "Check-in rate per day"
    return drawn


def test_the_font_comes_from_a_package_and_has_every_chinese_label() -> None:
    path = charts.font_path()
    assert path.is_file()
    assert "site-packages" in str(path) or "dist-packages" in str(path)
    assert path.suffix in (".otf", ".ttf")
    drawn = chinese_chart_texts()
    assert any("签到" in text for text in drawn)
    missing = [text for text in drawn if not charts.has_glyphs(text)]
    assert not missing, f"the font lacks glyphs for {missing}"
    # The check has teeth: DejaVu Sans (matplotlib's default) has no Chinese at all.
    import matplotlib

    dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    assert not charts.has_glyphs("签到率", dejavu)
    assert "zh" in LANGUAGES


def sample_chart() -> charts.Chart:
    return charts.Chart("鱼塘数据 · 近 7 天", (
        charts.Panel("每日签到率", "line", [f"12-0{d}" for d in range(1, 8)],
                     [0.1, 0.3, 0.25, 0.4, 0.0, 0.5, 0.45], percent=True),
        charts.Panel("积分发放（按类型）", "barh", ["购物", "签到", "红包"], [700, 200, 100]),
        charts.Panel("买家", "bar", ["全部", "新客", "老客"], [40, 25, 15], target=50.0,
                     target_label="目标"),
        charts.Panel("游戏参与", "barh", ["投票次数", "抽奖次数"], [0, 0]),
        charts.Panel("积分消耗（按类型）", "barh", [], [], empty="暂无"),
    ), note="2026-12-01..2026-12-07")


def test_a_chart_is_a_valid_png_and_no_glyph_is_missing() -> None:
    with warnings.catch_warnings():
        # matplotlib only warns ("Glyph … missing from font(s)") when it draws boxes.
        warnings.simplefilter("error")
        png = charts.render_png(sample_chart())
    assert png.startswith(PNG_MAGIC)
    image = Image.open(io.BytesIO(png))
    image.verify()
    assert image.format == "PNG" and image.size[0] >= 600


async def test_rendering_leaves_the_event_loop_free() -> None:
    charts.render_png(sample_chart())  # matplotlib imported and the font registered
    ticks = 0
    stop = asyncio.Event()

    async def heartbeat() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    beat = asyncio.create_task(heartbeat())
    started = time.perf_counter()
    png = await charts.render(sample_chart())
    elapsed = time.perf_counter() - started
    stop.set()
    await beat
    assert png.startswith(PNG_MAGIC)
    # The loop kept turning while the chart was drawn in a worker thread.
    assert ticks >= 3, (ticks, elapsed)


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})}, check=False,
    )


def test_start_up_and_the_handlers_do_not_import_matplotlib(tmp_path: Path) -> None:
    code = f"""
import asyncio, sys
import handlers
from aiogram import Bot
from bot.app import build_dispatcher
from services.outbox import Outbox
from storage.db import Database

async def main():
    db = Database("sqlite+aiosqlite:///{tmp_path / 'pond.db'}")
    bot = Bot("42:TEST-token-for-pondbot-tests_0000000")
    build_dispatcher(db=db, outbox=Outbox(bot))
    await bot.session.close()
    await db.dispose()

asyncio.run(main())
assert "handlers.stats" in sys.modules and "services.charts" in sys.modules
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("matplotlib", "numpy", "PIL"))
print(heavy)
assert not heavy, heavy
"""
    done = _python(code)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_cli_export_does_not_import_matplotlib(tmp_path: Path) -> None:
    db = tmp_path / "pond.db"
    out = tmp_path / "members.csv"
    code = f"""
import sys
from bot.cli import main
assert main(["migrate"]) == 0
assert main(["export", "members", "--out", "{out}"]) == 0
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("matplotlib", "numpy"))
assert not heavy, heavy
"""
    done = _python(code, {"DATABASE_URL": f"sqlite+aiosqlite:///{db}"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert out.read_bytes().startswith("\ufeffuser_id,".encode())
