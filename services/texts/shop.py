"""What the shop (积分兑换) says. Item names and reasons pass `html.quote` once, here.

A code appears only in `code_dm` (its owner's DM), in `mine(…, in_dm=True)` (the
owner's DM) and in `redemptions(…, show_codes=True)` (an operator's own DM); every
other text leaves it out.
"""

from __future__ import annotations

from datetime import date

from aiogram import html
from aiogram.utils.i18n import gettext as _

from games.shop import NewcomerEarnings, yuan
from services.texts import clip, local_time, refusal, short_name
from storage.models import ItemKind, RedemptionStatus
from storage.shop import CodesAdded, DrawLine, ItemView, RedemptionView, Refund, ShopError

ITEM_NAME_MAX = 40  # characters of an item's name in lists
LIST_MAX = 30  # lines of a list


def _item(name: str) -> str:
    return html.quote(clip(name, ITEM_NAME_MAX))


def _price(price: int, cash_cents: int) -> str:
    text = _("{price} points").format(price=price)
    if cash_cents:
        text += _(" + ¥{cash}").format(cash=yuan(cash_cents))
    return text


def _status(status: RedemptionStatus) -> str:
    return {
        RedemptionStatus.undelivered: _("code waiting: /start me privately"),
        RedemptionStatus.delivered: _("code sent"),
        RedemptionStatus.pending: _("to be handed over"),
        RedemptionStatus.fulfilled: _("handed over"),
        RedemptionStatus.refunded: _("refunded"),
    }[status]


# -- usage -----------------------------------------------------------------------------


def usage_redeem() -> str:
    return html.quote(_("Usage: /redeem <item_id> — the items are listed by /shop"))


def usage_item() -> str:
    return html.quote(_(
        "Usage: /item add <price> <stock> [limit=<n>] [cash=<yuan>] [kind=coupon|goods] "
        "[from=<MM-DD>] [until=<MM-DD>] <name…> · /item codes <item_id> (as a reply to a "
        "message or a .txt/.csv file with one code per line) · /item list · "
        "/item off <id> · /item on <id>"
    ))


def usage_refund() -> str:
    return html.quote(_("Usage: /refund <redemption_id> [reason]"))


def usage_fulfil() -> str:
    return html.quote(_("Usage: /fulfil <redemption_id>"))


def usage_redemptions() -> str:
    return html.quote(_("Usage: /redemptions [item_id]"))


def bad_item_args(code: str) -> str:
    messages = {
        "bad_price_stock": _("⚠️ Price and stock must be whole numbers, like 30 100."),
        "too_large": _("⚠️ That price or stock is too large."),
        "no_name": _("⚠️ The item needs a name."),
        "name_too_long": _("⚠️ The name is too long (128 characters at most)."),
        "bad_limit": _("⚠️ limit= is a whole number of redemptions per member (0: no limit)."),
        "bad_cash": _("⚠️ cash= is yuan with up to two decimals, like cash=9.9."),
        "bad_kind": _("⚠️ kind= is coupon or goods."),
        "bad_date": _("⚠️ Dates look like from=11-01 until=11-11."),
        "bad_dates": _("⚠️ The dates must not end before they start, nor in the past."),
        "bad_id": _("⚠️ Give the item's number, like 3 (see /item list)."),
    }
    return refusal(messages, code, usage_item())


def bad_id(usage: str) -> str:
    return refusal({}, "bad_id", usage)


# -- members ---------------------------------------------------------------------------


def shop(items: list[ItemView]) -> str:
    if not items:
        return _("🛍 Nothing in the shop right now. Keep collecting points!")
    lines = [_("🛍 <b>Points shop</b> — /redeem &lt;id&gt; to redeem")]
    for it in items[:LIST_MAX]:
        line = f"#{it.id} {_item(it.name)} — {_price(it.price, it.cash_cents)}"
        extra = [_("{stock} left").format(stock=it.stock) if it.stock else _("sold out")]
        if it.limit:
            extra.append(_("{limit} per member").format(limit=it.limit))
        if it.active_until is not None:
            extra.append(_("until {day}").format(day=it.active_until.strftime("%m-%d")))
        lines.append(f"{line} · {' · '.join(extra)}")
    return "\n".join(lines)


