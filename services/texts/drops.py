"""What scheduled red-packet drops say (F6): the command's answers and their lines in
`/promo list`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from aiogram import html
from aiogram.utils.i18n import gettext as _

from games.campaign import Phase
from games.red_packet import PacketArgs, PacketLimits
from services.texts import local_time, refusal
from services.texts import promo as promo_texts
from services.texts import red_packet as packet_texts

SHOWN_OUTCOMES = 3


def usage() -> str:
    return html.quote(
        _(
            "Usage: /redpacket at <YYYY-MM-DD HH:MM|+duration> <total> <shares> [random|equal] "
            "[pwd=<password>] [for=<duration>] · /redpacket every <cron: min hour day month "
            "weekday> <total> <shares> … [phase=warmup] — e.g. /redpacket every 0 20 * * * "
            "100 10 phase=预热"
        )
    )


def error(part: str, code: str, limits: PacketLimits) -> str:
    """Why a drop's command was refused: its time, its phase or its packet."""
    if part == "packet":
        if code == "usage":
            return f"⚠️ {usage()}"
        return packet_texts.bad_args(code, limits)
    if part == "phase":
        messages = {
            "bad_phase": _(
                "⚠️ The phase is one of buildup, warmup, sprint, afterglow (蓄势, 预热, 冲刺, 余温)."
            )
        }
        return refusal(messages, code, usage())
    if code == "usage":
        return f"⚠️ {usage()}"
    return promo_texts.parse_error(code).split("\n", 1)[0] + "\n" + usage()


def over_cap(total: int, cap: int) -> str:
    return _(
        "⛔ A drop of {total} points is more than your daily give cap in this pond ({cap}): "
        "it could never go out."
    ).format(total=total, cap=cap)


def cancelled(drop_id: int) -> str:
    return _("🗑 Drop #{id} cancelled: it makes no more red packets.").format(id=drop_id)


def _packet(args: PacketArgs) -> str:
    text = _("🧧 {total} points in {shares} shares").format(total=args.total, shares=args.shares)
    if args.password is not None:
        text += " · 🔑"
    return text


def _phase(phase: Phase | None) -> str:
    if phase is None:
        return ""
    return " · " + _("{phase} days only").format(phase=promo_texts.phase_labels()[phase])


def scheduled(drop_id: int, when: str, args: PacketArgs, phase: Phase | None) -> str:
    return _(
        "⏰ Drop #{id} scheduled: {packet}{phase}, {when}.\n"
        "Listed with /promo list; cancel it with /promo cancel {id}."
    ).format(id=drop_id, packet=_packet(args), phase=_phase(phase), when=when)


def outcome(entry: Mapping[str, Any], timezone: str) -> str | None:
    """A recorded firing (None: one not worth a line — a day outside the phase)."""
    try:
        at = local_time(datetime.fromisoformat(str(entry["at"])), timezone)
    except (KeyError, ValueError):
        return None
    what = entry.get("what")
    if what == "sent":
        return _("{at}: red packet #{packet}").format(at=at, packet=entry.get("packet", "?"))
    if what == "missed":
        return _("{at}: missed (the bot was down past the grace window)").format(at=at)
    if what == "over_cap":
        return _(
            "{at}: skipped, over the daily give cap ({cap}) of the admin who scheduled it"
        ).format(at=at, cap=entry.get("cap", "?"))
    if what == "invalid":
        return _("{at}: skipped, the pond's red packet limits no longer allow it").format(at=at)
    return None


def drop_line(
    drop_id: int,
    when: str,
    args: PacketArgs | None,
    phase: Phase | None,
    place: str,
    outcomes: Sequence[Mapping[str, Any]],
    timezone: str,
    *,
    never: bool,
) -> str:
    """One drop in `/promo list`: when it fires next, what, and its last firings."""
    packet = _packet(args) if args is not None else "🧧"
    lines = [f"#{drop_id} · {when} · {place}\n   {packet}{_phase(phase)}"]
    if never and phase is not None:
        lines.append(
            "   ⚠️ "
            + _("No campaign has {phase} days ahead: it does not fire (see /campaign).").format(
                phase=promo_texts.phase_labels()[phase]
            )
        )
    shown = [line for o in outcomes if (line := outcome(o, timezone)) is not None]
    lines += [f"   · {line}" for line in shown[-SHOWN_OUTCOMES:]]
    return "\n".join(lines)


def listing(lines: Sequence[str], room: int = 3800) -> str:
    out = [_("🧧 <b>Scheduled red-packet drops</b>")]
    for line in lines:
        if sum(len(x) + 1 for x in out) + len(line) > room:
            out.append("…")
            break
        out.append(line)
    return "\n".join(out)

