"""What the red packets (抢红包) say. Names and passwords pass `html.quote` once, here."""

from __future__ import annotations

from aiogram import html
from aiogram.utils.i18n import gettext as _

from games.red_packet import PacketLimits, PacketState, Refusal, SplitMode, luckiest
from services.texts import local_time, refusal, short_name
from services.texts.surveys import segment_name
from storage.red_packets import PacketCard

RESULT_LINES = 40  # grabbers listed by name; the rest are counted (keeps far below 4096)


def _name(name: str) -> str:
    return short_name(name.strip() or "?")


def usage() -> str:
    return html.quote(_(
        "Usage: /redpacket <total> <shares> [random|equal] [pwd=<password>] [for=<duration>]"
        " — e.g. /redpacket 100 5, or /redpacket 50 5 equal pwd=hello for=2h"
    ))


def parse_error(code: str, *, max_total: int, max_shares: int, max_expiry_hours: int) -> str:
    messages = {
        "not_a_number": _("⚠️ Points and shares must be whole numbers, like 100 5."),
        "not_positive": _("⚠️ Points and shares must be positive whole numbers."),
        "too_large": _("⚠️ At most {max} points per red packet in this pond.").format(
            max=max_total
        ),
        "total_too_large": _("⚠️ At most {max} points per red packet in this pond.").format(
            max=max_total
        ),
        "too_many_shares": _("⚠️ At most {max} shares per red packet in this pond.").format(
            max=max_shares
        ),
        "share_below_one": _("⚠️ Every share needs at least 1 point: total ≥ shares."),
        "bad_password": _("⚠️ The password can't be empty or start with /."),
        "password_too_long": _("⚠️ The password is too long (32 characters at most)."),
        "bad_duration": _("⚠️ Durations look like 30s, 10m, 2h or 1d."),
        "expiry_too_long": _("⚠️ A red packet lasts {hours} hours at most.").format(
            hours=max_expiry_hours
        ),
    }
    return refusal(messages, code, usage())


