"""Texts of guess-the-price (猜价格), votes (投票) and invite links (以老带新).

Every piece of user text (product names, questions, options, names) is escaped here,
once. Nothing here is given a round's price before the round is closed: the price
reaches a text only through `reveal`, which takes a closed round's `Reveal`.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiogram import html
from aiogram.utils.i18n import gettext as _

from games.guess import Mode, Verdict, format_price
from services.texts import clip, local_time, polls, refusal, short_name
from storage.guess import Reveal, RoundView
from storage.votes import VoteView


def groups_only() -> str:
    return _("This works in a pond (a group chat), not here.")


# -- guess the price ---------------------------------------------------------------


def usage_guessprice() -> str:
    # Usage lines show <placeholders>: escaped for HTML like any text with angle brackets.
    return html.quote(
        _(
            "Usage: /guessprice <price> <duration> <prize points> <product name> "
            "[mode=closest|hit] — e.g. /guessprice 299 10m 100 Silk dress. "
            "Reply to a photo to show it."
        )
    )


def usage_guess() -> str:
    return html.quote(_("Usage: /guess <price>, e.g. /guess 88 or /guess 88.5"))


def price_error(code: str) -> str:
    messages = {
        "not_a_price": _("⚠️ That is not a price. Write it like 88 or 88.5."),
        "not_positive": _("⚠️ A price must be more than zero."),
        "too_precise": _("⚠️ At most two decimals (fen), like 88.99."),
        "too_large": _("⚠️ That price is too large."),
    }
    return messages.get(code, _("⚠️ That is not a price. Write it like 88 or 88.5."))


def round_error(code: str) -> str:
    messages = {
        "not_a_price": _("⚠️ The price must be a number like 299 or 299.5."),
        "not_positive": _("⚠️ Price and prize must be more than zero."),
        "too_precise": _("⚠️ The price takes at most two decimals."),
        "too_large": _("⚠️ A number is too large (rounds last at most 30 days)."),
        "bad_duration": _("⚠️ Write the duration like 30s, 10m, 2h or 1d."),
        "too_short": _("⚠️ A round lasts at least 10 seconds."),
        "not_a_number": _("⚠️ The prize must be a whole number of points."),
        "product_too_long": _("⚠️ The product name is too long (100 characters at most)."),
        "bad_mode": _("⚠️ The mode is mode=closest or mode=hit."),
    }
    return refusal(messages, code, usage_guessprice())


def round_busy() -> str:
    return _("⚠️ A guess-the-price round is already open in this pond. Wait for it to close.")


def round_post(view: RoundView, timezone: str) -> str:
    lines = [
        _("🏷 <b>Guess the price!</b>"),
        _("Product: <b>{product}</b>").format(product=html.quote(view.product)),
        _("Prize: <b>{prize}</b> points").format(prize=view.prize),
    ]
    if view.mode == Mode.hit:
        lines.append(
            _(
                "Mode: hit — {attempts} attempts each, I answer higher or lower in private. "
                "The first {winners} to hit the price win."
            ).format(attempts=view.max_attempts, winners=view.max_winners)
        )
    else:
        lines.append(
            _("Mode: closest — one guess each; the nearest guess wins (ties: the earliest).")
        )
    lines.append(
        _(
            "Guess with /guess and your price, or reply to this post with a number. Closes {time}."
        ).format(time=local_time(view.closes_at, timezone))
    )
    lines.append(_("🔗 Out of attempts? Each friend you bring in with /invite gives one more."))
    lines.append(_("👥 {count} taking part").format(count=view.guessers))
    return "\n".join(lines)


def no_round() -> str:
    return _("⚠️ No guess-the-price round is open here right now.")


def round_closed() -> str:
    return _("⌛ This round has closed; the price is revealed in a moment.")


def guess_received(name: str) -> str:
    return _("✅ {name}, your guess is in. The price is revealed at close.").format(
        name=short_name(name)
    )


def out_of_attempts(mode: Mode, allowed: int) -> str:
    if mode == Mode.closest and allowed <= 1:
        head = _("⚠️ You have already guessed in this round.")
    else:
        head = _("⚠️ You have used all {n} of your attempts.").format(n=allowed)
    return head + " " + _("Bring a friend in with /invite for one more.")


def already_won() -> str:
    return _("🎯 You already hit the price — wait for the reveal!")


def winners_full() -> str:
    return _("⌛ The winners are found; the price is revealed in a moment.")


def verdict(v: Verdict, attempts_left: int, won: bool) -> str:
    if v == Verdict.hit:
        if won:
            return _("🎯 Spot on! You are among the winners; the prize is paid at the reveal.")
        return _("🎯 Spot on — but the winners were already found.")
    head = _("⬆️ Higher!") if v == Verdict.too_low else _("⬇️ Lower!")
    if attempts_left > 0:
        return head + " " + _("{n} attempts left.").format(n=attempts_left)
    return head + " " + _("No attempts left — bring a friend in with /invite for one more.")


def verdict_in_group(name: str, text: str) -> str:
    return f"{short_name(name)}: {text}"


def usage_guess_cancel() -> str:
    return "⚠️ " + html.quote(_("Usage: /guessprice cancel — cancels the open round, nobody wins"))


def round_cancelled_post(view: RoundView) -> str:
    """The round's post once `/guessprice cancel` ended it (the price stays secret)."""
    return "\n".join(
        [
            _("🏷 <b>Guess the price</b> — cancelled"),
            _("Product: <b>{product}</b>").format(product=html.quote(view.product)),
            _("🚫 The shop cancelled this round: nobody wins, no prize is paid."),
        ]
    )


