"""Operators' reports (F12): `/stats [7d|30d]` and `/review <campaign>` — text plus one
chart — and `/export [what]` (handlers/stats_export.py).

The figures are read in one read-only transaction (storage/stats.py); the chart is drawn
afterwards in a worker thread (services/charts.py), so neither the database nor the event
loop waits for matplotlib. A stats text that fits a caption goes out as the photo's
caption (one message of the group's 20 a minute), else as a message before the photo.
A review compares the campaign with a target typed after its name, else with the pond's
last `/plan`, else the shop's (storage/plans.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.methods import SendPhoto
from aiogram.types import BufferedInputFile, Message, ReplyParameters

from games.campaign import TIMELINE, Campaign, parse_name
from games.checkin import local_day
from games.parsing import ParseError, fold, parse_points
from games.promo import MAX_PLAN, Plan, plan
from handlers import stats_export
from services import charts
from services.filters import IsOperator
from services.messaging import refuse_non_operator, reply
from services.middlewares import PondInfo
from services.outbox import Outbox
from services.texts import promo as promo_texts
from services.texts import stats as t
from storage import plans
from storage import promo as promo_store
from storage import stats as store
from storage.db import Database
from storage.models import utcnow

log = logging.getLogger(__name__)

SPANS = {"": 7, "7d": 7, "30d": 30, "7": 7, "30": 30}
CAPTION_LIMIT = 1024
GROUPS = ("group", "supergroup")


def setup() -> Router:
    router = Router(name="stats")
    router.message.register(stats, Command("stats"), IsOperator())
    router.message.register(stats_export.export, Command("export"), IsOperator())
    router.message.register(review, Command("review"), IsOperator())
    router.message.register(refuse_non_operator, Command("stats", "export", "review"))
    return router


def _pond_of(message: Message, pond: PondInfo | None) -> PondInfo | None:
    return pond if pond is not None and message.chat.type in GROUPS else None


async def stats(
    message: Message,
    command: CommandObject,
    db: Database,
    outbox: Outbox,
    pond: PondInfo | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    here = _pond_of(message, pond)
    if here is None:
        reply(outbox, message, t.in_pond_only())
        return
    days = SPANS.get(fold(command.args or "").lower())
    if days is None:
        reply(outbox, message, t.stats_usage())
        return
    now = clock()
    span = store.LocalSpan.ending(local_day(now, here.timezone), days, here.timezone)
    async with db.transaction(readonly=True) as session:
        figures = await store.pond_stats(session, here.chat_id, span)
    text = t.stats(figures, days)
    kinds = sorted(figures.points.issued.items(), key=lambda kv: -kv[1])
    spent = sorted(figures.points.spent.items(), key=lambda kv: -kv[1])
    chart = charts.Chart(t.stats_chart_title(days), (
        charts.Panel(t.chart_checkin_rate(), "line", [d.day.strftime("%m-%d") for d in
                     figures.days], [d.rate for d in figures.days], percent=True),
        charts.Panel(t.chart_issued(), "barh", [t.kind_label(k) for k, _v in kinds],
                     [v for _k, v in kinds], empty=t.chart_nothing()),
        charts.Panel(t.chart_spent(), "barh", [t.kind_label(k) for k, _v in spent],
                     [v for _k, v in spent], empty=t.chart_nothing()),
    ))
    await _send_report(outbox, message, text, chart, "stats.png")


async def _send_report(
    outbox: Outbox, message: Message, text: str, chart: charts.Chart, filename: str
) -> None:
    """The text and the chart: one photo with the text as caption when it fits."""
    try:
        png = await charts.render(chart)
    except Exception:
        log.exception("drawing the chart %s failed", filename)
        reply(outbox, message, text)
        return
    fits = promo_texts.utf16_len(text) <= CAPTION_LIMIT  # the markup counts too: safe side
    if not fits:
        reply(outbox, message, text)
    outbox.send(
        SendPhoto(
            chat_id=message.chat.id,
            message_thread_id=message.message_thread_id if message.is_topic_message else None,
            photo=BufferedInputFile(png, filename=filename),
            caption=text if fits else t.chart_sent(),
            reply_parameters=ReplyParameters(
                message_id=message.message_id, allow_sending_without_reply=True
            ),
        ),
        droppable=True,
    )


# -- /review ------------------------------------------------------------------------------


def _parse_review(args: str | None) -> tuple[str, Plan | None]:
    parts = fold(args or "").split()
    if len(parts) not in (1, 3):
        raise ParseError("usage")
    name = parse_name(parts[0])
    if len(parts) == 1:
        return name, None
    sales = parse_points(parts[1], maximum=MAX_PLAN)
    per_buyer = parse_points(parts[2], maximum=MAX_PLAN)
    return name, plan(sales, per_buyer)


def phase_intervals(
    campaign: Campaign, span: store.LocalSpan
) -> dict[str, list[tuple[datetime, datetime]]]:
    """Each phase's days as UTC intervals (consecutive days merged; a day shared by two
    phases belongs to the more urgent one, as everywhere else)."""
    out: dict[str, list[tuple[datetime, datetime]]] = {str(p): [] for p in TIMELINE}
    for day in span.days:
        phase = campaign.phase_on(day)
        if phase is None:
            continue
        start, end = span.start_of(day), span.start_of(day + timedelta(days=1))
        runs = out[str(phase)]
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    return out


def _target(given: Plan | None, stored: plans.StoredPlan | None, timezone: str
            ) -> t.Target | None:
    """The target a review compares with: the one typed after the campaign's name, else
    the pond's last /plan, else the shop's; None without any."""
    if given is not None:
        return t.Target(given, t.TargetSource.given)
    if stored is None:
        return None
    source = t.TargetSource.shop if stored.shop_wide else t.TargetSource.pond
    day = local_day(stored.set_at, timezone).strftime("%m-%d")
    return t.Target(plan(stored.sales, stored.per_buyer), source, day)


async def review(
    message: Message,
    command: CommandObject,
    db: Database,
    outbox: Outbox,
    pond: PondInfo | None = None,
) -> None:
    here = _pond_of(message, pond)
    if here is None:
        reply(outbox, message, t.in_pond_only())
        return
    try:
        name, given = _parse_review(command.args)
    except ParseError:
        reply(outbox, message, t.review_usage())
        return
    async with db.transaction(readonly=True) as session:
        row = await promo_store.find_campaign(session, [here.chat_id, promo_store.ALL_PONDS],
                                              name)
        if row is not None:
            campaign = promo_store.to_campaign(row)
            span = store.LocalSpan(campaign.span.first, campaign.span.last, here.timezone)
            figures = await store.review(session, here.chat_id, span,
                                         phase_intervals(campaign, span))
            stored = None if given is not None else await plans.last_plan(session, here.chat_id)
    if row is None:
        reply(outbox, message, t.review_missing(name))
        return
    target = _target(given, stored, here.timezone)
    phases = {str(p): label for p, label in promo_texts.phase_labels().items()}
    text = t.review(campaign.name, span.first.strftime("%m-%d"), span.last.strftime("%m-%d"),
                    figures, target, phases)
    sales = figures.sales
    games = t.game_labels()
    goal = target.plan if target else None
    chart = charts.Chart(t.review_chart_title(campaign.name), (
        charts.Panel(t.chart_orders_by_phase(sales.cents), "bar",
                     [t.all_orders(), *(phases[p] for p in figures.by_phase)],
                     [sales.orders, *(p.orders for p in figures.by_phase.values())],
                     target=float(goal.sales) if goal else None,
                     target_label=t.target_label(target, "sales") if target else ""),
        charts.Panel(t.chart_buyers(), "bar",
                     [t.all_buyers(), t.new_buyers(), t.returning_buyers()],
                     [sales.buyers, sales.new_buyers, sales.returning_buyers],
                     target=float(goal.buyers) if goal else None,
                     target_label=t.target_label(target, "buyers") if target else ""),
        charts.Panel(t.chart_games(), "barh", [games[g] for g in store.GAMES],
                     [figures.games[g] for g in store.GAMES]),
        charts.Panel(t.chart_points(), "bar", [t.issued(), t.redeemed()],
                     [figures.points.total_issued, figures.points.spent.get("redeem", 0)]),
    ), note=f"{span.first:%Y-%m-%d}..{span.last:%Y-%m-%d}")
    await _send_report(outbox, message, text, chart, "review.png")
