"""Surveys, profiles, standings and targeted deliveries on SQLite and PostgreSQL: the
upserts (one answer per member and survey, the latest profile value), the points' key,
the one-query standings, and the delivery rows made once per member and occurrence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from games.surveys import parse_survey
from storage import repo
from storage import segments as seg
from storage import surveys as store
from storage.db import Database
from storage.models import DeliveryState, Member, Order

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
CHAT = -100555


async def test_answers_profiles_and_points(db: Database) -> None:
    async with db.transaction() as s:
        for uid in (1, 2):
            await repo.upsert_member(s, repo.UserInfo(uid, f"U{uid}"), NOW)
        opened = await store.open_survey(
            s, chat_id=CHAT, source_key="k1", args=parse_survey("1h skin Q | Dry | Oily"),
            points=2, opened_by=None, now=NOW,
        )
        again = await store.open_survey(
            s, chat_id=CHAT, source_key="k1", args=parse_survey("1h skin Q | Dry | Oily"),
            points=2, opened_by=None, now=NOW,
        )
        assert again.kind == "replay" and again.survey.id == opened.survey.id
        await store.set_message(s, opened.survey.id, 77)
    kinds = []
    for uid, option in ((1, 0), (1, 1), (1, 1), (2, 0)):
        async with db.transaction() as s:
            a = await store.answer(s, survey_id=opened.survey.id, chat_id=CHAT, message_id=77,
                                   user_id=uid, option=option, now=NOW)
            kinds.append((a.kind, a.paid))
    assert kinds == [("answered", 2), ("changed", 0), ("same", 0), ("answered", 2)]
    async with db.transaction() as s:
        assert await store.profile(s, 1) == {"skin": "Oily"}
        assert await store.profile(s, 2) == {"skin": "Dry"}
        assert (await repo.get_member(s, 1)).balance == 2  # type: ignore[union-attr]
        result = await store.close_survey(s, opened.survey.id, NOW + timedelta(hours=1))
        assert result is not None and result.counts == (1, 1) and result.closed_now


async def test_standings_and_deliveries(db: Database) -> None:
    async with db.transaction() as s:
        for uid in (1, 2, 3):
            await repo.upsert_member(s, repo.UserInfo(uid, f"U{uid}"), NOW)
            await repo.touch_membership(s, CHAT, uid, now=NOW - timedelta(days=uid * 20))
            await repo.link_dm(s, uid)
        for n in range(3):
            s.add(Order(order_no=f"o{n}", user_id=1, amount_cents=20_000,
                        paid_at=NOW - timedelta(days=n + 1), source="import"))
        await s.flush()
        await repo.touch_membership(s, CHAT + 1, 3, now=NOW)  # seen lately, in another pond
    async with db.transaction() as s:
        await s.execute(update(Member).where(Member.user_id == 1)  # type: ignore[arg-type]
                        .values(lifetime_spent_cents=60_000))
        t = seg.thresholds(await repo.pond_settings(s, CHAT))
        rows = await seg.standings(s, t, NOW, chat_id=CHAT)
        shop = await seg.standings(s, t, NOW)
    got = {r.user_id: (str(r.standing.segment), r.standing.churn_risk,
                       r.standing.recency_days, r.standing.orders) for r in rows}
    assert got == {1: ("gold", False, 1, 3), 2: ("low", True, None, 0),
                   3: ("low", True, None, 0)}
    assert {r.user_id: r.standing.churn_risk for r in shop} == {1: False, 2: True, 3: False}
    assert list(seg.targets(rows, "churn")) == [2, 3]
    async with db.transaction() as s:
        assert await seg.create_deliveries(s, 9, NOW, CHAT, [2, 3], NOW) == 2
        await seg.create_deliveries(s, 9, NOW, CHAT, [2, 3], NOW)  # a re-run: nothing new
        claimed = await seg.claim_deliveries(s, 9, NOW, 10, NOW)
        assert [u for _i, u, _c in claimed] == [2, 3]
        assert await seg.delivery_counts(s, 9, NOW) == {"queued": 2}
        (first, _u, claim), (second, _u, _c) = claimed
        assert await seg.mark_sending(s, first, claim, NOW)  # its request goes out
        assert not await seg.mark_sending(s, second, "another run", NOW)
        await seg.finish_deliveries(s, [(first, DeliveryState.sent)], NOW, claim=claim)
        # The run dies with the second DM still queued: it goes back, and is sent.
        assert await seg.release_orphans(s, 9, NOW, NOW) == (1, 0)
        [(again, _u, claim)] = await seg.claim_deliveries(s, 9, NOW, 10, NOW)
        assert again == second and await seg.mark_sending(s, second, claim, NOW)
        # This run dies with it on the wire: its fate is unknown, never sent again.
        assert await seg.release_orphans(s, 9, NOW, NOW) == (0, 1)
        assert await seg.claim_deliveries(s, 9, NOW, 10, NOW) == []
        assert not await seg.mark_sending(s, second, claim, NOW)
        assert await seg.delivery_counts(s, 9, NOW) == {"sent": 1, "unknown": 1}