def round_cancelled(view: RoundView) -> str:
    """The answer to `/guessprice cancel`."""
    return _(
        "🚫 Round #{id} ({product}) cancelled: {count} took part, nobody wins and no prize "
        "is paid. The price stays secret, so you can open the same product again; a new "
        "round can open now."
    ).format(id=view.id, product=html.quote(clip(view.product, 40)), count=view.guessers)


def reveal(r: Reveal) -> str:
    lines = [
        _("🎉 <b>Price revealed!</b> {product}: <b>{price}</b>").format(
            product=html.quote(r.product), price=format_price(r.price_cents)
        ),
        _("{count} took part.").format(count=r.guessers),
    ]
    if not r.winners:
        lines.append(_("Nobody won this time."))
    else:
        lines.append(_("🏆 Winners (+{prize} points each):").format(prize=r.prize))
        shown = r.winners[:30]
        for w in shown:
            lines.append(f"• {short_name(w.name)} — {format_price(w.cents)}")
        if len(r.winners) > len(shown):
            lines.append(_("… and {n} more").format(n=len(r.winners) - len(shown)))
    return "\n".join(lines)


# -- votes ---------------------------------------------------------------------------


def usage_vote() -> str:
    return html.quote(
        _(
            "Usage: /vote <duration> <question> | <option 1> | <option 2> … "
            "(2–10 options), e.g. /vote 1h Which new colour? | Red | Blue"
        )
    )


def vote_error(code: str) -> str:
    messages = {
        "bad_duration": _("⚠️ Write the duration like 30s, 10m, 2h or 1d."),
        "too_large": _("⚠️ A vote lasts at most 30 days."),
        "too_short": _("⚠️ A vote lasts at least 10 seconds."),
        "too_few_options": _("⚠️ A vote needs at least 2 options."),
        "too_many_options": _("⚠️ A vote takes at most 10 options."),
        "question_too_long": _("⚠️ The question is too long (255 characters at most)."),
        "option_too_long": _("⚠️ An option is too long (100 characters at most)."),
        "empty_option": _("⚠️ An option is empty."),
        "duplicate_option": _("⚠️ Two options are the same."),
    }
    return refusal(messages, code, usage_vote())


