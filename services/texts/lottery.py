"""Texts of the lottery (抽奖). Names are escaped here, once. A toast or a group reply
says what was won, never a code: codes go only to the winner's DM."""

from __future__ import annotations

from aiogram import html
from aiogram.utils.i18n import gettext as _

from services.texts import clip, refusal, short_name
from storage.lottery import BoardView, DrawRefused, DrawResult, PrizeLine

TOAST_MAX = 190  # a callback toast shows at most 200 characters
LIST_MAX = 3900  # characters of the prize list (a message holds 4096)


def button() -> str:
    return _("🎰 Draw")


def usage_prize() -> str:
    return html.quote(_(
        "Usage: /prize add <weight> <stock|-> <points=N|item=ID|none> <name> · "
        "/prize list · /prize off <id>  (-: unlimited stock)"
    ))


def prize_error(code: str) -> str:
    return refusal(
        {
            "no_item": _("There is no shop item with that id (see /item list)."),
            "not_found": _("There is no prize with that id (see /prize list)."),
            "prize_what": _("Say what is won: points=N, item=ID or none."),
            "name_too_long": _("The prize's name is too long."),
            "too_large": _("That number is too large."),
            "not_positive": _("Weight and stock must be positive whole numbers."),
            "not_a_number": _("Weight and stock must be whole numbers (stock - for unlimited)."),
        },
        code,
        usage_prize(),
    )


def _what(line: PrizeLine) -> str:
    if line.kind == "points":
        return _("{points} points").format(points=line.points)
    if line.kind == "item":
        return _("shop item #{item}").format(item=line.item_id)
    return _("nothing (thanks for playing)")


def _stock(stock: int | None) -> str:
    return _("unlimited") if stock is None else str(stock)


def prize_added(prize_id: int, lines: list[PrizeLine]) -> str:
    return _("🎁 Prize #{id} added.").format(id=prize_id) + "\n" + prize_list(lines)


def prize_off(prize_id: int, name: str) -> str:
    return _("Prize #{id} {name} is out of the draw.").format(id=prize_id, name=html.quote(name))


def prize_list(lines: list[PrizeLine]) -> str:
    if not lines:
        return _("No prizes yet: the lottery is closed. Add one with /prize add.")
    rows = [_("🎰 <b>Prizes</b> (odds among the prizes in stock):")]
    size = len(rows[0])
    for p in lines:
        if size > LIST_MAX:
            rows.append("…")
            break
        rows.append(
            _("#{id} {name} — {what} · weight {weight} · stock {stock} · won {won} · "
              "odds {odds}").format(
                id=p.id, name=html.quote(p.name), what=_what(p), weight=p.weight,
                stock=_stock(p.stock), won=p.won, odds=f"{p.odds:.1%}",
            )
        )
        size += len(rows[-1]) + 1
    return "\n".join(rows)


def board(view: BoardView, free_per_day: int, cost: int) -> str:
    lines = [_("🎰 <b>Lucky draw</b>")]
    if free_per_day:
        lines.append(_("{free} free draw(s) a day, then {cost} points a draw.").format(
            free=free_per_day, cost=cost))
    else:
        lines.append(_("{cost} points a draw.").format(cost=cost))
    if view.prizes:
        lines.append(_("Prizes: {prizes}").format(prizes=", ".join(
            f"{html.quote(clip(p.name, 24))} ({_stock(p.stock)})" for p in view.prizes)))
    elif view.open:
        lines.append(_("All prizes are gone for now."))
    else:
        lines.append(_("The lottery is not open yet: an operator adds prizes first."))
    lines.append(_("Draws today: <b>{count}</b>").format(count=view.draws))
    if view.winners:
        won = ", ".join(f"{short_name(n)} 🎁 {html.quote(clip(p, 24))}" for n, p in view.winners)
        lines.append(_("Latest winners: {won}").format(won=won))
    lines.append(_("Tap the button below or type /draw."))
    return "\n".join(lines)


def _outcome(r: DrawResult, dm_linked: bool) -> str:
    if r.kind == "points":
        return _("🎉 You won {prize}: +{points} points!").format(
            prize=r.prize_name, points=r.won_points)
    if r.kind == "item":
        if r.redemption is not None and r.redemption.code is None:
            return _("🎉 You won {prize}! The shop will hand it over to you.").format(
                prize=r.prize_name)
        if not dm_linked:
            return _("🎉 You won {prize}! Send /start to me in a private chat to get the "
                     "code.").format(prize=r.prize_name)
        return _("🎉 You won {prize}! The code comes in your private chat with me.").format(
            prize=r.prize_name)
    return _("🍀 {prize} — no prize this time.").format(prize=r.prize_name)


def _how(r: DrawResult) -> str:
    if r.free:
        return _("Free draw ({left} left today).").format(left=r.free_left)
    if r.cost:
        return _("Paid {cost} points.").format(cost=r.cost)
    return ""


def toast(r: DrawResult, *, dm_linked: bool = True) -> str:
    """A draw, answered on the button (plain text: toasts show no markup)."""
    balance = _("Balance {balance}.").format(balance=r.balance)
    text = f"{_outcome(r, dm_linked)} {_how(r)} {balance}"
    return clip(text, TOAST_MAX)


def result(r: DrawResult, *, dm_linked: bool = True) -> str:
    """A typed /draw, answered in the DM or the group (escaped)."""
    return html.quote(toast(r, dm_linked=dm_linked))


def refused(exc: DrawRefused) -> str:
    if exc.code == "closed":
        return _("The lottery is not open yet: an operator adds prizes first.")
    if exc.code == "sold_out":
        return _("All prizes are gone for now — try again later.")
    return _("No free draws left today, and a draw costs {cost} points (you have {balance})."
             ).format(cost=exc.cost, balance=exc.balance)


def members_only() -> str:
    return _("Only members can draw.")


def groups_only() -> str:
    return _("The lottery board is posted in a pond's group.")
