"""Texts of `/settings` (SPEC F12): what each setting means, the list, the errors."""

from __future__ import annotations

from aiogram import html
from aiogram.utils.i18n import gettext as _

from games.settings import SHOP_WIDE, Allowed, Effective, SettingError, allowed, setting_names
from services.texts import N_

# What each setting means, by name: every setting has one (a test checks it).
DESCRIPTIONS: dict[str, str] = {
    "timezone": N_("Time zone of the pond's day (IANA name, e.g. Asia/Shanghai)"),
    "language": N_("Language of the bot's replies and posts"),
    "operator_give_daily_cap": N_("Points a pond admin may /give per day"),
    "checkin_base": N_("Points for a daily check-in"),
    "checkin_streak_step": N_("Extra points per day of a check-in streak"),
    "checkin_streak_cap": N_("Most extra points a streak adds"),
    "checkin_milestones": N_("Bonus at streak days (day:bonus,…)"),
    "checkin_makeup_cost": N_("Points a make-up check-in costs"),
    "checkin_makeup_every_days": N_("One make-up allowed per this many days"),
    "checkin_makeup_window_days": N_("How many days back a make-up may reach"),
    "checkin_quiet_below": N_("Check-ins get their own reply below this many messages a minute"),
    "redpacket_max_total": N_("Most points in one red packet"),
    "redpacket_max_shares": N_("Most shares in one red packet"),
    "redpacket_expiry_seconds": N_("Seconds until an unclaimed red packet is refunded"),
    "redpacket_max_expiry_seconds": N_("Longest expiry a red packet may ask for (seconds)"),
    "redpacket_members_may_send": N_("Whether members may send red packets"),
    "guess_attempts": N_("Guesses per member in a hit-mode round"),
    "guess_winners": N_("Winners of a guess-the-price round"),
    "guess_tolerance_cents": N_("How close a hit must be (cents; 0 = exact)"),
    "guess_quiet_below": N_("Guesses get their own reply below this many messages a minute"),
    "vote_points": N_("Points for voting"),
    "referral_points": N_("Points for inviting a new member"),
    "task_bonus": N_("Bonus for doing all of a day's tasks (/tasks), once a day"),
    "birthday_points": N_("Points a member gets on their birthday (/birthday)"),
    "birthday_hour": N_("Hour of the day the birthday greeting goes out (shop's time zone)"),
    "points_expiry_days": N_("Days after which earned points expire (0 = never)"),
    "points_expiry_reminder_days": N_("Days before expiry a member is reminded by DM"),
    "promo_grace_minutes": N_("Minutes a late promotion post may still go out"),
    "promo_cap_days": N_("At most one promotion post per this many days (0 = no cap)"),
    "promo_cap_exempt_phases": N_("Campaign phases outside that cap"),
    "lottery_free_per_day": N_("Free lottery draws per member per day"),
    "lottery_cost": N_("Points a paid lottery draw costs"),
    "lottery_quiet_below": N_("Draws get their own reply below this many messages a minute"),
    "points_per_yuan": N_("Points per yuan of a recorded purchase"),
    "tiers": N_("Member tiers by lifetime spend (name:from_yuan:discount,…)"),
    "survey_points": N_("Points for answering a survey, once per survey"),
    "segment_recent_days": N_("Segments: a purchase within this many days counts as recent"),
    "segment_min_orders": N_("Segments: orders from which a member buys often"),
    "segment_min_spend": N_("Segments: lifetime spend (yuan) from which a member spends much"),
    "churn_days": N_("Days without activity after which a member is at churn risk"),
}


def describe(name: str) -> str:
    return _(DESCRIPTIONS[name])


def usage() -> str:
    return _(
        "Usage: /settings — every setting · /settings key=value [key=value …] — change "
        "them (all or nothing). One word per value; lists comma separated without spaces: "
        "<code>checkin_milestones=7:20,30:100</code>, "
        "<code>tiers=VIP1:0.01:9.8,VIP2:300:9.5</code>, "
        "<code>promo_cap_exempt_phases=warmup,sprint</code>; switches on|off; "
        "<code>-</code> for an empty list. In a private chat, global operators change "
        "the shop-wide defaults."
    )


def _number(value: float) -> str:
    return f"{value:g}"


def what_is_allowed(spec: Allowed) -> str:
    if spec.kind in ("int", "number"):
        low = _number(spec.low) if spec.low is not None else "…"
        high = _number(spec.high) if spec.high is not None else "…"
        if spec.kind == "int":
            return _("a whole number from {low} to {high}").format(low=low, high=high)
        return _("a number from {low} to {high}").format(low=low, high=high)
    if spec.kind == "bool":
        return _("on or off")
    if spec.kind == "language":
        return _("one of: {choices}").format(choices=" | ".join(spec.choices))
    if spec.kind == "phases":
        return _("phases, comma separated, from: {choices} (or -)").format(
            choices=", ".join(spec.choices)
        )
    if spec.kind == "milestones":
        return _("day:bonus pairs, comma separated, like 7:20,30:100 (days 1–3660, "
                 "bonus 0–1000000; or -)")
    if spec.kind == "tiers":
        return _("name:from_yuan:discount, comma separated, thresholds ascending, like "
                 "VIP1:0.01:9.8,VIP2:300:9.5 (or -)")
    return _("an IANA time zone name, like Asia/Shanghai or America/New_York")


