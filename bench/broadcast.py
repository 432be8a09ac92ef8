"""A promotion broadcast at Telegram's ceiling, measured where Telegram would see it.

    .venv/bin/python bench/broadcast.py [--ponds 200] [--storm 3] [--retry-after 2] [--talk 0]

The real `pondbot run` process (polling, SQLite) against the project's Bot API emulator
with its flood limits on (30/s overall, 20/min per group, about 1/s per chat). The bot
serves `ponds` ponds (rows in its database, the bot a member of each); it was kicked
from one of them without noticing (its copy is answered 403), and one pond's sends
answer 429 `storm` times in a row with `retry_after` seconds (a flood storm on that
chat alone). The operator schedules a post to every pond and confirms it; the bench
waits for the report to the operator.

Printed, from the emulator's log (its clock, not the bot's): the copies per second that
reached the ponds that answered (the stormed pond aside: its copy waits out the storm),
the busiest second and the busiest group minute of everything sent to the ponds, the
429s the flood limits gave on their own (the bot outrunning them: must be 0; the
injected ones are not counted), when the stormed pond's copy came relative to the last
of the others, and how soon after each `retry_after` passed its next attempt came (it is
retried at once, alongside the other copies, not after them). With `--talk R`, a member
in one of the last `--talkers` ponds asks for their points R times a second while the
broadcast runs (their copies are still queued then), and the bench prints how long those
replies took (they go ahead of the broadcast's copies). `ratio:` is the copies per
second over Telegram's 30/s.

Exact: every pond that answered has the post once, the kicked one none and is marked
inactive, the delivery rows are `sent` but for the kicked pond's `skipped`, and nothing
sent to the ponds broke a limit; else the bench exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bot.emulator import Emulator  # noqa: E402
from bot.emulator.limits import send_rates  # noqa: E402
from bot.emulator.server import Member  # noqa: E402
from tests.rig.bot_process import BotProcess  # noqa: E402
from tests.rig.replicas import confirm_promo  # noqa: E402

OPERATOR = 7_000_002
CEILING = 30.0  # Telegram's messages per second overall
TEXT = "双十一 全场5折 🎉"
FIRST_POND = -1004000000999
KICKED_AT = 7  # the kicked pond's place in the order the ponds are served
_T0 = time.perf_counter()


def progress(what: str) -> None:
    """A line on stderr with the seconds since the start: where a run spends its time."""
    print(f"[{time.perf_counter() - _T0:6.1f} s] {what}", file=sys.stderr, flush=True)


def copies_in(emu: Emulator, chat_id: int) -> int:
    """The bot's posts of the broadcast in a chat (replies aside)."""
    return sum(1 for m in emu.messages_in(chat_id)
               if m.get("from", {}).get("id") == emu.bot_id and m.get("text") == TEXT
               and "reply_to_message" not in m)


def member_of(chat_id: int) -> int:
    return (-chat_id) % 10**6 + 8_000_000


async def talk(emu: Emulator, talkers: list[int], rate: float, asked: list[dict[str, Any]],
               done: asyncio.Event) -> None:
    """Members of `talkers` ask for their points, `rate` times a second, until `done`."""
    i = 0
    while not done.is_set():
        chat_id = talkers[i % len(talkers)]
        message = emu.send_message(chat_id, member_of(chat_id), "/points")
        asked.append({"chat_id": chat_id, "message_id": message["message_id"],
                      "time": emu.wall_clock()})
        i += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 1 / rate)


