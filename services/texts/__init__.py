"""Every text pondbot says, in one place.

Message ids are English; `services/locales/<lang>/LC_MESSAGES/pondbot.po` holds the
translations (Chinese is the default language). Everything that comes from a person —
names, reasons — passes `html.quote` exactly once, here, before it reaches Telegram.
"""

from __future__ import annotations

from datetime import datetime

from aiogram import html
from aiogram.utils.i18n import gettext as _

from games.checkin import zone
from storage.repo import MemberView


def N_(text: str) -> str:
    """Marks a text for translation where it is defined; `_()` translates it when used."""
    return text


MEMBER_COMMANDS: tuple[tuple[str, str], ...] = (
    ("checkin", N_("Daily check-in (or just type 签到)")),
    ("makeup", N_("Make up the last missed check-in")),
    ("points", N_("My points, streak and rank")),
    ("top", N_("Leaderboard (/top streak: longest streaks)")),
    ("guess", N_("Guess the price in the open round: /guess 88")),
    ("invite", N_("My personal invite link")),
    ("redpacket", N_("Send a red packet from my points: /redpacket 50 5 · /redpacket recall 12")),
    ("shop", N_("The points shop: what my points buy")),
    ("redeem", N_("Redeem an item: /redeem 3 (the code comes by private chat)")),
    ("mine", N_("My redemptions and draws")),
    ("me", N_("My members' page: balance, history, check-ins and the shop")),
    ("draw", N_("Lucky draw: free ones every day, then paid in points")),
    ("tasks", N_("Today's tasks in the pond and the bonus for doing them all")),
    ("birthday", N_("My birthday for a greeting and a gift: /birthday 11-05 (private chat)")),
    ("help", N_("What I can do")),
)
OPERATOR_COMMANDS: tuple[tuple[str, str], ...] = (
    ("give", N_("Give points: /give @user 50 reason")),
    ("take", N_("Take points: /take @user 20 reason")),
    ("order", N_("Record a purchase: /order @user 299.50 [order_no]")),
    ("item", N_("Shop items: /item add 30 100 满100减10 · /item list · /item codes 3")),
    ("redemptions", N_("Redemptions (codes only in private): /redemptions [item]")),
    ("refund", N_("Cancel a redemption and refund it: /refund 12 [reason]")),
    ("fulfil", N_("Mark goods handed over: /fulfil 12")),
    ("prize", N_("Lottery prizes: /prize add 10 5 points=50 Fifty · /prize list · /prize off 3")),
    ("lottery", N_("Post the lottery board with its 🎰 button")),
    ("board", N_("Post the check-in board")),
    ("guessprice", N_("Open a guess-the-price round · /guessprice cancel")),
    ("vote", N_("Open a vote: /vote 1h Question | A | B · /vote close · /vote cancel")),
    ("survey", N_("A survey into the profiles: /survey 1d skin Your skin? | Dry | Oily")),
    ("segments", N_(
        "Members per segment (RFM) and at churn risk, with a chart; posts and drops to one "
        "segment by DM: /promo at +1h text to=gold"
    )),
    ("promo", N_(
        "Schedule a promotion post: /promo at +2h text · red-packet drops: "
        "/redpacket every 0 20 * * * 100 10 [phase=预热] · /promo list"
    )),
    ("campaign", N_("Sale campaigns: /campaign 双十一 11-11")),
    ("plan", N_("How many to invite: /plan 200 5")),
    ("stats", N_("The pond's figures with a chart: /stats [7d|30d]")),
    ("export", N_("CSV to your private chat: /export [members|ledger|votes|orders|…]")),
    ("review", N_("A campaign's review (复盘): /review 双十一 [200 5]")),
    ("settings", N_("Settings: /settings · /settings checkin_base=8 timezone=Asia/Shanghai")),
)

# Shown to global operators (OPERATOR_IDS) in a private chat only.
GLOBAL_OPERATOR_COMMANDS: tuple[tuple[str, str], ...] = (
    ("ponds", N_("Which groups are ponds: /ponds approve CHAT_ID, /ponds revoke CHAT_ID")),
)


NAME_MAX = 24  # characters of a member's name shown in a pond's posts and lists
MEDALS = {1: "🥇", 2: "🥈", 3: "🥉"}


def clip(text: str, limit: int) -> str:
    """`text` in at most `limit` characters: cut, the last one an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def short_name(name: str) -> str:
    """A member's name for boards, lists and results: clipped, then escaped."""
    return html.quote(clip(name, NAME_MAX))


def place(rank: int) -> str:
    """A leaderboard place: a medal for the first three, else `4.`."""
    return MEDALS.get(rank, f"{rank}.")


