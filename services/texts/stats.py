"""What operators' reports say: `/stats`, `/export`, `/review` (F12), and the labels of
their charts. Names an operator typed (a campaign's) pass `html.quote` once, here; chart
labels are plain text (matplotlib draws them, no HTML)."""

from __future__ import annotations

from collections.abc import Mapping

from aiogram import html
from aiogram.utils.i18n import gettext as _

from games.orders import yuan
from games.promo import Plan
from storage.stats import GAMES, DayCheckins, Points, PondStats, Review

PURCHASE_SEED = 0.70  # the seed's share of points that should come from purchases


def kind_labels() -> dict[str, str]:
    return {
        "checkin": _("check-in"),
        "streak_bonus": _("streak bonus"),
        "guess_price": _("guess the price"),
        "vote": _("votes"),
        "red_packet": _("red packets"),
        "red_packet_refund": _("red packets returned"),
        "lottery": _("lottery"),
        "redeem": _("redeemed"),
        "refund": _("refunds"),
        "referral": _("referrals"),
        "birthday": _("birthday"),
        "purchase": _("purchases"),
        "task_bonus": _("task bonus"),
        "admin_adjust": _("operators' adjustments"),
        "expire": _("expired"),
    }


def game_labels() -> dict[str, str]:
    return {
        "votes": _("votes cast"),
        "guesses": _("guesses"),
        "grabs": _("red packets grabbed"),
        "draws": _("lottery draws"),
    }


def kind_label(kind: str) -> str:
    return kind_labels().get(kind, kind)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


def _by_kind(points: Mapping[str, int]) -> str:
    if not points:
        return "—"
    ordered = sorted(points.items(), key=lambda kv: (-kv[1], kv[0]))
    return " · ".join(f"{kind_label(k)} {v}" for k, v in ordered)


def _games(games: Mapping[str, int]) -> str:
    labels = game_labels()
    return " · ".join(f"{labels[g]} {games.get(g, 0)}" for g in GAMES)


# -- /stats -------------------------------------------------------------------------------


def stats_usage() -> str:
    return _("Usage: /stats [7d|30d] — the pond's figures of the last 7 or 30 days")


def in_pond_only() -> str:
    return _("⚠️ Use this in the pond it is about.")


def mean_rate(days: list[DayCheckins]) -> float | None:
    rates = [d.rate for d in days if d.members]
    return sum(rates) / len(rates) if rates else None


def stats(s: PondStats, days: int) -> str:
    p: Points = s.points
    share = p.purchase_share
    lines = [
        _("📊 <b>Pond stats, last {days} days</b>").format(days=days),
        _("Members: {members} · active: {active}").format(members=s.members, active=s.active),
        _("Check-in rate: {mean} a day on average (today {today})").format(
            mean=_pct(mean_rate(s.days)), today=_pct(s.days[-1].rate if s.days else None)
        ),
        _("Points issued: {total} ({kinds})").format(total=p.total_issued,
                                                     kinds=_by_kind(p.issued)),
        _("Points spent: {total} ({kinds})").format(total=p.total_spent, kinds=_by_kind(p.spent)),
    ]
    if p.returned:
        lines.append(_("Points returned: {kinds}").format(kinds=_by_kind(p.returned)))
    lines.append(_("Purchases' share of points issued: {share} (aim: about {seed})").format(
        share=_pct(share), seed=_pct(PURCHASE_SEED)))
    lines.append(_("Games: {games}").format(games=_games(s.games)))
    return "\n".join(lines)


def stats_chart_title(days: int) -> str:
    return _("Pond stats, last {days} days").format(days=days)


def chart_checkin_rate() -> str:
    return _("Check-in rate per day")


def chart_issued() -> str:
    return _("Points issued by kind")


def chart_spent() -> str:
    return _("Points spent by kind")


def chart_games() -> str:
    return _("Game participation")


def chart_nothing() -> str:
    return _("nothing yet")


def chart_sent() -> str:
    return _("📊 The chart")


# -- /export ------------------------------------------------------------------------------


def export_usage(choices: str) -> str:
    return _("Usage: /export [{choices}] — the CSV comes to your private chat").format(
        choices=choices
    )


def export_sent_to_dm() -> str:
    return _("📤 Sent to your private chat.")


def export_open_dm() -> str:
    return _("📤 Open a private chat with me and send /start first, then /export again.")


def export_anonymous() -> str:
    return _("⚠️ I can't send files to an anonymous admin: send /export as yourself.")


def export_too_large() -> str:
    return _(
        "⚠️ That export is larger than Telegram lets a bot send (50 MB): use "
        "<code>pondbot export</code> on the server."
    )


def export_failed() -> str:
    return _("⚠️ The export could not be made just now; try again in a minute.")


def export_caption(what: str, rows: int) -> str:
    return _("📄 {what}: {rows} rows").format(what=what, rows=rows)


# -- /review -------------------------------------------------------------------------------


def review_usage() -> str:
    return _(
        "Usage: /review CAMPAIGN [SALES PER_BUYER] — the campaign's review (复盘), "
        "against a target like /plan's"
    )


def review_missing(name: str) -> str:
    return _("⚠️ No campaign named {name} here. /campaign lists them.").format(
        name=html.quote(name)
    )


def review(
    name: str, first: str, last: str, r: Review, plan: Plan | None,
    phase_names: Mapping[str, str],
) -> str:
    s = r.sales
    lines = [
        _("🧾 <b>Review of {name}</b> ({first}..{last})").format(
            name=html.quote(name), first=first, last=last
        ),
        _("Orders: {orders} · amount ¥{amount}").format(orders=s.orders, amount=yuan(s.cents)),
        _("Buyers: {buyers} — new {new}, returning {returning}").format(
            buyers=s.buyers, new=s.new_buyers, returning=s.returning_buyers
        ),
    ]
    if plan is not None:
        lines.append(_(
            "Target: {sales} sales by {buyers} buyers → orders {orders_pct}, buyers {buyers_pct}"
        ).format(
            sales=plan.sales, buyers=plan.buyers,
            orders_pct=_pct(s.orders / plan.sales), buyers_pct=_pct(s.buyers / plan.buyers),
        ))
    else:
        lines.append(_("No target given: /review {name} 200 5 compares with /plan 200 5.")
                     .format(name=html.quote(name)))
    for phase, sales in r.by_phase.items():
        lines.append(_("· {phase}: {orders} orders, ¥{amount}").format(
            phase=phase_names.get(phase, phase), orders=sales.orders, amount=yuan(sales.cents)
        ))
    p = r.points
    lines.append(_("Points issued {issued} · redeemed {redeemed} · spent {spent}").format(
        issued=p.total_issued, redeemed=p.spent.get("redeem", 0), spent=p.total_spent
    ))
    lines.append(_("Games: {games}").format(games=_games(r.games)))
    return "\n".join(lines)


def review_chart_title(name: str) -> str:
    return _("Review: {name}").format(name=name)


def chart_orders_by_phase() -> str:
    return _("Orders by phase")


def chart_buyers() -> str:
    return _("Buyers")


def all_buyers() -> str:
    return _("all")


def new_buyers() -> str:
    return _("new")


def returning_buyers() -> str:
    return _("returning")


def target_label() -> str:
    return _("target")


def chart_points() -> str:
    return _("Points")


def issued() -> str:
    return _("issued")


def redeemed() -> str:
    return _("redeemed")
