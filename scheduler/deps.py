"""What a job body may use: the database, the outbox and the texts' language.

Its own module, so that the job modules and the registry that collects them
(`scheduler.jobs`) both import it and never each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from aiogram.utils.i18n import I18n

from services.i18n import speaking
from services.outbox import Outbox
from storage.db import Database


@dataclass(frozen=True)
class JobDeps:
    db: Database
    outbox: Outbox
    i18n: I18n

    @contextmanager
    def language(self, locale: str) -> Iterator[None]:
        """Texts inside the block speak `locale` (a pond's language)."""
        with speaking(self.i18n, locale):
            yield


__all__ = ["JobDeps"]