def refusal(messages: dict[str, str], code: str, usage_text: str) -> str:
    """The message for a refused command's `code`, then how to use the command; for a
    code without its own message, the usage alone."""
    head = messages.get(code)
    return f"{head}\n{usage_text}" if head else f"⚠️ {usage_text}"


def local_time(at: datetime, timezone: str, fmt: str = "%m-%d %H:%M") -> str:
    """`at` on the clock of `timezone`; an unknown zone name reads as the shop's default
    one (`games.checkin.zone`), so a bad setting never breaks a post."""
    return at.astimezone(zone(timezone)).strftime(fmt)


def command_description(text: str) -> str:
    return _(text)


def name_of(member: MemberView | None, fallback: str = "?") -> str:
    return html.quote(member.display_name if member else fallback)


def help_text(*, operator: bool, global_operator: bool = False) -> str:
    lines = [_("🐟 <b>pondbot</b> — what you can do here:")]
    lines += [f"/{cmd} — {_(desc)}" for cmd, desc in MEMBER_COMMANDS]
    if operator:
        lines.append("")
        lines.append(_("<b>Operator commands</b>:"))
        lines += [f"/{cmd} — {_(desc)}" for cmd, desc in OPERATOR_COMMANDS]
        if global_operator:
            lines += [f"/{cmd} — {_(desc)}" for cmd, desc in GLOBAL_OPERATOR_COMMANDS]
    return "\n".join(lines)


def start_private(first_name: str, *, operator: bool, global_operator: bool = False) -> str:
    greeting = _(
        "👋 Hi {name}! Your private chat with me is linked: coupon codes and "
        "personal notices will arrive here."
    ).format(name=html.quote(first_name))
    return greeting + "\n\n" + help_text(operator=operator, global_operator=global_operator)


def welcome_pond(title: str) -> str:
    return _(
        "🐟 Hello, {title}! I keep your points: check in daily, play, and trade points "
        "for coupons. Type /help to see what I can do."
    ).format(title=html.quote(title))


def points(member: MemberView, rank: int | None, tier: str | None = None) -> str:
    """`tier`: the tier as the caller words it (see texts.orders); else the stored name,
    escaped here."""
    rank_text = f"#{rank}" if rank else "—"
    tier = tier if tier is not None else html.quote(member.tier or _("member"))
    return _(
        "💰 {name}: <b>{balance}</b> points\nRank {rank} · streak {streak} days · tier {tier}"
    ).format(
        name=html.quote(member.display_name),
        balance=member.balance,
        rank=rank_text,
        streak=member.streak,
        tier=tier,
    )


def no_points_yet(name: str) -> str:
    return _("💰 {name}: <b>0</b> points. Join in the pond's games to start earning!").format(
        name=html.quote(name)
    )


def top(members: list[MemberView]) -> str:
    if not members:
        return _("🏆 Nobody has points yet. Be the first!")
    lines = [_("🏆 <b>Points leaderboard</b>")]
    for i, m in enumerate(members, start=1):
        lines.append(f"{place(i)} {html.quote(m.display_name)} — {m.balance}")
    return "\n".join(lines)


def adjusted(member: MemberView, delta: int, reason: str) -> str:
    sign = "+" if delta > 0 else "−"
    text = _("✅ {name} {sign}{points} points. Balance: {balance}").format(
        name=html.quote(member.display_name),
        sign=sign,
        points=abs(delta),
        balance=member.balance,
    )
    if reason:
        text += "\n" + _("Reason: {reason}").format(reason=html.quote(reason))
    return text


def usage(command: str) -> str:
    if command == "take":
        return _("Usage: /take @username 20 [reason] — or reply to a member: /take 20 [reason]")
    return _("Usage: /give @username 50 [reason] — or reply to a member: /give 50 [reason]")


def parse_error(code: str, command: str) -> str:
    messages = {
        "not_a_number": _("⚠️ Points must be a whole number, like 50."),
        "not_positive": _("⚠️ Points must be a positive whole number."),
        "too_large": _("⚠️ That is too many points for one command."),
        "reason_too_long": _("⚠️ The reason is too long (200 characters at most)."),
        "bad_target": _(
            "⚠️ Name the member as @username or a numeric user id, or reply to their message."
        ),
    }
    return refusal(messages, code, usage(command))


def member_not_found(who: str) -> str:
    return _(
        "⚠️ I don't know {who} yet: they need to write in a pond (or press a button) first."
    ).format(who=html.quote(who))


def cannot_target_bot() -> str:
    return _("⚠️ Bots and anonymous senders can't hold points.")


def insufficient(member: MemberView, needed: int) -> str:
    return _("⚠️ {name} has only {balance} points, can't take {needed}.").format(
        name=html.quote(member.display_name), balance=member.balance, needed=needed
    )


def operators_only() -> str:
    return _("⛔ Only the pond's operators can do that.")