def vote_post(view: VoteView, counts: Sequence[int], timezone: str, *, closed: bool = False) -> str:
    return polls.post(
        view,
        counts,
        timezone,
        closed=closed,
        title=_("🗳 <b>Vote</b>: {question}"),
        closed_line=_("Closed · {total} voted"),
        open_line=_("{total} voted · closes {time}"),
        points_line=_("Vote with the buttons: +{points} points for taking part."),
    )


def vote_result(view: VoteView, counts: Sequence[int]) -> str:
    return polls.result(
        view,
        counts,
        title=_("📊 <b>Vote result</b>: {question}"),
        total_line=_("{total} voted. Thank you!"),
    )


def usage_vote_undo() -> str:
    return "⚠️ " + html.quote(
        _(
            "Usage: /vote close [id] — close the open vote now, with its result · "
            "/vote cancel [id] — cancel it without a result (the most recent open vote "
            "unless you give its id)"
        )
    )


def no_open_vote(vote_id: int | None) -> str:
    if vote_id is None:
        return _("⚠️ No vote is open in this pond.")
    return _("⚠️ Vote #{id} is not open in this pond.").format(id=vote_id)


def vote_closed_early(view: VoteView, counts: Sequence[int]) -> str:
    """The answer to `/vote close`."""
    return _(
        "🗳 Vote #{id} ({question}) closed now with {total} voted: the result is posted."
    ).format(id=view.id, question=html.quote(clip(view.question, 60)), total=sum(counts))


def vote_cancelled(view: VoteView, counts: Sequence[int]) -> str:
    """The answer to `/vote cancel`."""
    total = sum(counts)
    text = _(
        "🚫 Vote #{id} ({question}) cancelled: no result is posted. The {total} ballots "
        "are kept."
    ).format(id=view.id, question=html.quote(clip(view.question, 60)), total=total)
    if view.points and total:
        text += " " + _(
            "The participation points already paid (+{points} each) stay paid."
        ).format(points=view.points)
    return text + " " + _("A new vote can open now.")


def vote_cancelled_post(view: VoteView) -> str:
    """The vote's post once `/vote cancel` ended it (no counts, no buttons)."""
    lines = [_("🗳 <b>Vote</b>: {question}").format(question=html.quote(view.question)), ""]
    lines += [html.quote(option) for option in view.options]
    lines += ["", _("🚫 This vote was cancelled; there is no result.")]
    return "\n".join(lines)


def vote_toast(kind: str, option: str, paid: int) -> str:
    return polls.toast(
        kind,
        option,
        paid,
        changed=_("🔁 Vote changed to: {option}"),
        same=_("You already voted for: {option}"),
        done=_("✅ Voted: {option}"),
        points=_("+{points} points · "),
    )


def vote_closed_toast() -> str:
    return _("⌛ This vote has closed.")


def button_not_valid() -> str:
    """A button whose data is malformed or out of range, or names a game that is not
    this chat's (a forged or stale press)."""
    return _("⚠️ This button is not valid here.")


def vote_not_ready_toast() -> str:
    return _("⏳ This vote is not ready yet — try again in a moment.")


def bots_cannot_vote() -> str:
    return _("⚠️ Only members can vote.")


# -- invites -------------------------------------------------------------------------


def invite_in_group_only() -> str:
    return _("Use /invite in the pond you want to invite friends to.")


def invite_link(name: str, link: str, points: int, joined: int, credited: int) -> str:
    text = _(
        "🔗 {name}, your personal invite link:\n{link}\n"
        "A friend who joins through it and checks in for the first time earns you "
        "{points} points."
    ).format(name=short_name(name), link=html.quote(link), points=points)
    if joined:
        text += "\n" + _("Friends joined: {joined} · credited: {credited}").format(
            joined=joined, credited=credited
        )
    return text


def invite_no_rights() -> str:
    return _("⚠️ I need the admin right “Invite users via link” to make invite links here.")


def invite_failed() -> str:
    return _("⚠️ I could not make an invite link just now. Please try again later.")
