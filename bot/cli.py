"""The `pondbot` command line.

Subcommands import only what they need: `migrate`, `export` and `import` never import
aiogram, which alone costs seconds of CPU on a small machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from bot.config import ConfigError, Settings, load_settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pondbot", description="Points, games and promotions for your customer groups."
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="serve: long polling, or a webhook with --webhook")
    run.add_argument(
        "--webhook", action="store_true", help="serve a webhook (needs WEBHOOK_SECRET)"
    )
    sub.add_parser("migrate", help="bring the database schema up to date")
    exp = sub.add_parser("export", help="write a CSV file (UTF-8 with BOM)")
    exp.add_argument("what", choices=["members", "ledger", "votes", "orders", "redemptions",
                                        "draws", "profiles", "segments"])
    exp.add_argument("--out", metavar="FILE", help="output file (default: standard output)")
    exp.add_argument("--pond", type=int, metavar="CHAT_ID",
                     help="only that pond's rows (not for profiles and segments)")
    imp = sub.add_parser("import", help="read a CSV file into the database")
    imp_sub = imp.add_subparsers(dest="what", required=True, metavar="WHAT")
    imp_orders = imp_sub.add_parser(
        "orders", help="purchases: order_no,user_id,amount[,paid_at][,username]; all or nothing"
    )
    imp_orders.add_argument("file", metavar="FILE")
    imp_codes = imp_sub.add_parser(
        "codes", help="coupon codes for a shop item's pool: one per line (.txt or .csv)"
    )
    imp_codes.add_argument("item_id", type=int, metavar="ITEM_ID")
    imp_codes.add_argument("file", metavar="FILE")
    demo = sub.add_parser("demo", help="play a scripted pond offline and print the chat")
    demo.add_argument("--quiet", action="store_true", help="print only the transcript")
    demo.add_argument("--web", action="store_true",
                      help="play the pond in a browser instead: http://127.0.0.1:8088")
    demo.add_argument("--port", type=int, default=8088, help="the sandbox page's port (--web)")
    return p


def _fail(message: str) -> int:
    print(f"pondbot: error: {message}", file=sys.stderr)
    return 2


def _settings() -> Settings:
    return load_settings()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(webhook=args.webhook)
        if args.command == "migrate":
            return _migrate()
        if args.command == "export":
            return _export(args.what, args.out, args.pond)
        if args.command == "import" and args.what == "orders":
            return _import_orders(args.file)
        if args.command == "import" and args.what == "codes":
            return _import_codes(args.item_id, args.file)
        if args.command == "demo" and args.web:
            from bot.demo.web import run_sandbox

            return run_sandbox(port=args.port)
        if args.command == "demo":
            from bot.demo import run_demo

            return run_demo(quiet=args.quiet)
    except ConfigError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    return 2  # pragma: no cover - argparse rejects unknown commands


def _run(*, webhook: bool) -> int:
    settings = _settings()
    secrets = [settings.token()]
    if webhook:
        secrets.append(settings.webhook_secret_value())
    if not settings.operator_ids:
        # Without the shop's own staff, no group can be told from a stranger's (SPEC F1).
        raise ConfigError(
            "OPERATOR_IDS is not set: set it to your own Telegram user id (several: "
            "comma-separated) so that only groups you run become ponds; to find your id, "
            "message @userinfobot, or look at message.from.id in the bot's getUpdates"
        )
    from services.logs import setup_logging

    setup_logging(settings.log_level, secrets + _db_secrets(settings))
    from bot.app import run_polling, run_webhook

    asyncio.run(run_webhook(settings) if webhook else run_polling(settings))
    return 0


def _db_secrets(settings: Settings) -> list[str]:
    from sqlalchemy.engine import make_url

    pw = make_url(settings.database_url).password
    out = [str(pw)] if pw else []
    if settings.redis_url is not None:
        rpw = make_url(settings.redis_url.get_secret_value()).password
        out += [str(rpw)] if rpw else []
    return out


def _migrate() -> int:
    settings = _settings()
    from storage.migrate import current_revision, upgrade

    upgrade(settings.database_url)
    print(f"database schema is up to date (revision {current_revision(settings.database_url)})")
    return 0


def _export(what: str, out: str | None, pond: int | None = None) -> int:
    settings = _settings()
    from storage.export import POND_EXPORTS, SchemaNotReady, export_to_path

    if pond is not None and what not in POND_EXPORTS:
        return _fail(f"{what} is shop-wide: --pond is for {', '.join(POND_EXPORTS)}")
    try:
        export_to_path(settings.database_url, what, out, pond)
    except SchemaNotReady as exc:
        print(f"pondbot: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.filename is None:
            raise
        # The output file's folder is missing or not writable.
        print(f"pondbot: error: cannot write {out}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


def _import_orders(path: str) -> int:
    """All or nothing: `imported N, already recorded M` (exit 0), or every bad line on
    standard error and nothing imported (exit 1)."""
    settings = _settings()
    from storage.orders import FileProblem, ImportRefused, SchemaNotReady, import_file

    try:
        result = import_file(settings.database_url, path)
    except (FileProblem, SchemaNotReady) as exc:
        print(f"pondbot: error: {exc}", file=sys.stderr)
        return 1
    except ImportRefused as exc:
        for bad in exc.bad:
            print(f"{path}: {bad}", file=sys.stderr)
        print(
            f"pondbot: error: {len(exc.bad)} bad line(s) in {path}: nothing imported",
            file=sys.stderr,
        )
        return 1
    print(f"imported {result.imported}, already recorded {result.already}")
    return 0


def _import_codes(item_id: int, path: str) -> int:
    """Codes into an item's pool: a summary line (exit 0), each skipped duplicate and
    line that holds no code on standard error; exit 1 when nothing could be read or the
    item takes no codes."""
    settings = _settings()
    from storage.export import SchemaNotReady
    from storage.shop import ShopError, import_codes_file

    try:
        done = import_codes_file(settings.database_url, item_id, path)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"pondbot: error: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    except SchemaNotReady as exc:
        print(f"pondbot: error: {exc}", file=sys.stderr)
        return 1
    except ShopError as exc:
        why = "no such item" if exc.code == "unknown_item" else "goods take no codes"
        print(f"pondbot: error: item {item_id}: {why}", file=sys.stderr)
        return 1
    for code in done.repeated:
        print(f"{path}: duplicate in the file, skipped: {code}", file=sys.stderr)
    for code in done.already_in_pool:
        print(f"{path}: already in the pool, skipped: {code}", file=sys.stderr)
    for number in done.bad_lines:
        print(f"{path}:{number}: not a code, skipped", file=sys.stderr)
    skipped = len(done.repeated) + len(done.already_in_pool)
    print(f"imported {done.added}, duplicates skipped {skipped}; item {item_id} has "
          f"{done.stock} unused codes")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
