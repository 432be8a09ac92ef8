"""What the benches share."""

from __future__ import annotations

import logging


class Failures(logging.Handler):
    """Counts errors logged while a bench runs: an update that failed (and was only
    logged by the error handler) must fail the bench, not speed it up."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @classmethod
    def installed(cls) -> Failures:
        handler = cls()
        logging.getLogger().addHandler(handler)
        return handler
