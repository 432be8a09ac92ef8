"""What operators' reports say: `/stats`, `/export`, `/review` (F12), and the labels of
their charts. Names an operator typed (a campaign's) pass `html.quote` once, here; chart
labels are plain text (matplotlib draws them, no HTML)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from aiogram import html
from aiogram.utils.i18n import gettext as _

from games.orders import yuan
from games.promo import Plan
from storage.stats import GAMES, DayCheckins, Points, PondStats, Review, Sales

PURCHASE_SEED = 0.70  # the seed's share of points that should come from purchases


def kind_labels() -> dict[str, str]:
    return {
        "checkin": _("check-in"),
        "streak_bonus": _("streak bonus"),
        "guess_price": _("guess the price"),
        "vote": _("votes"),
        "survey": _("surveys"),
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


def export_too_large(what: str, pond_id: int | None) -> str:
    """A file over the 50 MB a bot may send: the exact command that writes it on the
    server — run by the shop's staff, since a pond's admin has no access there."""
    if pond_id is None:
        return _(
            "⚠️ That export is larger than Telegram lets a bot send (50 MB): run "
            "<code>{command}</code> on the server."
        ).format(command=f"pondbot export {what}")
    return _(
        "⚠️ That export is larger than Telegram lets a bot send (50 MB): ask the shop's "
        "staff to run <code>{command}</code> on the server."
    ).format(command=f"pondbot export {what} --pond {pond_id}")


def export_failed() -> str:
    return _("⚠️ The export could not be made just now; try again in a minute.")


def export_caption(what: str, rows: int) -> str:
    return _("📄 {what}: {rows} rows").format(what=what, rows=rows)


def export_pond_caption(what: str, pond: str, rows: int) -> str:
    return _("📄 {what} of the pond {pond} only: {rows} rows").format(
        what=what, pond=html.quote(pond), rows=rows
    )


def export_shop_wide_only(what: str) -> str:
    return _(
        "⛔ {what} is about members shop-wide: only the shop's own operators "
        "(OPERATOR_IDS) export it. In a pond, /export gives that pond's members, ledger, "
        "votes, orders, redemptions and draws."
    ).format(what=what)


# -- /review -------------------------------------------------------------------------------


class TargetSource(StrEnum):
    given = "given"  # typed after the campaign's name
    pond = "pond"  # the pond's last /plan
    shop = "shop"  # the shop's last /plan (a global operator's, in their private chat)


@dataclass(frozen=True, slots=True)
class Target:
    """What a review compares with, and where it comes from (`day`: the local day a
    stored /plan was set)."""

    plan: Plan
    source: TargetSource
    day: str = ""


def review_usage() -> str:
    return _(
        "Usage: /review CAMPAIGN [SALES PER_BUYER] — the campaign's review (复盘), "
        "against the last /plan, or the target given after the name"
    )


def review_missing(name: str) -> str:
    return _("⚠️ No campaign named {name} here. /campaign lists them.").format(
        name=html.quote(name)
    )


def _target_head(target: Target) -> str:
    if target.source == TargetSource.pond:
        return _("🎯 Against the pond's last /plan ({day})").format(day=target.day)
    if target.source == TargetSource.shop:
        return _("🎯 Against the shop's last /plan ({day})").format(day=target.day)
    return _("🎯 Against the target given")


def _against(s: Sales, target: Target) -> str:
    p = target.plan
    return _(
        "{head}: {sales} sales, {per} per buyer → {target_buyers} buyers\n"
        "Orders {orders} of {sales} ({orders_pct}), amount ¥{amount} · "
        "buyers {buyers} of {target_buyers} ({buyers_pct})"
    ).format(
        head=_target_head(target), sales=p.sales, per=p.per_buyer, target_buyers=p.buyers,
        orders=s.orders, orders_pct=_pct(s.orders / p.sales), amount=yuan(s.cents),
        buyers=s.buyers, buyers_pct=_pct(s.buyers / p.buyers),
    )


def review(
    name: str, first: str, last: str, r: Review, target: Target | None,
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
    if target is not None:
        lines.append(_against(s, target))
    else:
        lines.append(_(
            "No target yet: set one with /plan SALES PER_BUYER (e.g. /plan 200 5), "
            "or give it here: /review {name} 200 5"
        ).format(name=html.quote(name)))
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


def chart_orders_by_phase(cents: int) -> str:
    return _("Orders, in all and by phase (¥{amount} in all)").format(amount=yuan(cents))


def all_orders() -> str:
    return _("all")


def chart_buyers() -> str:
    return _("Buyers")


def all_buyers() -> str:
    return _("all")


def new_buyers() -> str:
    return _("new")


def returning_buyers() -> str:
    return _("returning")


def target_label(target: Target, what: Literal["sales", "buyers"]) -> str:
    """The chart's target line: how much, and whose target."""
    value = target.plan.sales if what == "sales" else target.plan.buyers
    if target.source == TargetSource.given:
        if what == "sales":
            return _("target: {n} sales").format(n=value)
        return _("target: {n} buyers").format(n=value)
    if what == "sales":
        return _("last /plan ({day}): {n} sales").format(n=value, day=target.day)
    return _("last /plan ({day}): {n} buyers").format(n=value, day=target.day)


def chart_points() -> str:
    return _("Points")


def issued() -> str:
    return _("issued")


def redeemed() -> str:
    return _("redeemed")
