"""F11 rules as pure functions: the /promo grammar, crontab weekdays, campaign phases and
placeholders, the frequency cap, the planner."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from games.campaign import (
    Campaign,
    DayRange,
    Phase,
    current_campaign,
    default_phases,
    near,
    next_sale_day,
    parse_phase,
    parse_range,
    render,
    widest_render,
)
from games.parsing import ParseError
from games.promo import (
    Button,
    check_cap,
    crontab_weekdays,
    parse_button_url,
    parse_plan,
    parse_promo,
    plan,
    resolve_at,
)

LABELS = {
    Phase.buildup: "蓄势",
    Phase.warmup: "预热",
    Phase.sprint: "冲刺",
    Phase.afterglow: "余温",
}
NOW = datetime(2026, 10, 20, 4, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


# -- grammar ------------------------------------------------------------------------------


def test_at_with_a_local_time_pin_multiline_text_and_a_button() -> None:
    cmd = parse_promo(
        "at 2026-11-01 20:00 pin 第一行\n  第二行 保留空格\n[去看看](https://a.cn/x?y=1)"
    )
    assert cmd.action == "post" and cmd.post is not None
    p = cmd.post
    assert p.kind == "at" and p.local == datetime(2026, 11, 1, 20, 0) and p.pin
    assert p.text == "第一行\n  第二行 保留空格"
    assert p.button == Button("去看看", "https://a.cn/x?y=1")
    assert resolve_at(p, NOW, "Asia/Shanghai") == datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def test_at_with_a_delay_and_full_width_digits() -> None:
    cmd = parse_promo("at +２h 置顶 hello")
    assert cmd.post is not None and cmd.post.delay == timedelta(hours=2) and cmd.post.pin
    assert resolve_at(cmd.post, NOW, "UTC") == NOW + timedelta(hours=2)


def test_every_takes_five_fields_and_fixes_weekdays() -> None:
    cmd = parse_promo("every 0 20 * * 1-5 打卡提醒")
    assert cmd.post is not None and cmd.post.cron == "0 20 * * mon,tue,wed,thu,fri"
    assert cmd.post.text == "打卡提醒"


@pytest.mark.parametrize(
    ("field", "names"),
    [
        ("*", "*"),
        ("0", "sun"),
        ("7", "sun"),
        ("5", "fri"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("5-7", "sun,fri,sat"),
        ("*/2", "sun,tue,thu,sat"),
        ("sat,sun", "sun,sat"),
        ("mon-wed", "mon,tue,wed"),
    ],
)
def test_crontab_weekdays(field: str, names: str) -> None:
    assert crontab_weekdays(field) == names


@pytest.mark.parametrize("field", ["8", "5-1", "x", "mon-", "1-2-3", "*/0", "*-3"])
def test_bad_weekdays(field: str) -> None:
    with pytest.raises(ParseError):
        crontab_weekdays(field)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (None, "usage"),
        ("", "usage"),
        ("at", "usage"),
        ("at +2h", "no_text"),
        ("at 2026-11-01", "bad_time"),
        ("at 2026-02-30 20:00 x", "bad_time"),
        ("at 2026-11-01 25:00 x", "bad_time"),
        ("at +0s x", "bad_duration"),
        ("every 0 20 * * x", "bad_cron"),
        ("every 0 20 * *", "bad_cron"),
        ("every 0 20 * * 9 x", "bad_cron"),
        ("cancel", "usage"),
        ("cancel 1 2", "usage"),
        ("cancel x", "bad_id"),
        ("list all", "usage"),
        ("at +1h x\n[b](ftp://a.cn)", "bad_url"),
        ("at +1h x\n[ ](https://a.cn)", "bad_button"),
    ],
)
def test_bad_commands(args: str | None, code: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_promo(args)
    assert err.value.code == code


def test_list_and_cancel() -> None:
    assert parse_promo("list").action == "list"
    assert parse_promo("cancel #12").post_id == 12


def test_times_must_lie_ahead_within_a_year() -> None:
    post = parse_promo("at 2026-10-20 12:00 x").post  # exactly now (Shanghai)
    assert post is not None
    with pytest.raises(ParseError, match="in_the_past"):
        resolve_at(post, NOW, "Asia/Shanghai")
    far = parse_promo("at 2027-12-01 12:00 x").post
    assert far is not None
    with pytest.raises(ParseError, match="too_far"):
        resolve_at(far, NOW, "Asia/Shanghai")


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "https://",
        "http://localhost/",
        "https://a.cn/<x>",
        "mailto:a@b.cn",
        "https://a.cn:99999/",
        "https://a b.cn",
    ],
)
def test_button_urls_must_be_web_links(url: str) -> None:
    with pytest.raises(ParseError):
        parse_button_url(url)


def test_a_bracket_line_that_is_no_button_stays_text() -> None:
    cmd = parse_promo("at +1h 规则：[1] 满减")
    assert cmd.post is not None and cmd.post.text == "规则：[1] 满减" and cmd.post.button is None


# -- campaigns -------------------------------------------------------------------------------


def test_default_phases_of_double_eleven() -> None:
    phases = dict(default_phases(date(2026, 11, 11)))
    assert phases[Phase.buildup] == DayRange(date(2026, 9, 1), date(2026, 10, 31))
    assert phases[Phase.warmup] == DayRange(date(2026, 11, 1), date(2026, 11, 10))
    assert phases[Phase.sprint] == DayRange(date(2026, 11, 11), date(2026, 11, 11))
    assert phases[Phase.afterglow] == DayRange(date(2026, 11, 12), date(2026, 11, 14))


def test_phase_on_and_overrides_with_precedence() -> None:
    c = Campaign("双十一", date(2026, 11, 11))
    assert c.phase_on(date(2026, 8, 31)) is None
    assert c.phase_on(date(2026, 10, 31)) == Phase.buildup
    assert c.phase_on(date(2026, 11, 11)) == Phase.sprint
    assert c.phase_on(date(2026, 11, 15)) is None
    moved = Campaign(
        "双十一",
        date(2026, 11, 11),
        {Phase.warmup: DayRange(date(2026, 10, 20), date(2026, 11, 11))},
    )
    assert moved.phase_on(date(2026, 10, 25)) == Phase.warmup  # overlaps build-up: wins
    assert moved.phase_on(date(2026, 11, 11)) == Phase.sprint  # the sprint wins over all


def test_the_upcoming_campaign_wins_over_one_in_its_after_glow() -> None:
    a = Campaign("618", date(2026, 6, 18))
    b = Campaign(
        "七夕", date(2026, 6, 20), {Phase.buildup: DayRange(date(2026, 6, 1), date(2026, 6, 9))}
    )
    assert current_campaign([a, b], date(2026, 6, 19)) == b
    assert current_campaign([a, b], date(2026, 6, 18)) == a
    assert current_campaign([a, b], date(2026, 12, 1)) is None


def test_render_placeholders() -> None:
    c = [Campaign("双十一", date(2026, 11, 11))]
    text = "{campaign}{phase}，还有{days_left}天，{date}开抢 {unknown} {{x}} {"
    assert render(text, c, date(2026, 11, 1), LABELS) == (
        "双十一预热，还有10天，11-11开抢 {unknown} {{x}} {"
    )
    assert render(text, c, date(2026, 11, 12), LABELS).startswith("双十一余温，还有0天")
    assert (
        render("{campaign}|{phase}|{days_left}|{date}", [], date(2026, 5, 4), LABELS) == "|||05-04"
    )


@given(st.text(max_size=300), st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)))
def test_render_never_raises_and_never_outgrows_the_widest(text: str, day: date) -> None:
    c = [Campaign("x" * 32, day + timedelta(days=3))]
    out = render(text, c, day, LABELS)
    assert len(out) <= len(widest_render(text, max(map(len, LABELS.values()))))


def test_day_parsing() -> None:
    assert next_sale_day("11-11", date(2026, 10, 20)) == date(2026, 11, 11)
    assert next_sale_day("06-18", date(2026, 10, 20)) == date(2027, 6, 18)
    assert next_sale_day("10-20", date(2026, 10, 20)) == date(2026, 10, 20)
    assert next_sale_day("02-29", date(2026, 10, 20)) == date(2027, 2, 28)
    assert near("12-25", date(2027, 1, 1)) == date(2026, 12, 25)
    assert parse_range("10-25..11-10", date(2026, 11, 11)) == DayRange(
        date(2026, 10, 25), date(2026, 11, 10)
    )
    assert parse_range("12-28～01-03", date(2027, 1, 1)) == DayRange(
        date(2026, 12, 28), date(2027, 1, 3)
    )
    assert parse_phase("预热") == Phase.warmup and parse_phase("After-Glow") == Phase.afterglow
    for bad in ("11-10..10-25", "13-01", "11/11", "..", "11-11.."):
        with pytest.raises(ParseError):
            parse_range(bad, date(2026, 11, 11))


# -- the frequency cap -----------------------------------------------------------------------


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 10, day, hour, tzinfo=UTC)


def test_cap_allows_a_week_apart_and_refuses_closer() -> None:
    assert check_cap(at(8), [at(1)], [], WEEK).allowed
    v = check_cap(at(5), [at(1)], [], WEEK)
    assert not v.allowed and v.conflict == at(1) and v.next_allowed == at(8)


def test_cap_next_allowed_skips_over_later_posts() -> None:
    # Posts on the 1st and the 9th: nothing fits between, the 16th is the first free time.
    v = check_cap(at(3), [at(1), at(9)], [], WEEK)
    assert v.next_allowed == at(16)


def test_exempt_phases_neither_capped_nor_counted() -> None:
    warmup = [(at(10, 0), at(20, 0))]
    assert check_cap(at(11), [at(10, 13), at(12)], warmup, WEEK).allowed
    # Posts inside the warm-up don't count against a post after it.
    assert check_cap(at(21), [at(15), at(19)], warmup, WEEK).allowed
    # A capped time learns that the warm-up opens sooner than the week ends.
    v = check_cap(at(6), [at(4)], warmup, WEEK)
    assert not v.allowed and v.next_allowed == at(10, 0)


def test_no_cap_when_the_period_is_zero() -> None:
    assert check_cap(at(1), [at(1)], [], timedelta(0)).allowed


@given(
    st.lists(st.integers(min_value=0, max_value=60 * 24), max_size=8),
    st.integers(min_value=0, max_value=60 * 24),
)
def test_next_allowed_fits_and_nothing_earlier_does(others_h: list[int], want_h: int) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    others = [base + timedelta(hours=h) for h in others_h]
    want = base + timedelta(hours=want_h)
    v = check_cap(want, others, [], WEEK)
    if v.allowed:
        assert all(abs(o - want) >= WEEK for o in others)
        return
    assert v.next_allowed is not None and v.next_allowed > want
    assert all(abs(o - v.next_allowed) >= WEEK for o in others)
    for h in range(want_h, int((v.next_allowed - base).total_seconds() // 3600)):
        t = base + timedelta(hours=h)
        assert any(abs(o - t) < WEEK for o in others)


# -- the planner ----------------------------------------------------------------------------


def test_plan_from_the_seed() -> None:
    p = plan(200, 5)
    assert (p.buyers, p.invite_low, p.invite, p.invite_high) == (40, 48, 50, 52)
    assert plan(1, 1).invite_low == 2  # always round up: a person is not divisible
    assert parse_plan("２００ ５") == (200, 5)
    for bad in ("", "200", "200 0", "-1 5", "a 5", "1 2 3"):
        with pytest.raises(ParseError):
            parse_plan(bad)


@given(st.integers(1, 10**7), st.integers(1, 10**4))
def test_plan_bounds(sales: int, per: int) -> None:
    p = plan(sales, per)
    assert p.buyers * per >= sales > (p.buyers - 1) * per
    assert p.buyers * 1.2 <= p.invite_low <= p.invite <= p.invite_high < p.buyers * 1.3 + 1