def redeem_refused(exc: ShopError) -> str:
    messages = {
        "unknown_item": _("⚠️ There is no such item. See /shop."),
        "off_sale": _("⚠️ That item is not on sale."),
        "not_yet": _("⚠️ That item is not on sale yet."),
        "ended": _("⚠️ That item is no longer on sale."),
        "sold_out": _("😢 Sold out! See /shop for what is left."),
        "limit": _("⚠️ You have redeemed this item {limit} time(s): that is the limit.").format(
            limit=exc.limit
        ),
    }
    return messages.get(exc.code, _("⚠️ That can't be redeemed now."))


def not_enough_points(balance: int, needed: int) -> str:
    return _("⚠️ You have {balance} points; this item costs {needed}.").format(
        balance=balance, needed=needed
    )


def not_a_member() -> str:
    return _("⚠️ Bots, channels and anonymous senders can't redeem.")


def redeemed(name: str, r: RedemptionView, *, code_sent: bool, in_dm: bool) -> str:
    head = _("✅ {name} redeemed <b>{item}</b> for {price} (#{rid}).").format(
        name=short_name(name), item=_item(r.item_name), price=_price(r.price, r.cash_cents),
        rid=r.id,
    )
    if r.kind is ItemKind.goods:
        tail = _("The shop will hand it over: show this number (#{rid}).").format(rid=r.id)
    elif in_dm:
        tail = _("Your code follows.")
    elif code_sent:
        tail = _("📩 The code is in your private chat with me.")
    else:
        tail = _(
            "📩 To get your code, open a private chat with me and send /start: "
            "it arrives there (never in the group)."
        )
    if r.cash_cents:
        tail += "\n" + _("Pay ¥{cash} at the checkout.").format(cash=yuan(r.cash_cents))
    return f"{head}\n{tail}"


def code_dm(r: RedemptionView) -> str:
    return _(
        "🎁 Your code for <b>{item}</b> (#{rid}):\n<code>{code}</code>\n"
        "Show it at the checkout. Keep it to yourself: it works once."
    ).format(item=html.quote(r.item_name), rid=r.id, code=html.quote(r.code or ""))


def mine(reds: list[RedemptionView], draws: list[DrawLine], *, in_dm: bool,
         timezone: str) -> str:
    if not reds and not draws:
        return _("🧾 You have no redemptions or draws yet. See /shop.")
    lines = [_("🧾 <b>My redemptions</b>")] if reds else []
    for r in reds:
        line = f"#{r.id} {_item(r.item_name)} · {local_time(r.created_at, timezone)} · "
        line += _status(r.status)
        if r.shown_code and in_dm:
            line += f" · <code>{html.quote(r.shown_code)}</code>"
        lines.append(line)
    if reds and not in_dm and any(r.code for r in reds):
        lines.append(_("Codes are shown only in our private chat."))
    if draws:
        lines.append(_("🎰 <b>My draws</b>"))
        for d in draws:
            won = html.quote(clip(d.prize_name, ITEM_NAME_MAX)) or _("no prize")
            cost = _("free") if d.cost == 0 else _("{cost} points").format(cost=d.cost)
            lines.append(f"{local_time(d.created_at, timezone)} · {cost} · {won}")
    return "\n".join(lines)


# -- operators -------------------------------------------------------------------------


def item_added(it: ItemView, advice: NewcomerEarnings | None) -> str:
    kind = _("goods") if it.kind is ItemKind.goods else _("coupon")
    text = _("✅ Item <b>#{id}</b> added: {name} ({kind}) — {price}, stock {stock}, "
             "limit {limit}.").format(
        id=it.id, name=_item(it.name), kind=kind, price=_price(it.price, it.cash_cents),
        stock=it.stock, limit=it.limit or _("no limit"),
    )
    if it.kind is ItemKind.coupon:
        text += "\n" + _("Codes are generated at each redemption; to sell your own codes "
                         "instead, reply to them with /item codes {id}.").format(id=it.id)
    if advice is not None:
        text += "\n" + _(
            "💡 A newcomer who plays every game once earns {total} points here (check-in "
            "{checkin}, a vote {vote}, inviting a friend {referral}): this item costs more. "
            "A cheap no-threshold coupon next to a larger threshold one works best."
        ).format(total=advice.total, checkin=advice.checkin, vote=advice.vote,
                 referral=advice.referral)
    return text


