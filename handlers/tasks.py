"""Daily tasks (每日任务, SPEC F13): `/tasks` shows the member's list of today in the
pond with what is done, and pays the bonus if it is earned and not yet paid (the lists'
rules: `games.tasks`; the bonus after each action: `services.tasks`). In a private chat
it says the tasks are per pond."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from games.checkin import local_day
from services.messaging import reply
from services.middlewares import PondInfo
from services.outbox import Outbox
from services.tasks import DailyTasks
from services.texts import tasks as texts
from storage import repo

Clock = Callable[[], datetime]


def setup() -> Router:
    router = Router(name="tasks")
    router.message.register(show_tasks, Command("tasks"))
    return router


async def show_tasks(
    message: Message,
    pond: PondInfo | None,
    person: repo.UserInfo | None,
    daily_tasks: DailyTasks,
    outbox: Outbox,
    clock: Clock,
) -> None:
    if pond is None:
        if message.chat.type == "private":
            reply(outbox, message, texts.private_only_in_ponds())
        return  # a group that is no pond has no tasks
    if person is None:
        return  # anonymous admins and channels hold no points
    now = clock()
    outcome = await daily_tasks.settle(pond, person.id, local_day(now, pond.timezone), now)
    reply(outbox, message, texts.task_list(person.display_name, outcome.tasks,
                                           bonus=outcome.bonus, paid=outcome.paid))
