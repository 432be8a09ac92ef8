"""Multi-row statements for the hot batches, at the driver's price.

A batch of a hundred check-ins writes a few hundred rows. Handed a list of dicts,
SQLAlchemy builds and converts the parameters of every row anew — for a row of plain
values that costs more than the database spends storing it. A `Bulk` statement is
compiled once per backend; each row becomes a tuple in the driver's parameter order, and
every column's value goes through that column type's own bind conversion (the same one
SQLAlchemy would apply) — once per distinct value, so the `now` shared by a whole batch
is converted once. The statement then runs as one `executemany` on the unit of work's
connection (`exec_driver_sql`), inside its transaction and visible to its events.

Only for statements whose parameters are all given by each row: one that would need a
Python-side column default, or a parameter missing from a row, is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ClauseElement

Convert = Callable[[Any], Any]


@dataclass(frozen=True)
class _Plan:
    sql: str
    names: tuple[str, ...]
    converts: tuple[Convert | None, ...]


class Bulk:
    """`build(dialect_name)` returns the statement; `columns` are the keys every row has
    (for an INSERT: the columns it fills)."""

    def __init__(self, build: Callable[[str], ClauseElement], columns: Sequence[str]) -> None:
        self._build = build
        self._columns = list(columns)
        self._plans: dict[str, _Plan] = {}

    def _plan(self, dialect: Dialect) -> _Plan:
        plan = self._plans.get(dialect.name)
        if plan is not None:
            return plan
        compiled: Any = self._build(dialect.name).compile(
            dialect=dialect, column_keys=self._columns
        )
        if getattr(compiled, "insert_prefetch", None) or getattr(
            compiled, "update_prefetch", None
        ):
            raise ValueError("a Bulk statement must not rely on Python-side column defaults")
        names = tuple(compiled.positiontup or ())
        missing = set(names) - set(self._columns)
        if missing:
            raise ValueError(f"parameters not given by the rows: {sorted(missing)}")
        # The type as this dialect stores it (`dialect_impl`): a TypeDecorator's own
        # `bind_processor` skips its impl's conversion, and SQLite would then get a
        # datetime in another text form than every other write of the column.
        converts = tuple(
            compiled.binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names
        )
        plan = self._plans[dialect.name] = _Plan(compiled.string, names, converts)
        return plan

    async def execute(self, session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        connection = await session.connection()
        plan = self._plan(connection.dialect)
        # Column by column: each column's values in one comprehension, converted once per
        # distinct value, then zipped into the rows' tuples.
        columns = [
            _converted([row[n] for row in rows], how)
            for n, how in zip(plan.names, plan.converts, strict=True)
        ]
        params = list(zip(*columns, strict=True)) if columns else [()] * len(rows)
        await connection.exec_driver_sql(plan.sql, params)


def _converted(values: list[Any], how: Convert | None) -> list[Any]:
    if how is None:
        return values
    seen: dict[Any, Any] = {None: None}
    try:
        for v in values:
            if v not in seen:
                seen[v] = how(v)
        return [seen[v] for v in values]
    except TypeError:  # unhashable: convert every value
        return [None if v is None else how(v) for v in values]