def bad_args(code: str, limits: PacketLimits) -> str:
    """`parse_error` for the pond's `limits`."""
    return parse_error(
        code,
        max_total=limits.max_total,
        max_shares=limits.max_shares,
        max_expiry_hours=int(limits.max_expiry.total_seconds() // 3600),
    )


def groups_only() -> str:
    return _("🧧 Red packets are sent in a pond (a group chat), not here.")


def members_may_not_send() -> str:
    return _("⛔ In this pond only the operators send red packets.")


def not_a_member() -> str:
    return _("⚠️ Bots, channels and anonymous senders can't send red packets.")


def insufficient(balance: int, total: int) -> str:
    return _(
        "⚠️ You have {balance} points: a red packet of {total} points is paid from your own "
        "balance."
    ).format(balance=balance, total=total)


def button() -> str:
    return _("🧧 Grab")


def _mode(mode: str) -> str:
    return _("lucky draw") if mode == SplitMode.random else _("equal shares")


def _header(card: PacketCard) -> list[str]:
    if card.shop_funded:
        head = _("🧧 <b>A red packet from the shop</b> ({name}): <b>{total}</b> points, "
                 "{shares} shares, {mode}")
    else:
        head = _("🧧 <b>{name}</b> sent a red packet: <b>{total}</b> points, {shares} shares, "
                 "{mode}")
    # The id (`#12`) is what an operator names in `/redpacket recall 12`.
    lines = [
        head.format(
            name=_name(card.funder_name), total=card.total, shares=card.shares,
            mode=_mode(card.mode),
        )
        + f" · #{card.id}"
    ]
    if card.segment is not None:  # a drop `to=<segment>`: the others can't grab it
        lines.append(for_segment(card.segment))
    if card.password is not None:
        lines.append(
            _("🔑 Password: <code>{password}</code> — type it in this group to grab").format(
                password=html.quote(card.password)
            )
        )
    return lines


def for_segment(segment: str) -> str:
    """A targeted packet's line on its post (and the toast to a member outside it)."""
    return _("🎯 For our {name} members only — nobody else can grab it.").format(
        name=segment_name(segment)
    )


def post(card: PacketCard, timezone: str) -> str:
    """The packet's message while it is open (also its progress edits)."""
    lines = _header(card)
    lines.append(
        _("Grabbed {taken}/{shares} · open until {until}").format(
            taken=card.taken, shares=card.shares, until=local_time(card.expires_at, timezone)
        )
    )
    return "\n".join(lines)


def result(card: PacketCard) -> str:
    """The packet's message once it is closed: who got what, and the luckiest."""
    lines = _header(card)
    if card.state is PacketState.finished:
        lines.append(_("✅ All {shares} shares grabbed.").format(shares=card.shares))
    elif card.state is PacketState.recalled:
        lines.append(
            _("↩️ Recalled: {taken}/{shares} shares grabbed.").format(
                taken=card.taken, shares=card.shares
            )
        )
        if card.refunded:
            lines.append(
                _("↩️ {points} unclaimed points went back to {name}.").format(
                    points=card.refunded, name=_name(card.funder_name)
                )
            )
    else:
        lines.append(
            _("⌛ Ended: {taken}/{shares} shares grabbed.").format(
                taken=card.taken, shares=card.shares
            )
        )
        if card.refunded:
            lines.append(
                _("↩️ {points} unclaimed points went back to {name}.").format(
                    points=card.refunded, name=_name(card.funder_name)
                )
            )
    best = luckiest([(g.seq, g.amount) for g in card.grabs]) if card.mode == "random" else None
    if card.grabs:
        lines.append("")
    for g in card.grabs[:RESULT_LINES]:
        crown = " 👑" if g.seq == best else ""
        lines.append(f"{_name(g.name)} — {g.amount}{crown}")
    hidden = len(card.grabs) - RESULT_LINES
    if hidden > 0:
        lines.append(_("… and {count} more").format(count=hidden))
    if best is not None and card.state is PacketState.finished:
        top = next(g for g in card.grabs if g.seq == best)
        lines.append("")
        lines.append(
            _("🏆 Luckiest: {name}, {points} points").format(
                name=_name(top.name), points=top.amount
            )
        )
    return "\n".join(lines)


def grabbed(amount: int) -> str:
    return _("🎉 You grabbed {points} points!").format(points=amount)


def grabbed_by_password(name: str, amount: int) -> str:
    return _("🧧 {name} grabbed {points} points").format(name=_name(name), points=amount)


def refused(why: Refusal, card: PacketCard | None = None) -> str:
    """A toast (answerCallbackQuery: 200 characters at most); `card`, the packet as the
    refusal read it: its password to a member who pressed instead of typing it, its
    segment to a member outside it."""
    password = card.password if card is not None else None
    segment = card.segment if card is not None else None
    if why is Refusal.already:
        return _("You already grabbed this red packet.")
    if why is Refusal.gone:
        return _("All gone — every share has been grabbed.")
    if why is Refusal.expired:
        return _("This red packet has expired.")
    if why is Refusal.recalled:
        return _("This red packet was recalled.")
    if why is Refusal.own_packet:
        return _("You can't grab your own red packet.")
    if why is Refusal.needs_password:
        if password:
            return _("🔑 Type the password in the group to grab: {password}").format(
                password=password
            )
        return _("🔑 Type the password in the group to grab.")
    if why is Refusal.not_member:
        return _("Only members can grab red packets.")
    if why is Refusal.not_ready:
        return _("This red packet is not ready yet — try again in a moment.")
    if why is Refusal.not_for_you and segment is not None:
        return for_segment(segment)
    return _("This red packet is not for you.")


# -- recall -------------------------------------------------------------------------


def usage_recall() -> str:
    return "⚠️ " + html.quote(_(
        "Usage: /redpacket recall <id> — the id is the #number on the packet's post, "
        "e.g. /redpacket recall 12"
    ))


def recalled(card: PacketCard) -> str:
    """The answer to `/redpacket recall`: what it did."""
    grabbed = sum(g.amount for g in card.grabs)
    head = _(
        "↩️ Red packet #{id} recalled: {taken}/{shares} shares were grabbed ({grabbed} points)."
    ).format(id=card.id, taken=card.taken, shares=card.shares, grabbed=grabbed)
    left = card.total - grabbed
    if card.refunded:
        tail = _("{points} unclaimed points went back to {name}.").format(
            points=card.refunded, name=_name(card.funder_name)
        )
    elif card.shop_funded and left:
        tail = _(
            "The shop paid it: its {points} unclaimed points are simply not given out."
        ).format(points=left)
    else:
        tail = _("Nothing was left to give back.")
    return head + " " + tail + " " + _("Later presses get nothing.")


def recall_unknown(packet_id: int) -> str:
    return _("⚠️ There is no red packet #{id} in this pond.").format(id=packet_id)


def recall_not_allowed() -> str:
    return _("⛔ Only the operators, or the member who sent it, can recall a red packet.")


def recall_closed(card: PacketCard) -> str:
    if card.state is PacketState.finished:
        return _("ℹ️ Red packet #{id} is over already: every share was grabbed.").format(
            id=card.id
        )
    if card.state is PacketState.recalled:
        return _("ℹ️ Red packet #{id} was recalled already.").format(id=card.id)
    return _("ℹ️ Red packet #{id} has expired already; what was left went back then.").format(
        id=card.id
    )
