"""What promotion posts, campaigns and the planner say (F11). Everything an operator
typed passes `html.quote` once, here — except the post body, which is rendered and
quoted by `post_body` at send time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime

from aiogram import html
from aiogram.utils.i18n import gettext as _

from games.campaign import Campaign, DayRange, Phase
from games.promo import Plan
from services.texts import clip, local_time, refusal
from storage.models import Job

TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
SNIPPET = 40


def phase_labels() -> dict[Phase, str]:
    return {
        Phase.buildup: _("build-up"),
        Phase.warmup: _("warm-up"),
        Phase.sprint: _("sprint"),
        Phase.afterglow: _("after-glow"),
    }


def post_body(rendered: str, limit: int) -> str:
    """The post as Telegram gets it: the operator's text (placeholders filled in), cut to
    Telegram's limit and escaped once."""
    if utf16_len(rendered) > limit:
        kept, used = [], 0
        for ch in rendered:
            used += 2 if ord(ch) > 0xFFFF else 1
            if used > limit - 1:
                break
            kept.append(ch)
        rendered = "".join(kept) + "…"
    return html.quote(rendered)


def utf16_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def local(at: datetime, timezone: str) -> str:
    return local_time(at, timezone, "%Y-%m-%d %H:%M")


def _day(d: date) -> str:
    return d.strftime("%m-%d")


def _range(r: DayRange) -> str:
    return _day(r.first) if r.first == r.last else f"{_day(r.first)}..{_day(r.last)}"


# -- /promo -----------------------------------------------------------------------------


def usage() -> str:
    return html.quote(
        _(
            "Usage: /promo at <YYYY-MM-DD HH:MM|+duration> [pin] <text> · "
            "/promo every <cron: min hour day month weekday> [pin] <text> · "
            "/promo list · /promo cancel <id>\n"
            "A last line [button text](https://…) adds a link button; reply to a photo to post "
            "it with the text as caption. The text may use {campaign}, {phase}, {days_left}, "
            "{date}."
        )
    )


def parse_error(code: str) -> str:
    messages = {
        "bad_time": _("⚠️ Give the time as YYYY-MM-DD HH:MM (the pond's time) or +2h."),
        "bad_duration": _("⚠️ Give the delay like +30m, +2h or +1d."),
        "too_large": _("⚠️ That is more than a year ahead."),
        "too_far": _("⚠️ That is more than a year ahead."),
        "in_the_past": _("⚠️ That time has already passed."),
        "bad_cron": _(
            "⚠️ The schedule needs 5 crontab fields: minute hour day month weekday, "
            "e.g. 0 20 * * 5 (Fridays at 20:00)."
        ),
        "no_text": _("⚠️ The post needs a text."),
        "bad_url": _("⚠️ The button needs an http:// or https:// link."),
        "bad_button": _("⚠️ Write the button as [button text](https://…) on the last line."),
        "bad_id": _("⚠️ Give the post's number, like /promo cancel 12."),
        "text_too_long": _("⚠️ The post is too long: at most {limit} characters.").format(
            limit=TEXT_LIMIT
        ),
        "caption_too_long": _(
            "⚠️ A photo caption holds at most {limit} characters: shorten the text."
        ).format(limit=CAPTION_LIMIT),
    }
    return refusal(messages, code, usage())


def no_ponds() -> str:
    return _("⚠️ There is no active pond to post to.")


def when(kind: str, at: datetime, cron: str | None, timezone: str) -> str:
    if kind == "every":
        return _("every <code>{cron}</code> (next {next}, {tz})").format(
            cron=html.quote(cron or ""), next=local(at, timezone), tz=html.quote(timezone)
        )
    return _("{at} ({tz})").format(at=local(at, timezone), tz=html.quote(timezone))


def pond_title(title: str) -> str:
    return html.quote(clip(title, 40))


def where(chat_id: int | None, ponds: int) -> str:
    if chat_id is None:
        return _("all active ponds ({count})").format(count=ponds)
    return _("this pond")


def over_cap(
    days: int, conflict: datetime | None, next_allowed: datetime | None, timezone: str, ponds: int
) -> str:
    text = _(
        "⛔ Over the frequency cap: at most one marketing post per {days} days in a pond "
        "outside the warm-up and sprint phases."
    ).format(days=days)
    if conflict is not None:
        text += "\n" + _("Another post is at {at}.").format(at=local(conflict, timezone))
    if ponds > 1:
        text += "\n" + _("Ponds over the cap: {count}.").format(count=ponds)
    if next_allowed is not None:
        text += "\n" + _("Next allowed time: {at} ({tz}).").format(
            at=local(next_allowed, timezone), tz=html.quote(timezone)
        )
    return text


