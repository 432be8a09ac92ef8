"""A datetime written by `storage.bulk.Bulk` is stored exactly as any other write of the
column stores it, so comparing and ordering such columns in SQL works across both."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import text

from storage import checkin, repo
from storage.db import Database
from storage.models import Referral

AT = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


async def test_bulk_and_orm_datetimes_compare_in_sql(db: Database) -> None:
    async with db.transaction() as s:
        await repo.upsert_member(s, repo.UserInfo(61, "N"))
        s.add(Referral(newcomer_id=61, referrer_id=1, chat_id=-5, joined_at=AT))
        await s.flush()
        await checkin.CHECKIN_OP.run(s, [checkin.CheckinRequest(61, -5, AT.date(), AT)])
    async with db.transaction(readonly=True) as s:
        same = await s.scalar(text(
            "SELECT count(*) FROM checkin JOIN referral ON referral.newcomer_id = checkin.user_id"
            " WHERE checkin.created_at = referral.joined_at"
        ))
    assert same == 1
