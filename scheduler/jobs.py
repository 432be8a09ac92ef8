"""Job bodies are registered here, by feature.

Each feature's job module has a `setup(scheduler, deps)`, listed in `JOB_SETUPS`; it registers
its jobs by name (`scheduler.register("red_packet.expire", func)`). Jobs receive a
`TaskRun` (the task's key and its payload of ids) and use `deps` for the database, the
outbox and the texts' language.
"""

from __future__ import annotations

from collections.abc import Callable

from scheduler import drops as drop_jobs
from scheduler import games as games_jobs
from scheduler import members as members_jobs
from scheduler import orders as orders_jobs
from scheduler import promo as promo_jobs
from scheduler import red_packet
from scheduler import segments as segment_jobs
from scheduler import surveys as survey_jobs
from scheduler.core import Scheduler
from scheduler.deps import JobDeps

JobSetup = Callable[[Scheduler, JobDeps], None]

JOB_SETUPS: list[JobSetup] = [
    red_packet.setup, games_jobs.setup, promo_jobs.setup, orders_jobs.setup, drop_jobs.setup,
    members_jobs.setup,
    survey_jobs.setup, segment_jobs.setup,
]


def register_jobs(scheduler: Scheduler, deps: JobDeps) -> None:
    for setup in JOB_SETUPS:
        setup(scheduler, deps)