def item_list(items: list[ItemView], today: date) -> str:
    if not items:
        return _("🛍 No items yet. Add one with /item add.")
    lines = [_("🛍 <b>Items</b> (id · price · stock left · redeemed · on sale)")]
    for it in items[-LIST_MAX:]:
        state = "✅" if it.sold_on(today) else "⛔"
        pool = _(" (codes uploaded)") if it.pool else ""
        lines.append(
            f"{state} #{it.id} {_item(it.name)} · {_price(it.price, it.cash_cents)} · "
            + _("{stock} left{pool} · {redeemed} redeemed").format(
                stock=it.stock, pool=pool, redeemed=it.redeemed
            )
        )
    return "\n".join(lines)


def item_switched(it: ItemView) -> str:
    if it.on_sale:
        return _("✅ #{id} {name} is on sale again.").format(id=it.id, name=_item(it.name))
    return _("⛔ #{id} {name} is off sale.").format(id=it.id, name=_item(it.name))


def unknown_item() -> str:
    return _("⚠️ There is no such item. See /item list.")


def goods_no_codes() -> str:
    return _("⚠️ Goods are handed over by the shop: they take no codes.")


def codes_source_missing() -> str:
    return refusal(
        {"x": _("⚠️ Reply with /item codes to a message or a .txt/.csv file of codes.")},
        "x", usage_item(),
    )


def codes_file_refused() -> str:
    return _("⚠️ I read codes from a .txt or .csv file of at most 1 MB, in UTF-8.")


def codes_added(done: CodesAdded, repeated: int, bad_lines: tuple[int, ...],
                *, show: bool, skipped: tuple[str, ...]) -> str:
    lines = [
        _("✅ {added} code(s) added to #{id} {name}: {stock} unused now.").format(
            added=done.added, id=done.item.id, name=_item(done.item.name),
            stock=done.item.stock,
        )
    ]
    if repeated or done.already_in_pool:
        lines.append(
            _("Skipped duplicates: {repeated} repeated in the upload, {known} already in the "
              "pool.").format(repeated=repeated, known=len(done.already_in_pool))
        )
        if show and skipped:
            lines.append(", ".join(f"<code>{html.quote(c)}</code>" for c in skipped[:20]))
    if bad_lines:
        shown = ", ".join(str(n) for n in bad_lines[:20])
        lines.append(_("Not a code (skipped), lines: {lines}").format(lines=shown))
    return "\n".join(lines)


def redemptions(reds: list[RedemptionView], *, show_codes: bool, timezone: str) -> str:
    if not reds:
        return _("🧾 No redemptions yet.")
    lines = [_("🧾 <b>Redemptions</b> (newest first)")]
    for r in reds:
        line = (
            f"#{r.id} · {_item(r.item_name)} · {r.user_id} · "
            f"{local_time(r.created_at, timezone)} · {_status(r.status)}"
        )
        if r.via_draw:
            line += " · 🎰"
        if r.code and show_codes:
            line += f" · <code>{html.quote(r.code)}</code>"
        lines.append(line)
    if not show_codes and any(r.code for r in reds):
        lines.append(_("Codes are listed only in your private chat with me."))
    return "\n".join(lines)


def refunded(done: Refund) -> str:
    r = done.redemption
    if not done.applied:
        return _("ℹ️ Redemption #{rid} was already refunded: nothing changed.").format(rid=r.id)
    text = _("↩️ Redemption #{rid} ({item}) refunded: {points} points back to {user}.").format(
        rid=r.id, item=_item(r.item_name), points=done.points, user=r.user_id
    )
    if r.code is not None:
        text += "\n" + _("Its code is void now.")
    text += "\n" + (
        _("The unit is back in stock.") if done.stock_back
        else _("An uploaded code is never given again: the stock stays.")
    )
    return text


def refund_notice(done: Refund) -> str:
    """To the member, in their DM."""
    return _("↩️ Your redemption #{rid} ({item}) was cancelled; {points} points are back.").format(
        rid=done.redemption.id, item=_item(done.redemption.item_name), points=done.points
    )


def fulfilled(r: RedemptionView, applied: bool) -> str:
    if not applied:
        return _("ℹ️ Redemption #{rid} was already handed over.").format(rid=r.id)
    return _("✅ Redemption #{rid} ({item}) handed over to {user}.").format(
        rid=r.id, item=_item(r.item_name), user=r.user_id
    )


def operator_refused(code: str) -> str:
    return {
        "unknown_redemption": _("⚠️ There is no such redemption. See /redemptions."),
        "already_refunded": _("⚠️ That redemption was refunded."),
        "not_goods": _("⚠️ Only goods waiting to be handed over can be marked so."),
    }.get(code, _("⚠️ That can't be done."))