def preview(
    post_id: int,
    when_text: str,
    where_text: str,
    *,
    pin: bool,
    recurring: bool,
    needs_campaign: bool,
) -> str:
    lines = [
        _(
            "👀 <b>Preview of post #{id}</b> (above). Nothing is scheduled until you confirm."
        ).format(id=post_id),
        _("When: {when}").format(when=when_text),
        _("Where: {where}").format(where=where_text),
    ]
    if pin:
        lines.append(_("The post will be pinned."))
    if recurring:
        lines.append(
            _("Recurring posts keep the frequency cap: a time over it is skipped in that pond.")
        )
    if needs_campaign:
        lines.append(
            html.quote(
                _(
                    "⚠️ No campaign covers that time: {campaign}, {phase} and {days_left} will "
                    "be empty. Create one with /campaign <name> <MM-DD>."
                )
            )
        )
    return "\n".join(lines)


def preview_elsewhere() -> str:
    return _("👀 I sent you the preview in private: confirm it there.")


def confirm_button() -> str:
    return _("✅ Schedule it")


def discard_button() -> str:
    return _("✖️ Discard")


def scheduled(post_id: int, when_text: str, where_text: str) -> str:
    return _(
        "✅ Post #{id} is scheduled: {when} · {where}.\nCancel it with /promo cancel {id}."
    ).format(id=post_id, when=when_text, where=where_text)


def discarded(post_id: int) -> str:
    return _("✖️ Preview #{id} discarded: nothing was scheduled.").format(id=post_id)


def toast_scheduled() -> str:
    return _("✅ Scheduled")


def toast_discarded() -> str:
    return _("Discarded")


def toast_not_author() -> str:
    return _("⛔ Only the operator who wrote this post can confirm it.")


def toast_done_already() -> str:
    return _("This preview was already handled.")


def toast_too_late() -> str:
    return _("⚠️ That time has passed: send the command again.")


def toast_over_cap() -> str:
    return _("⛔ Over the frequency cap: see the message.")


def by_dm_to(place: str, segment: str) -> str:
    """Where a `to=<segment>` post goes: by DM to that segment's members of `place`."""
    return _("{place}, by DM to {segment} members").format(place=place, segment=segment)


def listing(
    posts: Sequence[tuple[int, str, str, str, str | None]],
    attention: Sequence[str] = (),
) -> str:
    """(id, when, where, text, schedule state) per post, then the `attention` lines
    (scheduled work that is stuck, retrying or failed: `trouble()`)."""
    tail: list[str] = []
    if attention:
        tail = ["", _("⚠️ <b>Scheduled work that needs attention</b>"), *attention]
    if not posts:
        return "\n".join([_("📋 No scheduled posts. Create one: /promo at +1h Hello"), *tail])
    lines = [_("📋 <b>Scheduled posts</b>")]
    room = TEXT_LIMIT - 200 - sum(len(x) + 1 for x in tail)
    for post_id, when_text, where_text, text, state in posts:
        snippet = text.replace("\n", " ")
        snippet = clip(snippet, SNIPPET)
        mark = ""
        if state == "missed":
            mark = " " + _("(missed while the bot was down)")
        elif state == "failed":
            mark = " " + _("(failed)")
        elif state in ("done", "running"):
            mark = " " + _("(sent)")
        line = f"#{post_id} · {when_text} · {where_text}{mark}\n   {html.quote(snippet)}"
        if sum(len(x) + 1 for x in lines) + len(line) > room:
            lines.append("…")
            break
        lines.append(line)
    lines.append(html.quote(_("Cancel one with /promo cancel <id>.")))
    return "\n".join(lines + tail)


ERROR_SNIPPET = 60


def task_label(job: str, payload: Mapping[str, object], key: str) -> str:
    """What a scheduled task is, in an operator's words."""
    labels: dict[str, tuple[str, str]] = {
        Job.guess_close: (_("closing guess round #{id}"), "round_id"),
        Job.vote_close: (_("closing vote #{id}"), "vote_id"),
        Job.red_packet_expire: (_("refund of red packet #{id}"), "packet_id"),
        Job.red_packet_drop: (_("red-packet drop #{id}"), "post_id"),
        Job.promo_post: (_("post #{id}"), "post_id"),
        Job.promo_deliver: (_("delivery of post #{id}"), "post_id"),
    }
    if job == Job.invite_credit:
        return _("referral credits")
    found = labels.get(job)
    if found is None or found[1] not in payload:
        return key
    return found[0].format(id=payload[found[1]])


