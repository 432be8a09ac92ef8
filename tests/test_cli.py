"""The command line: configuration errors, migrate and export without aiogram."""

from __future__ import annotations

import csv
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from services.logs import SecretFilter

ROOT = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "DATABASE_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or ROOT,
        timeout=120,
        check=False,
    )


def test_missing_token_is_one_short_line(tmp_path: Path) -> None:
    r = run_cli("run", env={"DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "BOT_TOKEN" in r.stderr


def test_malformed_token_never_printed(tmp_path: Path) -> None:
    secret = "12345:this-is-not-a-valid token-SECRETSECRET"
    r = run_cli(
        "run", env={"BOT_TOKEN": secret, "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}, cwd=tmp_path
    )
    assert r.returncode == 2
    assert "malformed" in r.stderr
    assert "SECRETSECRET" not in r.stderr + r.stdout


def test_webhook_requires_secret(tmp_path: Path) -> None:
    r = run_cli(
        "run",
        "--webhook",
        env={
            "BOT_TOKEN": "123456:" + "A" * 35,
            "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
        },
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "WEBHOOK_SECRET" in r.stderr


def test_bad_operator_ids_is_a_clear_error(tmp_path: Path) -> None:
    r = run_cli(
        "migrate",
        env={"OPERATOR_IDS": "12,abc", "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"},
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "OPERATOR_IDS" in r.stderr


def test_migrate_and_export_without_aiogram(tmp_path: Path) -> None:
    db = tmp_path / "shop.db"
    env = {"DATABASE_URL": f"sqlite:///{db}"}
    r = run_cli("migrate", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "members.csv"
    code = (
        "import sys; from bot.cli import main; "
        f"rc = main(['export', 'members', '--out', {str(out)!r}]); "
        "assert 'aiogram' not in sys.modules, 'aiogram imported'; sys.exit(rc)"
    )
    full_env = {**os.environ, **env}
    r2 = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert r2.returncode == 0, r2.stderr
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    header = next(csv.reader(raw.decode("utf-8-sig").splitlines()))
    assert header[:7] == [
        "user_id",
        "username",
        "display_name",
        "balance",
        "lifetime_earned",
        "streak",
        "tier",
    ]
    r3 = run_cli("export", "ledger", env=env, cwd=tmp_path)
    assert r3.returncode == 0, r3.stderr
    assert r3.stdout.lstrip("\ufeff").splitlines()[0] == (
        "id,user_id,chat_id,delta,kind,ref,actor_id,created_at"
    )


@pytest.mark.parametrize("database", ["missing", "empty"])
def test_export_of_an_unmigrated_database_is_one_line(tmp_path: Path, database: str) -> None:
    db = tmp_path / "shop.db"
    if database == "empty":
        sqlite3.connect(db).close()  # a SQLite file without any table
    out = tmp_path / "members.csv"
    r = run_cli("export", "members", "--out", str(out),
                env={"DATABASE_URL": f"sqlite:///{db}"}, cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "pondbot migrate" in r.stderr
    assert r.stdout == ""
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ([] if database == "missing" else ["shop.db"])  # no CSV, no new database
    r = run_cli("export", "ledger", env={"DATABASE_URL": f"sqlite:///{db}"}, cwd=tmp_path)
    assert r.returncode == 1 and r.stdout == "" and r.stderr.count("\n") == 1


def test_secret_filter_scrubs_tokens_and_known_secrets(caplog: object) -> None:
    f = SecretFilter(["s3cr3t-webhook"])
    rec = logging.LogRecord(
        "x",
        logging.ERROR,
        __file__,
        1,
        "POST https://api.telegram.org/bot%s/sendMessage failed (%s)",
        ("123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq", "s3cr3t-webhook"),
        None,
    )
    assert f.filter(rec)
    text = rec.getMessage()
    assert "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq" not in text and "s3cr3t-webhook" not in text
    assert "***" in text


def test_run_refuses_to_start_without_operator_ids(tmp_path: Path) -> None:
    r = run_cli(
        "run",
        env={"BOT_TOKEN": "123456:" + "A" * 35, "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
             "OPERATOR_IDS": ""},
        cwd=tmp_path,
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "OPERATOR_IDS" in r.stderr and "@userinfobot" in r.stderr
    assert not (tmp_path / "x.db").exists()  # refused before anything was touched