def reply_delays(emu: Emulator, asked: list[dict[str, Any]]) -> list[float]:
    """Seconds from each question to the bot's reply to it (by the emulator's clock)."""
    answers: dict[tuple[int, int], float] = {}
    for e in emu.events:
        if e["kind"] == "bot_message" and e["chat_id"] is not None:
            message = emu.chats[e["chat_id"]].messages.get(e.get("message_id", 0))
            reply = (message or {}).get("reply_to_message") if message else None
            if reply:
                answers.setdefault((e["chat_id"], reply["message_id"]), float(e["time"]))
    return [answers[(a["chat_id"], a["message_id"])] - a["time"]
            for a in asked if (a["chat_id"], a["message_id"]) in answers]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ids = [FIRST_POND + i for i in range(args.ponds)]  # served in this order (by chat id)
    kicked, stormed = ids[KICKED_AT], ids[args.stormed_at]
    talkers = ids[-args.talkers:] if args.talk and args.talkers else []
    async with Emulator() as emu:
        emu.add_user(OPERATOR, "Operator", username="operator")
        for i, chat_id in enumerate(ids):
            members = []
            if chat_id in talkers:
                emu.add_user(member_of(chat_id), f"会员{i}")
                members = [member_of(chat_id)]
            emu.create_group(chat_id, f"鱼塘 {i}", members=members)
            emu.chats[chat_id].members[emu.bot_id] = Member("member")
        emu.chats[kicked].members[emu.bot_id] = Member("kicked")  # the next send 403s
        with tempfile.TemporaryDirectory(prefix="pondbot-broadcast-") as tmp:
            proc = BotProcess(emu, Path(tmp), operator_ids=str(OPERATOR))
            await proc.start()
            try:
                proc.seed_ponds(ids)
                progress(f"bot polling, {args.ponds} ponds seeded")
                post_id = await confirm_promo(emu, OPERATOR, f"/promo at +4s {TEXT}")
                emu.inject_fault(method="sendMessage", chat_id=stormed, kind="429",
                                 times=args.storm, retry_after=args.retry_after)
                events_before, sends_before = len(emu.events), len(emu.sends)
                flood_before = emu.stats.flood_429
                asked: list[dict[str, Any]] = []
                done = asyncio.Event()
                talking = (asyncio.create_task(talk(emu, talkers, args.talk, asked, done))
                           if talkers else None)
                report = await emu.wait_for_message(
                    OPERATOR, lambda m: "📣" in str(m.get("text")), timeout=180
                )
                done.set()
                if talking is not None:
                    await talking
                progress("report received")
                await proc.idle()
                await asyncio.sleep(1)  # replies still on their way
                copies = {c: copies_in(emu, c) for c in ids}
                states = {str(state): n for state, n in proc.query(
                    "SELECT state, COUNT(*) FROM broadcast_delivery WHERE post_id = ? "
                    "GROUP BY state", post_id)}
                kicked_status = proc.query("SELECT status FROM pond WHERE chat_id = ?", kicked)
                pond_ids = set(ids)
                arrived = {e["chat_id"]: float(e["time"]) for e in emu.events[events_before:]
                           if e["kind"] == "bot_message" and e["chat_id"] in pond_ids
                           and e.get("text") == TEXT}
                # The stormed pond's attempts: its injected 429s, then its copy.
                attempts = [float(e["time"]) for e in emu.events[events_before:]
                            if e["kind"] == "fault" and e["chat_id"] == stormed]
                attempts += [arrived[stormed]] if stormed in arrived else []
                rates = send_rates(emu.sends[sends_before:], ids)
                all_rates = send_rates(emu.sends[sends_before:])
                delays = reply_delays(emu, asked)
                tracebacks = proc.logs().count("Traceback")
                token_logged = emu.token in proc.logs()
            finally:
                await proc.stop()
        return {
            "copies": copies, "kicked": kicked, "stormed": stormed, "states": states,
            "kicked_status": kicked_status, "arrived": arrived, "rates": rates,
            "attempts": attempts,
            "all_rates": all_rates, "flood_429": emu.stats.flood_429 - flood_before,
            "report": report["text"], "delays": delays, "asked": len(asked),
            "tracebacks": tracebacks, "token_logged": token_logged,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ponds", type=int, default=200, help="ponds to reach (200)")
    parser.add_argument("--storm", type=int, default=3,
                        help="429s in a row for the stormed pond (3)")
    parser.add_argument("--retry-after", type=int, default=2, help="their retry_after (2 s)")
    parser.add_argument("--stormed-at", type=int, default=20,
                        help="the stormed pond's place in the order of service (20)")
    parser.add_argument("--talk", type=float, default=0.0, metavar="PER_S",
                        help="members' /points per second in live ponds meanwhile (0: none)")
    parser.add_argument("--talkers", type=int, default=10, help="live ponds that talk (10)")
    args = parser.parse_args(argv)
    if args.ponds <= KICKED_AT or not 0 <= args.stormed_at < args.ponds \
            or args.stormed_at == KICKED_AT:
        parser.error(f"need more than {KICKED_AT} ponds and a stormed pond other than "
                     f"the kicked one (#{KICKED_AT})")
    r = asyncio.run(run(args))
    kicked, stormed = r["kicked"], r["stormed"]
    others = sorted(t for c, t in r["arrived"].items() if c not in (kicked, stormed))
    answered = args.ponds - 1
    span = others[-1] - others[0] if len(others) > 1 else 0.0
    rate = (len(others) - 1) / span if span > 0 else 0.0
    stormed_at = r["arrived"].get(stormed)
    late = None if stormed_at is None or not others else stormed_at - others[-1]
    rates, all_rates = r["rates"], r["all_rates"]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"broadcast: {args.ponds} ponds (one kicked, one answering 429 {args.storm} times "
          f"with retry_after={args.retry_after} s), the real bot against the emulator")
    copies = Counter(n for c, n in r["copies"].items() if c != kicked)
    exact = (copies == {1: answered} and r["copies"][kicked] == 0
             and r["kicked_status"] == [("inactive",)]
             and r["states"] == {"sent": answered, "skipped": 1})
    print(f"  {'exact' if exact else 'NOT exact'}: {answered} ponds answered with one copy "
          f"each (copies per pond {dict(copies)}), the kicked pond none and inactive; "
          f"delivery rows {r['states']}")
    print(f"  copies: {len(others)} to the other ponds in {span:.2f} s = {rate:.1f}/s at the "
          f"emulator")
    print(f"  busiest second {rates['per_second']} (limit 30; everything sent: "
          f"{all_rates['per_second']}), busiest group minute {rates['per_group_minute']} "
          f"(limit 20), busiest chat second {rates['per_chat_second']}")
    print(f"  flood 429s: {r['flood_429']} (beyond the {args.storm} injected)")
    where = "n/a" if late is None else (
        f"{late:.2f} s after" if late >= 0 else f"{-late:.2f} s before")
    print(f"  stormed pond (#{args.stormed_at}): its copy came {where} the last of the others")
    tries = r["attempts"]
    waits = [b - a - args.retry_after for a, b in itertools.pairwise(tries)]
    print(f"    its {len(tries)} attempts at +" + ", +".join(f"{t - tries[0]:.2f}" for t in tries)
          + f" s: each retry came at most {max(waits, default=0.0):.2f} s after its "
          f"retry_after passed")
    if args.talk:
        d = r["delays"]
        p50 = statistics.median(d) if d else 0.0
        print(f"  live ponds: {r['asked']} questions at {args.talk:g}/s, {len(d)} answered "
              f"during the broadcast; reply p50 {p50 * 1000:.0f} ms, max "
              f"{max(d, default=0.0) * 1000:.0f} ms")
    print(f"  ratio: {rate / CEILING:.2f}   (copies/s at the emulator / 30 per s; goal >= 0.9)")
    print(f"  peak RSS: {rss_mb:.0f} MB (this process: the emulator)")
    failed = []
    if not exact:
        failed.append("not exact")
    if all_rates["per_second"] > 30 or rates["per_group_minute"] > 20 or rates["refused"]:
        failed.append("limits")
    if r["flood_429"]:
        failed.append("self-caused 429s")
    if r["tracebacks"] or r["token_logged"]:
        failed.append("the bot's log")
    if args.talk and len(r["delays"]) < r["asked"]:
        failed.append("replies missing")
    if failed:
        print(f"  FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
