"""Texts of surveys (问卷), segments (/segments) and posts `to=<segment>` (F10).

Every piece of user text (questions, options, keys) is escaped here, once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiogram import html
from aiogram.utils.i18n import gettext as _

from games.segments import CHURN, TARGETS, Segment
from services.texts import clip, polls, refusal
from storage.surveys import SurveyView


def usage_survey() -> str:
    return html.quote(
        _(
            "Usage: /survey <duration> <key> <question> | <option 1> | <option 2> … — "
            "e.g. /survey 1d skin Your skin type? | Dry | Oily | Combination. Answers go "
            "to the members' profiles under <key>."
        )
    )


def survey_error(code: str) -> str:
    messages = {
        "bad_key": _(
            "⚠️ The key is one word of at most 32 letters, digits, _ or - (e.g. skin)."
        ),
        "bad_duration": _("⚠️ Write the duration like 30s, 10m, 2h or 1d."),
        "too_large": _("⚠️ A survey lasts at most 30 days."),
        "too_short": _("⚠️ A survey lasts at least 10 seconds."),
        "too_few_options": _("⚠️ A survey needs at least 2 options."),
        "too_many_options": _("⚠️ A survey takes at most 10 options."),
        "question_too_long": _("⚠️ The question is too long (255 characters at most)."),
        "option_too_long": _("⚠️ An option is too long (100 characters at most)."),
        "empty_option": _("⚠️ An option is empty."),
        "duplicate_option": _("⚠️ Two options are the same."),
    }
    return refusal(messages, code, usage_survey())


def survey_post(
    view: SurveyView, counts: Sequence[int], timezone: str, *, closed: bool = False
) -> str:
    return polls.post(
        view,
        counts,
        timezone,
        closed=closed,
        title=_("📋 <b>Survey</b>: {question}"),
        closed_line=_("Closed · {total} answered"),
        open_line=_("{total} answered · closes {time}"),
        points_line=_("Answer with the buttons: +{points} points, once."),
    )


def survey_result(view: SurveyView, counts: Sequence[int]) -> str:
    return polls.result(
        view,
        counts,
        title=_("📊 <b>Survey result</b>: {question}"),
        total_line=_("{total} answered. Thank you!"),
    )


def survey_toast(kind: str, option: str, paid: int) -> str:
    return polls.toast(
        kind,
        option,
        paid,
        changed=_("🔁 Answer changed to: {option}"),
        same=_("You already answered: {option}"),
        done=_("✅ Answered: {option}"),
        points=_("+{points} points · "),
    )


def survey_closed_toast() -> str:
    return _("⌛ This survey has closed.")


def survey_not_ready_toast() -> str:
    return _("⏳ This survey is not ready yet — try again in a moment.")


def bots_cannot_answer() -> str:
    return _("⚠️ Only members can answer.")


# -- segments ---------------------------------------------------------------------------


def segment_name(segment: str) -> str:
    names = {
        Segment.gold: _("gold (重要价值)"),
        Segment.key: _("key development (重点发展)"),
        Segment.ordinary: _("ordinary (一般)"),
        Segment.low: _("low value (低价值)"),
        CHURN: _("churn risk"),
    }
    return names.get(segment, segment)


def segments_report(
    counts: Mapping[Segment, int], churn: int, linked: Mapping[str, int], days: Mapping[str, int]
) -> str:
    total = sum(counts.values())
    lines = [_("👥 <b>Segments</b> of this pond's {total} members").format(total=total), ""]
    for segment in Segment:
        lines.append(
            _("{name}: <b>{n}</b> ({linked} reachable by DM) · to={key}").format(
                name=segment_name(segment), n=counts.get(segment, 0),
                linked=linked.get(segment, 0), key=segment,
            )
        )
    lines.append(
        _("⚠️ churn risk (no activity for {days} days): <b>{n}</b> ({linked} reachable by "
          "DM) · to=churn").format(days=days["churn"], n=churn, linked=linked.get(CHURN, 0))
    )
    lines += [
        "",
        _(
            "RFM: a purchase within {recent} days, {orders}+ orders, ¥{spend}+ spent — "
            "all three gold, two key, one ordinary, none low. Target with "
            "/promo at … to=gold or /redpacket at … to=churn."
        ).format(recent=days["recent"], orders=days["orders"], spend=days["spend"]),
    ]
    return "\n".join(lines)


def chart_labels() -> list[str]:
    return [segment_name(s) for s in Segment]


def bad_target(value: str) -> str:
    return _("⚠️ Unknown segment “{value}”. Use to= one of: {choices}").format(
        value=html.quote(clip(value, 20)), choices=", ".join(TARGETS)
    )


def segment_in_pond_only() -> str:
    return html.quote(_("⚠️ to=<segment> works in a pond: send the command there."))


def segment_scheduled(segment: str) -> str:
    """Added to a post's or drop's confirmation: who receives it."""
    return _("📬 By DM to this pond's members in segment {name} who opened a chat with me.").format(
        name=segment_name(segment)
    )


def drop_dm(pond_title: str, packet_id: int, segment: str) -> str:
    """The DM to a segment's members when a targeted red-packet drop fires: the packet
    is theirs (only the segment's members can grab it)."""
    return _(
        "🧧 A red packet (#{id}) just dropped in {pond}, only for our {name} members — "
        "open the group and grab it!"
    ).format(id=packet_id, pond=html.quote(pond_title), name=segment_name(segment))


def segments_chart_title() -> str:
    return _("Segments")


def segments_chart_members() -> str:
    return _("Members per segment")


def segments_chart_churn() -> str:
    return _("Churn risk")


def active_label() -> str:
    return _("active")


def drop_scheduled(segment: str) -> str:
    """Added to a targeted drop's confirmation: the packet is in the group, as always,
    for the segment's members only; the linked ones are told of it by DM."""
    return _(
        "📬 Each time, only this pond's members in segment {name} can grab the packet; "
        "those who opened a chat with me are told of it by DM."
    ).format(name=segment_name(segment))
