"""services/promo.py's timeline rows: what a campaign's overview lists in each phase —
one-off posts by their local day and time, recurring ones by how often they fire there
(counted by the scheduler's own crontab calculation; a count cut short by the walk's
bound is shown as "at least")."""

from __future__ import annotations

from datetime import UTC, date, datetime

from games.campaign import Campaign, Phase
from scheduler.core import next_cron_time
from services.promo import posts_by_phase
from storage.models import PromoPost, PromoState

TZ = "Asia/Shanghai"
DOUBLE_11 = Campaign("双十一", date(2026, 11, 11))


def post(post_id: int, kind: str, cron: str | None = None) -> PromoPost:
    return PromoPost(
        id=post_id,
        chat_id=-100,
        author_id=1,
        preview_chat_id=1,
        kind=kind,
        run_at=datetime(2026, 8, 1, tzinfo=UTC),
        cron=cron,
        timezone=TZ,
        text="x",
        state=PromoState.scheduled,
        source_key=f"k{post_id}",
        created_at=datetime(2026, 8, 1, tzinfo=UTC),
    )


def first(cron: str) -> datetime:
    at = next_cron_time(cron, TZ, datetime(2026, 8, 1, tzinfo=UTC))
    assert at is not None
    return at


def test_one_off_posts_by_their_local_day_and_recurring_ones_by_count() -> None:
    rows = [
        (post(1, "at"), datetime(2026, 11, 5, 12, 0, tzinfo=UTC)),  # 20:00 in Shanghai
        (post(2, "at"), datetime(2026, 8, 5, 12, 0, tzinfo=UTC)),  # before the campaign
        (post(3, "every", "0 20 * * *"), first("0 20 * * *")),
        (post(4, "every", "0 20 * * 5"), first("0 20 * * 5")),
    ]
    shown = posts_by_phase(DOUBLE_11, rows, TZ, next_cron_time)
    assert shown == {
        Phase.buildup: ["#3 ×61", "#4 ×9"],
        Phase.warmup: ["#1 11-05 20:00", "#3 ×10", "#4 ×1"],
        Phase.sprint: ["#3 ×1"],
        Phase.afterglow: ["#3 ×3", "#4 ×1"],
    }


def test_a_post_firing_every_minute_is_counted_up_to_the_bound() -> None:
    rows = [(post(5, "every", "* * * * *"), first("* * * * *"))]
    shown = posts_by_phase(DOUBLE_11, rows, TZ, next_cron_time)
    assert shown == {Phase.buildup: ["#5 ×400+"]}