def error_line(e: SettingError) -> str:
    key = html.quote(e.key)
    if e.code == "unknown":
        line = _("⚠️ There is no setting {key}.").format(key=f"<code>{key}</code>")
        if e.suggestions:
            line += " " + _("Did you mean: {names}?").format(
                names=", ".join(f"<code>{n}</code>" for n in e.suggestions)
            )
        return line
    if e.code == "pair":
        return _("⚠️ {word} is not key=value.").format(word=f"<code>{key}</code>")
    if e.code == "twice":
        return _("⚠️ {key} is given twice.").format(key=f"<code>{key}</code>")
    if e.code == "shop_wide":
        return _(
            "⚠️ {key} is a shop-wide setting, the same in every pond: the shop's operators "
            "(OPERATOR_IDS) set it in a private chat with me, /settings {key}=…"
        ).format(key=f"<code>{key}</code>")
    line = _("⚠️ {key}: expected {allowed}.").format(
        key=f"<code>{key}</code>", allowed=html.quote(what_is_allowed(allowed(e.key)))
    )
    if e.detail:
        line += f" ({html.quote(e.detail)})"
    return line


ERRORS_SHOWN = 10  # refused pairs named in one answer (a message holds 4096 characters)


def refused(errors: list[SettingError]) -> str:
    lines = [error_line(e) for e in errors[:ERRORS_SHOWN]]
    if len(errors) > ERRORS_SHOWN:
        lines.append(_("… and {count} more.").format(count=len(errors) - ERRORS_SHOWN))
    return "\n".join([*lines, _("Nothing was changed.")])


def _line(name: str, current: Effective, defaults: Effective, *, shop_wide: bool) -> str:
    if not shop_wide and name in SHOP_WIDE:
        head = _("<code>{name}</code> = {value} · shop-wide")
    elif current.value(name) == defaults.value(name):
        head = _("<code>{name}</code> = {value} · default")
    else:
        head = _("<code>{name}</code> = <b>{value}</b> (default {default})")
    return head.format(
        name=name, value=html.quote(current.text(name)), default=html.quote(defaults.text(name))
    ) + f"\n    <i>{html.quote(describe(name))}</i>"


def listing(
    current: Effective, defaults: Effective, *, shop_wide: bool, limit: int = 3800
) -> list[str]:
    """Every setting with its value and default, as messages of at most `limit`
    characters (Telegram's limit is 4096)."""
    changed = sum(1 for n in setting_names() if current.value(n) != defaults.value(n))
    if shop_wide:
        head = _("⚙️ <b>Shop-wide defaults</b> ({changed} changed from the built-in ones)")
    elif changed:
        head = _("⚙️ <b>Settings of this pond</b> ({changed} differ from the shop's defaults)")
    else:
        head = _("⚙️ <b>Settings of this pond</b>: all are the shop's defaults")
    messages, current_text = [], head.format(changed=changed)
    for name in setting_names():
        line = _line(name, current, defaults, shop_wide=shop_wide)
        if len(current_text) + 1 + len(line) > limit:
            messages.append(current_text)
            current_text = line
        else:
            current_text += "\n" + line
    tail = "\n\n" + usage()
    if len(current_text) + len(tail) > limit:
        messages.append(current_text)
        current_text = usage()
    else:
        current_text += tail
    messages.append(current_text)
    return messages


def changed(changes: list[tuple[str, str, str]], *, shop_wide: bool, moved: int = 0) -> str:
    if not changes:
        return _("ℹ️ Nothing to change: the settings already have these values.")
    head = _("✅ Shop-wide defaults changed:") if shop_wide else _("✅ Settings changed:")
    lines = [head] + [
        f"<code>{key}</code>: {html.quote(old)} → <b>{html.quote(new)}</b>"
        for key, old, new in changes
    ]
    if shop_wide:
        lines.append(_("{count} pond(s) follow the new defaults.").format(count=moved))
    return "\n".join(lines)


def in_a_pond_or_private() -> str:
    return _("ℹ️ /settings works in a pond (its settings) or, for the shop's global "
             "operators, in a private chat with me (the shop-wide defaults).")


def shop_level_only(keys: list[str]) -> str:
    return _(
        "⛔ Only the shop's own operators (OPERATOR_IDS) change {keys}: they decide how "
        "many of the shop's points are handed out. Nothing was changed."
    ).format(keys=", ".join(f"<code>{k}</code>" for k in keys))
