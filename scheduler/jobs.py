"""Job bodies are registered here, by feature.

Each feature appends a `setup(scheduler, deps)` function to `JOB_SETUPS`; it registers
its jobs by name (`scheduler.register("red_packet.expire", func)`). Jobs receive a
`TaskRun` (the task's key and its payload of ids) and use `deps` for the database, the
outbox and the texts' language.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from aiogram.utils.i18n import I18n

from bot.outbox import Outbox
from scheduler import games as games_jobs
from scheduler import promo as promo_jobs
from scheduler import red_packet
from scheduler.core import Scheduler
from storage.db import Database


@dataclass(frozen=True)
class JobDeps:
    db: Database
    outbox: Outbox
    i18n: I18n

    @contextmanager
    def language(self, locale: str) -> Iterator[None]:
        """Texts inside the block speak `locale` (a pond's language)."""
        if locale not in self.i18n.available_locales:
            locale = self.i18n.default_locale
        with self.i18n.context(), self.i18n.use_locale(locale):
            yield


JobSetup = Callable[[Scheduler, JobDeps], None]

JOB_SETUPS: list[JobSetup] = [red_packet.setup]
JOB_SETUPS.append(games_jobs.setup)
JOB_SETUPS.append(promo_jobs.setup)


def register_jobs(scheduler: Scheduler, deps: JobDeps) -> None:
    for setup in JOB_SETUPS:
        setup(scheduler, deps)
