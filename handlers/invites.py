"""Personal invite links (以老带新): `/invite`, and joins through those links.

`/invite` gives the member their own link to the pond (`createChatInviteLink`, named
after them), made once and stored. The link is created with a direct Bot API call — it
is not a chat message, so it does not go through the outbox — and never inside a
database transaction. The same command also credits any of the member's newcomers who
have checked in meanwhile (lazily; a scheduler task does it every minute anyway).

A `chat_member` update with an `invite_link` records the referral before the
membership router records the join (this router comes first, then lets the update go
on with `SkipHandler`): "was this person ever in the pond?" must be asked before the
join itself is written.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from aiogram import Bot, Router
from aiogram.dispatcher.event.bases import SkipHandler
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest, TelegramRetryAfter
from aiogram.filters import Command, Filter
from aiogram.types import ChatMemberUpdated, Message

from games.checkin import checkin_moment
from games.people import is_present
from games.votes import invite_link_name
from scheduler.core import Scheduler
from services import texts as common_texts
from services.messaging import reply
from services.middlewares import PondInfo, person_of
from services.outbox import Outbox
from services.texts import games as texts
from services.texts import weather as weather_texts
from services.weather import describe, is_transient
from storage import invites, repo
from storage.db import Database
from storage.models import Job

log = logging.getLogger(__name__)

CREDIT_EVERY = "* * * * *"  # every minute, UTC


class JoinedViaLink(Filter):
    async def __call__(self, event: ChatMemberUpdated) -> bool:
        new, old = event.new_chat_member, event.old_chat_member
        return (
            event.invite_link is not None
            and event.chat.type in ("group", "supergroup")
            and is_present(new.status, getattr(new, "is_member", None))
            and not is_present(old.status, getattr(old, "is_member", None))
        )


def setup() -> Router:
    router = Router(name="invites")
    router.chat_member.register(joined_via_link, JoinedViaLink())
    router.message.register(invite, Command("invite"))
    return router


async def joined_via_link(event: ChatMemberUpdated, db: Database, scheduler: Scheduler) -> None:
    person = person_of(event.new_chat_member.user, None)
    assert event.invite_link is not None
    if person is not None:
        now = scheduler.clock()
        async with db.transaction() as session:
            referrer = await invites.record_join(
                session,
                chat_id=event.chat.id,
                newcomer_id=person.id,
                link=event.invite_link.invite_link,
                # When the join happened (a late delivery: before now), so that a
                # check-in typed after it counts, however late both arrive.
                now=checkin_moment(event.date, now),
            )
            if referrer is not None:
                # One recurring task for the whole shop, created by the first referral.
                await scheduler.schedule(
                    now + timedelta(minutes=1),
                    Job.invite_credit,
                    Job.invite_credit,
                    session=session,
                    cron=CREDIT_EVERY,
                    timezone="UTC",
                    catch_up=False,
                    grace=timedelta(minutes=1),
                )
    raise SkipHandler  # the membership router records the join itself


async def invite(
    message: Message,
    bot: Bot,
    db: Database,
    outbox: Outbox,
    scheduler: Scheduler,
    pond: PondInfo | None,
    person: repo.UserInfo | None,
) -> None:
    if pond is None:
        reply(outbox, message, texts.invite_in_group_only())
        return
    if person is None:
        reply(outbox, message, common_texts.cannot_target_bot())
        return
    now = scheduler.clock()
    async with db.transaction() as session:
        link = await invites.get_link(session, pond.chat_id, person.id)
        await invites.credit_due(session, now, referrer_id=person.id)
        points = (await repo.pond_settings(session, pond.chat_id)).referral_points
        stats = await invites.referral_stats(session, person.id, pond.chat_id)
    if link is None:
        name = invite_link_name(person.display_name)
        try:
            created = await bot.create_chat_invite_link(chat_id=pond.chat_id, name=name)
        except TelegramBadRequest as exc:
            rights = "rights" in exc.message.lower() or "admin" in exc.message.lower()
            reply(outbox, message, texts.invite_no_rights() if rights else texts.invite_failed())
            return
        except TelegramRetryAfter as exc:
            log.warning("invite link for %s: 429 (retry after %ss)", pond.chat_id, exc.retry_after)
            reply(outbox, message, weather_texts.telegram_not_answering())
            return
        except Exception as exc:
            if is_transient(exc):  # 5xx, an HTML page, a timeout: ask again in a minute
                log.warning("invite link for %s failed: %s", pond.chat_id, describe(exc))
                reply(outbox, message, weather_texts.telegram_not_answering())
                return
            if not isinstance(exc, TelegramAPIError):
                raise
            log.warning("invite link for %s failed: %s", pond.chat_id, type(exc).__name__)
            reply(outbox, message, texts.invite_failed())
            return
        async with db.transaction() as session:
            link = await invites.save_link(
                session, pond.chat_id, person.id, created.invite_link, name, now
            )
    reply(
        outbox,
        message,
        texts.invite_link(person.display_name, link, points, stats.joined, stats.credited),
    )
