"""Whether a database is at the schema this code ships, without loading alembic.

`pondbot run` checks its schema at every start. Alembic (with mako and, when installed,
pygments) costs about 11 MB of memory that a serving bot never gives back, for an
answer that is almost always "up to date". Here the shipped head is read from the
migration files themselves (each states `revision` and `down_revision`) and compared with
the `alembic_version` row. Anything unexpected — a file it cannot read, several heads, no
version table — answers False, and the caller asks alembic (`storage.migrate`), which
stays the authority: this check can only save its import, never skip a migration.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from storage.db import Database

VERSIONS = Path(__file__).resolve().with_name("migrations") / "versions"
_REVISION = re.compile(r"""^revision(?:\s*:\s*str)?\s*=\s*["']([^"']+)["']""", re.MULTILINE)
_DOWN = re.compile(r"""^down_revision\b[^=\n]*=\s*(?:["']([^"']*)["']|None)""", re.MULTILINE)


@cache
def shipped_head() -> str | None:
    """The head revision of the migration files; None when it cannot tell for sure."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in VERSIONS.glob("*.py"):
        source = path.read_text("utf-8")
        revision, down = _REVISION.search(source), _DOWN.search(source)
        if revision is None or down is None:
            return None
        revisions.add(revision.group(1))
        if down.group(1):
            parents.add(down.group(1))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


async def at_head(db: Database) -> bool:
    """True only when the database's one recorded revision is the shipped head."""
    head = shipped_head()
    if head is None:
        return False
    try:
        async with db.transaction(readonly=True) as session:
            found = (await session.execute(text("SELECT version_num FROM alembic_version"))
                     ).scalars().all()
    except DBAPIError:  # no version table yet: a new database
        return False
    return list(found) == [head]
