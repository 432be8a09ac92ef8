"""`/segments` (operators, F10): the pond's members per RFM segment and at churn risk,
with a chart like /stats'. The figures are read in one read-only transaction
(storage/segments.py), classified by games/segments.py, and the chart drawn afterwards
in a worker thread (services/charts.py)."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from games.segments import CHURN, Segment, in_target
from handlers.stats import _pond_of, _send_report
from scheduler.core import Scheduler
from services import charts
from services.filters import IsOperator
from services.messaging import refuse_non_operator, reply
from services.middlewares import PondInfo
from services.outbox import Outbox
from services.texts import stats as stats_texts
from services.texts import surveys as t
from storage import segments as store
from storage.db import Database
from storage.settings import shop_settings


def setup() -> Router:
    router = Router(name="segments")
    router.message.register(segments, Command("segments"), IsOperator())
    router.message.register(refuse_non_operator, Command("segments"))
    return router


async def segments(
    message: Message,
    db: Database,
    outbox: Outbox,
    scheduler: Scheduler,
    pond: PondInfo | None = None,
) -> None:
    here = _pond_of(message, pond)
    if here is None:
        reply(outbox, message, stats_texts.in_pond_only())
        return
    async with db.transaction(readonly=True) as session:
        settings = await shop_settings(session)  # segments are shop-wide settings
        rows = await store.standings(
            session, store.thresholds(settings), scheduler.clock(), chat_id=here.chat_id
        )
    counts, churn = store.counts(rows)
    linked = {
        target: sum(1 for r in rows if r.dm_linked and in_target(r.standing, target))
        for target in (*Segment, CHURN)
    }
    figures = {
        "churn": settings.churn_days, "recent": settings.segment_recent_days,
        "orders": settings.segment_min_orders, "spend": settings.segment_min_spend,
    }
    text = t.segments_report(counts, churn, linked, figures)
    chart = charts.Chart(t.segments_chart_title(), (
        charts.Panel(t.segments_chart_members(), "bar", t.chart_labels(),
                     [counts[s] for s in Segment]),
        charts.Panel(t.segments_chart_churn(), "bar",
                     [t.segment_name(CHURN), t.active_label()],
                     [churn, len(rows) - churn]),
    ))
    await _send_report(outbox, message, text, chart, "segments.png")
