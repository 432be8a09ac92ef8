"""A throwaway PostgreSQL server for tests.

`PostgresServer.start()` runs `initdb` into a fresh temporary directory and starts the
server on a free port of 127.0.0.1 (unix socket inside the directory, `fsync=off`);
`stop()` stops it and removes the directory, and an `atexit` hook does the same if the
test run dies before. PostgreSQL's tools refuse to run as root: as root the directory is
handed to the `postgres` user and the tools run through `runuser -u postgres --`.

A run killed outright (SIGKILL, SIGTERM) cannot clean up; the next `start()` stops and
removes servers whose owning process (`owner.pid` in their directory) is gone.

`ExternalPostgres` wraps a server that is already running (`PONDBOT_TEST_PG_URL`); it
only creates and drops databases on it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import URL, make_url

START_TIMEOUT_S = 30
DIR_PREFIX = "pondbot-pg-"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL could not be started or reached; the message says why."""


def _find_tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for path in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
        return path
    raise PostgresUnavailable(f"{name} not found on PATH nor in /usr/lib/postgresql/*/bin")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Cluster:
    """Creating and dropping databases, common to both kinds of server."""

    admin_url: URL

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL (asyncpg driver) of one database on this server."""
        return self.admin_url.set(
            drivername="postgresql+asyncpg", database=database
        ).render_as_string(hide_password=False)

    def _dsn(self, database: str | None = None) -> str:
        u = self.admin_url.set(drivername="postgresql")
        if database is not None:
            u = u.set(database=database)
        return u.render_as_string(hide_password=False)

    async def create_database(self, name: str | None = None, *, template: str | None = None) -> str:
        """Create a database (a copy of `template` if given) and return its name."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        sql = f"CREATE DATABASE {_quote_ident(name)}"
        if template:
            sql += f" TEMPLATE {_quote_ident(template)} STRATEGY FILE_COPY"
        conn = await asyncpg.connect(self._dsn(), timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()
        return name

    async def drop_database(self, name: str) -> None:
        conn = await asyncpg.connect(self._dsn(), timeout=10)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
        finally:
            await conn.close()

    def ping(self) -> None:
        async def _ping() -> None:
            conn = await asyncpg.connect(self._dsn(), timeout=10)
            await conn.close()

        asyncio.run(_ping())


class ExternalPostgres(_Cluster):
    """A server someone else runs; databases made here are dropped by `close()`."""

    def __init__(self, url: str) -> None:
        self.admin_url = make_url(url)
        self.created: list[str] = []

    async def create_database(self, name: str | None = None, *, template: str | None = None) -> str:
        name = await super().create_database(name, template=template)
        self.created.append(name)
        return name

    def close(self) -> None:
        async def _drop_all() -> None:
            for name in reversed(self.created):
                await self.drop_database(name)

        with contextlib.suppress(Exception):
            asyncio.run(_drop_all())
        self.created.clear()


class PostgresServer(_Cluster):
    """A private PostgreSQL server in a temporary directory."""

    def __init__(self) -> None:
        self.dir: Path | None = None
        self.port = 0
        self._run_as: list[str] = []
        self._started = False

    @property
    def datadir(self) -> Path:
        assert self.dir is not None
        return self.dir / "data"

    def _run(self, *args: str, timeout: float = START_TIMEOUT_S) -> None:
        try:
            subprocess.run(
                [*self._run_as, *args],
                check=True,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=self.dir,
            )
        except subprocess.CalledProcessError as e:
            raise PostgresUnavailable(
                f"{Path(args[0]).name} failed ({e.returncode}): {(e.stderr or e.stdout).strip()}"
                + self._log_tail()
            ) from e
        except (OSError, subprocess.TimeoutExpired) as e:
            raise PostgresUnavailable(f"{Path(args[0]).name}: {e}" + self._log_tail()) from e

    def _log_tail(self) -> str:
        log = self.dir / "server.log" if self.dir else None
        if log is None or not log.exists():
            return ""
        return "\n--- server.log ---\n" + "\n".join(
            log.read_text(errors="replace").splitlines()[-20:]
        )

    def start(self) -> None:
        initdb, pg_ctl = _find_tool("initdb"), _find_tool("pg_ctl")
        _reap_orphans(pg_ctl)
        self.dir = Path(tempfile.mkdtemp(prefix=DIR_PREFIX))
        (self.dir / "owner.pid").write_text(str(os.getpid()))
        atexit.register(self.stop)
        try:
            if os.geteuid() == 0:
                try:
                    pw = pwd.getpwnam("postgres")
                except KeyError as e:
                    raise PostgresUnavailable("running as root and no 'postgres' user") from e
                os.chown(self.dir, pw.pw_uid, pw.pw_gid)
                runuser = shutil.which("runuser")
                if runuser is None:
                    raise PostgresUnavailable("running as root and runuser is missing")
                self._run_as = [runuser, "-u", "postgres", "--"]
            self._run(
                initdb,
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            )
            last_error: PostgresUnavailable | None = None
            for _ in range(3):  # the free port may be taken between probing and binding
                self.port = _free_port()
                options = " ".join(
                    [
                        "-c listen_addresses=127.0.0.1",
                        f"-p {self.port}",
                        f"-c unix_socket_directories={self.dir}",
                        "-c fsync=off",
                        "-c synchronous_commit=off",
                        "-c full_page_writes=off",
                        "-c max_connections=200",
                        "-c shared_buffers=64MB",
                    ]
                )
                try:
                    self._run(
                        pg_ctl,
                        "-D",
                        str(self.datadir),
                        "-l",
                        str(self.dir / "server.log"),
                        "-o",
                        options,
                        "-w",
                        "-t",
                        str(START_TIMEOUT_S),
                        "start",
                    )
                except PostgresUnavailable as e:
                    last_error = e
                    continue
                self._started = True
                break
            else:
                assert last_error is not None
                raise last_error
            self.admin_url = URL.create(
                "postgresql",
                username="postgres",
                host="127.0.0.1",
                port=self.port,
                database="postgres",
            )
            self.ping()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server and remove its directory; safe to call more than once."""
        if self.dir is None:
            return
        if self._started:
            with contextlib.suppress(Exception):
                subprocess.run(
                    [
                        *self._run_as,
                        _find_tool("pg_ctl"),
                        "-D",
                        str(self.datadir),
                        "-m",
                        "immediate",
                        "-w",
                        "stop",
                    ],
                    capture_output=True,
                    timeout=START_TIMEOUT_S,
                    cwd=self.dir,
                )
            self._started = False
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap_orphans(pg_ctl: str) -> None:
    """Stop and remove servers left behind by test runs that were killed."""
    for owner_file in Path(tempfile.gettempdir()).glob(f"{DIR_PREFIX}*/owner.pid"):
        try:
            owner = int(owner_file.read_text())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        stale = owner_file.parent
        data = stale / "data"
        if (data / "postmaster.pid").exists():
            run_as = []
            if os.geteuid() == 0 and shutil.which("runuser"):
                run_as = [str(shutil.which("runuser")), "-u", "postgres", "--"]
            with contextlib.suppress(Exception):
                subprocess.run(
                    [*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
                    capture_output=True,
                    timeout=START_TIMEOUT_S,
                    cwd=stale,
                )
        shutil.rmtree(stale, ignore_errors=True)