def trouble(
    kind: str,
    label: str,
    attempts: int,
    at: datetime | None,
    error: str,
    timezone: str,
) -> str:
    """One line about a task that is stuck (`stuck`), `retrying` or `failed`."""
    when = local(at, timezone) if at is not None else "—"
    error = " ".join(error.split())
    error = clip(error, ERROR_SNIPPET)
    values = {
        "task": html.quote(label),
        "attempts": attempts,
        "at": when,
        "error": html.quote(error or "?"),
    }
    if kind == "stuck":
        return _(
            "⏳ {task}: running, but its process has been silent since {at}; "
            "it is taken over while the bot runs."
        ).format(**values)
    if kind == "retrying":
        return _("🔁 {task}: attempt {attempts} failed ({error}); next attempt {at}.").format(
            **values
        )
    return _("❌ {task}: gave up after {attempts} attempts ({error}), {at}.").format(**values)


def cancelled(post_id: int) -> str:
    return _("🗑 Post #{id} cancelled.").format(id=post_id)


def not_found(post_id: int) -> str:
    return _("⚠️ There is no scheduled post #{id} here.").format(id=post_id)


def broadcast_report(post_id: int, counts: Mapping[str, int]) -> str:
    text = _(
        "📣 Post #{id} went out: {sent} sent, {skipped} skipped (bot removed), "
        "{capped} over the frequency cap, {failed} failed."
    ).format(
        id=post_id,
        sent=counts.get("sent", 0),
        skipped=counts.get("skipped", 0),
        capped=counts.get("capped", 0),
        failed=counts.get("failed", 0),
    )
    unknown = counts.get("unknown", 0)
    if unknown:
        text += "\n" + _(
            "{count} pond(s) may have missed it: the bot stopped while sending to them, and "
            "a post is never sent twice."
        ).format(count=unknown)
    return text


# -- /campaign --------------------------------------------------------------------------


def campaign_usage() -> str:
    return html.quote(
        _(
            "Usage: /campaign <name> <MM-DD> (create, e.g. /campaign 双十一 11-11) · "
            "/campaign <name> phase <build-up|warm-up|sprint|after-glow> <MM-DD>..<MM-DD> · "
            "/campaign <name> delete · /campaign (show the timeline)"
        )
    )


def campaign_error(code: str) -> str:
    messages = {
        "bad_name": _("⚠️ A campaign name is one word of at most 32 characters, like 双十一."),
        "bad_date": _("⚠️ Give the day as MM-DD, like 11-11."),
        "bad_phase": _("⚠️ Phases are 蓄势 build-up, 预热 warm-up, 冲刺 sprint, 余温 after-glow."),
        "bad_range": _("⚠️ Give the phase as MM-DD..MM-DD, first day first."),
    }
    return refusal(messages, code, campaign_usage())


def campaign_missing(name: str) -> str:
    return _("⚠️ There is no campaign {name} here.").format(name=html.quote(name))


def campaign_deleted(name: str) -> str:
    return _("🗑 Campaign {name} deleted.").format(name=html.quote(name))


def no_campaigns() -> str:
    return _("📅 No campaigns yet. Create one: /campaign 双十一 11-11")


def timeline(
    campaign: Campaign,
    today: date,
    posts: Mapping[Phase, Sequence[str]],
    *,
    shop_wide: bool,
) -> str:
    """One campaign's phases, the current one marked, with the posts in each."""
    labels = phase_labels()
    current = campaign.phase_on(today)
    head = _("📅 <b>{name}</b> — sale day {day}, {days} days left").format(
        name=html.quote(campaign.name),
        day=campaign.sale_day.isoformat(),
        days=campaign.days_left(today),
    )
    if shop_wide:
        head += " · " + _("all ponds")
    lines = [head]
    for phase, days in campaign.timeline():
        marker = "▶️" if phase == current else "·"
        scheduled_here = posts.get(phase, ())
        line = f"{marker} {labels[phase]} {_range(days)}"
        if scheduled_here:
            shown = ", ".join(scheduled_here[:8])
            more = len(scheduled_here) - 8
            line += " — " + shown + (f" +{more}" if more > 0 else "")
        else:
            line += " — " + _("nothing scheduled")
        lines.append(line)
    return "\n".join(lines)


def campaigns(blocks: Sequence[str]) -> str:
    """Whole campaigns only, as many as fit in one message (never a cut HTML tag)."""
    shown: list[str] = []
    for block in blocks:
        if len("\n\n".join([*shown, block])) > TEXT_LIMIT - 16:
            shown.append("…")
            break
        shown.append(block)
    return "\n\n".join(shown)


# -- /plan ------------------------------------------------------------------------------


def plan_usage() -> str:
    return html.quote(_("Usage: /plan <sales> <items per buyer> — e.g. /plan 200 5"))


def plan(p: Plan) -> str:
    return _(
        "🧮 <b>Plan</b>: {sales} items at {per} per buyer → <b>{buyers}</b> buyers.\n"
        "With the 20–30 % who don't show up, invite {low}–{high} people (≈{mid})."
    ).format(
        sales=p.sales,
        per=p.per_buyer,
        buyers=p.buyers,
        low=p.invite_low,
        high=p.invite_high,
        mid=p.invite,
    )
