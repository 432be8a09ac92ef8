"""A red packet grab storm through one and through two real bot processes, on
PostgreSQL and Redis, and the scheduler's leader killed during broadcasts.

    .venv/bin/python bench/replicas.py [--n 10000] [--shares 100] [--kills 5] [--ponds 60]

Everything is real but Telegram: a private PostgreSQL and a private `redis-server`
(tests/rig/postgres.py, tests/rig/redis.py; `PONDBOT_TEST_PG_URL` for a running
PostgreSQL), the project's Bot API emulator in webhook mode (it POSTs every update, up
to `max_connections` at once, resending until a 200), the round-robin balancer of
tests/rig/balancer.py, and `pondbot run --webhook` processes behind it
(tests/rig/replicas.py). Two instances are started on a fresh database and warmed
up; then N distinct members press the grab button of one packet of `shares` shares at
once, with the balancer sending everything to the first instance; then N other members
press a new packet's button with the balancer sending to both. Each result must be
exact: `shares` winners, their credits summing to the total, every press answered
once, the ledger invariant. Prints grabs/s, the p50/p99
of a webhook request (the balancer and the instance: handled and committed), the
p99 from press to answer (the wait in the storm's queue), and where the time goes:
CPU seconds per 1000 grabs of the instances (Python), of PostgreSQL's processes, of
redis-server and of this process (the emulator and the balancer), how busy the
machine's cores were (with these processes, and with everything else running on the
machine: a shared machine's load skews the rates), plus PostgreSQL commits and Redis
commands per grab. `ratio:` is the 2-instance throughput over twice the 1-instance one.
`--without-redis` also measures one instance without `REDIS_URL` (what Redis costs).
Progress lines with the elapsed seconds go to stderr.

Broadcast (on the 2-instance cluster): a promotion post to `broadcast` ponds fires on
the leader while a member in every other one of them asks for their points (answered by
both instances): one copy in every pond, and the busiest second overall, busiest minute
of a group and busiest second of a chat of what both sent, from the emulator's log of
sends, inside Telegram's limits (30/s, 20/min per group).

Failover (on the 2-instance cluster): `kills` times, a promotion post is scheduled to
`ponds` ponds, the leader is killed with SIGKILL once the broadcast is under way, the
other instance's health check must say it leads within 10 s, the broadcast must end
with exactly one copy in every pond; the killed instance is started again (it follows).
Prints each takeover time, their maximum, doubled and missing posts: a send under way
when the leader died is recorded `unknown` and never repeated (at most once), so its
pond may lack the post; any other missing post fails the bench.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from redis.asyncio import Redis  # noqa: E402

from bot.emulator import Emulator  # noqa: E402
from bot.emulator.limits import send_rates  # noqa: E402
from storage.migrate import aupgrade  # noqa: E402
from tests.rig.postgres import ExternalPostgres, PostgresServer  # noqa: E402
from tests.rig.redis import RedisServer  # noqa: E402
from tests.rig.replicas import (  # noqa: E402
    Cluster,
    confirm_promo,
    member_of,
    posts_in,
    seed_ponds,
    wait_leader,
)

POND = -1001000000999
OWNER, OPERATOR = 7_000_001, 7_000_002
WARMUP_FIRST, FIRST = 5_000_000, 1_000_000
TOTAL_PER_SHARE = 10
TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of one process (0 when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_cpu() -> float:
    """CPU seconds every process on the machine used so far (busy, not idle)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / TICK


def children_of(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except OSError:
            continue
        if int(raw[raw.rindex(")") + 2 :].split()[1]) == parent:
            found.append(int(stat.parent.name))
    return found


@dataclass
class Machine:
    """What the storm runs on, and how to read each part's CPU time."""

    pg: PostgresServer | ExternalPostgres
    redis: RedisServer
    postmaster: int | None = None

    def pg_cpu(self) -> float | None:
        if self.postmaster is None:
            return None
        pids = [self.postmaster, *children_of(self.postmaster)]
        return sum(cpu_of(p) for p in pids)

    async def redis_info(self) -> tuple[float, int]:
        client = Redis.from_url(self.redis.url)
        try:
            cpu = await client.info("cpu")
            stats = await client.info("stats")
        finally:
            await client.aclose()
        return (float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
                int(stats["total_commands_processed"]))


@dataclass
class Snapshot:
    at: float
    instances: float
    pg: float | None
    redis: float
    redis_commands: int
    own: float
    commits: int
    machine: float


async def snapshot(machine: Machine, cluster: Cluster, dbname: str) -> Snapshot:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    redis_cpu, commands = await machine.redis_info()
    [(commits,)] = await cluster.query(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", dbname
    )
    return Snapshot(
        at=time.perf_counter(),
        instances=sum(cpu_of(i.proc.pid) for i in cluster.instances if i.proc is not None),
        pg=machine.pg_cpu(),
        redis=redis_cpu,
        redis_commands=commands,
        own=usage.ru_utime + usage.ru_stime,
        commits=int(commits),
        machine=machine_cpu(),
    )


@dataclass
class StormResult:
    size: int
    redis: bool
    grabs_per_s: float
    p50_ms: float
    p99_ms: float
    wait_p99_ms: float
    cpu: dict[str, float | None] = field(default_factory=dict)  # seconds per 1000 grabs
    busy: float = 0.0  # share of the machine's cores these processes used in the storm
    machine_busy: float = 0.0  # share of the machine's cores used by everything
    commits_per_grab: float = 0.0
    redis_per_grab: float = 0.0
    served: dict[str, int] = field(default_factory=dict)
    broadcast: dict[str, Any] | None = None


_T0 = time.perf_counter()


def progress(what: str) -> None:
    """A line on stderr with the seconds since the start: where a run spends its time."""
    print(f"[{time.perf_counter() - _T0:6.1f} s] {what}", file=sys.stderr, flush=True)


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] * 1000 if values else 0.0
    return statistics.quantiles(values, n=100)[q - 1] * 1000


async def grab_storm(emu: Emulator, cluster: Cluster, first: int, n: int, shares: int
                     ) -> tuple[float, list[str], int, int]:
    """A packet of `shares` shares pressed by `n` new members at once. Returns the
    seconds until every press was answered, the query ids, the packet's id and the
    update id before the storm."""
    for i in range(n):
        emu.add_user(first + i, f"会员{i}")
    emu.send_message(POND, OPERATOR, f"/redpacket {shares * TOTAL_PER_SHARE} {shares}")
    post = await emu.wait_for_message(
        POND, lambda m: bool(m.get("reply_markup")) and "🧧" in str(m.get("text")), 60
    )
    await cluster.idle()
    data = post["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    [(packet_id,)] = await cluster.query("SELECT max(id) FROM red_packet")
    before = max(emu.updates)
    started = time.perf_counter()
    queries = [emu.click(POND, first + i, post["message_id"], data) for i in range(n)]
    records = [emu.callback_queries[q] for q in queries]
    deadline = started + max(120.0, n / 20)
    while not all(r.answered for r in records):
        if time.perf_counter() > deadline:
            left = sum(not r.answered for r in records)
            raise SystemExit(f"{left} presses unanswered:\n{cluster.logs()}")
        await asyncio.sleep(0.02)
    return time.perf_counter() - started, queries, int(packet_id), before


async def check_exact(emu: Emulator, cluster: Cluster, queries: list[str], packet_id: int,
                      shares: int, first: int, n: int) -> None:
    answered = Counter(e["query_id"] for e in emu.events if e["kind"] == "callback_answer")
    twice = [q for q in queries if answered[q] != 1]
    if twice:
        raise SystemExit(f"{len(twice)} presses not answered exactly once")
    rows = await cluster.query(
        "SELECT user_id, delta FROM ledger_entry WHERE idem_key LIKE $1",
        f"rp:{packet_id}:grab:%",
    )
    [(total,)] = await cluster.query("SELECT total FROM red_packet WHERE id = $1", packet_id)
    if len(rows) != shares or len({u for u, _ in rows}) != shares:
        raise SystemExit(f"{len(rows)} grabs credited for {shares} shares")
    if sum(d for _, d in rows) != total or not all(first <= u < first + n for u, _ in rows):
        raise SystemExit("the credits do not add up to the packet")
    if not await cluster.invariant_ok():
        raise SystemExit("the ledger invariant does not hold")


async def measure(machine: Machine, emu: Emulator, cluster: Cluster, dbname: str,
                  args: argparse.Namespace, first_member: int, size: int, redis: bool
                  ) -> StormResult:
    """One storm through the first `size` instances of the cluster."""
    cluster.balancer.backends = [i.url for i in cluster.instances[:size]]
    hits = Counter(cluster.balancer.hits)
    first = await snapshot(machine, cluster, dbname)
    seconds, queries, packet_id, before = await grab_storm(
        emu, cluster, first_member, args.n, args.shares
    )
    last = await snapshot(machine, cluster, dbname)
    await cluster.idle()
    await check_exact(emu, cluster, queries, packet_id, args.shares, first_member, args.n)
    lat = [d.seconds for d in emu.webhook_deliveries if d.update_id > before and d.status == 200]
    waits = [emu.callback_queries[q].attempts[0] - emu.callback_queries[q].created
             for q in queries]
    per_k = 1000 / args.n
    pg_cpu = None if first.pg is None or last.pg is None else last.pg - first.pg
    capacity = (last.at - first.at) * (os.cpu_count() or 1)
    ours = (last.instances - first.instances) + (pg_cpu or 0) + (last.redis - first.redis) + (
        last.own - first.own)
    progress(f"{size} instance(s): {args.n / seconds:.0f} grabs/s, exact")
    return StormResult(
        size=size,
        redis=redis,
        grabs_per_s=args.n / seconds,
        p50_ms=pct(lat, 50),
        p99_ms=pct(lat, 99),
        wait_p99_ms=pct(waits, 99),
        cpu={
            "python": (last.instances - first.instances) * per_k,
            "postgres": None if pg_cpu is None else pg_cpu * per_k,
            "redis": (last.redis - first.redis) * per_k,
            "emulator+balancer": (last.own - first.own) * per_k,
        },
        busy=ours / capacity,
        machine_busy=(last.machine - first.machine) / capacity,
        commits_per_grab=(last.commits - first.commits) / args.n,
        redis_per_grab=(last.redis_commands - first.redis_commands) / args.n,
        served={k.rsplit(":", 1)[1]: v for k, v in (cluster.balancer.hits - hits).items()},
    )


async def with_cluster(machine: Machine, args: argparse.Namespace, workdir: Path,
                       *, redis: bool = True
                       ) -> tuple[list[StormResult], list[dict[str, Any]] | None]:
    """With Redis: two instances started, the storm through the first alone, then
    through both (each its own new members), then the failover rounds. Without: one."""
    size = 2 if redis else 1
    dbname = await machine.pg.create_database()
    url = machine.pg.url_for(dbname)
    await aupgrade(url)
    progress(f"database {dbname} migrated")
    client = Redis.from_url(machine.redis.url)
    await client.flushall()
    await client.aclose()
    # Presses wait in the storm's queue far longer than Telegram's 15 s: measured, not
    # refused.
    async with Emulator(callback_timeout=3600.0) as emu:
        emu.add_user(OWNER, "店主", username="shop_owner")
        emu.add_user(OPERATOR, "Operator", username="operator")
        emu.create_group(POND, "Bench pond", admins=[OWNER, OPERATOR])
        cluster = Cluster(emu, workdir, url, machine.redis.url if redis else None, size=size,
                          operator_ids=str(OPERATOR))
        for instance in cluster.instances:
            instance.log_path = workdir / f"{instance.name}{'' if redis else '-plain'}.log"
        async with cluster:
            progress(f"{size} instance(s) serving")
            emu.add_bot_to_group(POND, OWNER, as_admin=True)
            await emu.wait_for_message(POND, timeout=60, since=0)
            # Warm-up through every instance: connections, statement caches, the pond's
            # first sighting.
            await grab_storm(emu, cluster, WARMUP_FIRST, args.warmup, 10)
            await cluster.idle()
            progress("warmed up")
            results = [await measure(machine, emu, cluster, dbname, args, FIRST, 1, redis)]
            if size == 2:
                results.append(await measure(machine, emu, cluster, dbname, args,
                                             FIRST + args.n + 1000, 2, redis))
            cluster.balancer.backends = [i.url for i in cluster.instances]
            kills = None
            if size == 2 and args.broadcast:
                results[-1].broadcast = await broadcast(emu, cluster, args.broadcast)
            if size == 2 and args.kills:
                kills = await failover(emu, cluster, args.kills, args.ponds)
            errors = sum(i.logs().count("Traceback") for i in cluster.instances)
            if errors:
                raise SystemExit(f"{errors} tracebacks in the instances' logs:\n"
                                 + cluster.logs())
    progress("instances stopped")
    await machine.pg.drop_database(dbname)
    return results, kills


async def broadcast(emu: Emulator, cluster: Cluster, ponds: int) -> dict[str, Any]:
    """A promotion post to `ponds` ponds from the leader while a member in every other
    one asks for their points (both instances answer): the busiest windows of what the
    two sent together, from the emulator's log of sends."""
    await cluster.query("UPDATE pond SET status = 'inactive'")
    ids = [-1007000000000 - i for i in range(ponds)]
    await seed_ponds(cluster, emu, ids, OPERATOR, members=1)
    text = "双十二 全场5折 🎉"
    await confirm_promo(emu, OPERATOR, f"/promo at +4s {text}")
    since, sent_before = len(emu.events), len(emu.sends)
    await asyncio.sleep(3.5)
    hits = Counter(cluster.balancer.hits)
    for chat_id in ids[::2]:
        emu.send_message(chat_id, member_of(chat_id, 0), "/points")
    await emu.wait_for_message(OPERATOR, lambda m: "📣" in str(m.get("text")), 180,
                               since=since)
    await cluster.idle()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    talkers = ids[::2]
    while sum(1 for c in talkers for m in emu.messages_in(c) if "reply_to_message" in m
              ) < len(talkers):
        if loop.time() > deadline:
            raise SystemExit("the crowd's replies did not all come")
        await asyncio.sleep(0.2)
    copies = Counter(len(posts_in(emu, c, text)) for c in ids)
    if copies != {1: ponds}:
        raise SystemExit(f"broadcast copies per pond: {dict(copies)}")
    rates = send_rates(emu.sends[sent_before:])
    rates["replies"] = len(talkers)
    rates["served"] = sorted((cluster.balancer.hits - hits).values())
    return rates


async def failover(emu: Emulator, cluster: Cluster, kills: int, ponds: int
                   ) -> list[dict[str, Any]]:
    """`kills` rounds: a broadcast to `ponds` ponds, its leader killed mid-way."""
    loop = asyncio.get_running_loop()
    rounds = []
    for k in range(kills):
        # Ponds of their own each round: a pond takes one promotion post a week, so the
        # ponds before (the storm's too) leave the shop.
        await cluster.query("UPDATE pond SET status = 'inactive'")
        ids = [-1006000000000 - k * 10_000 - i for i in range(ponds)]
        await seed_ponds(cluster, emu, ids, OPERATOR)
        text = f"第{k + 1}轮 限时秒杀 🎉"
        post_id = await confirm_promo(emu, OPERATOR, f"/promo at +3s {text}")
        since = len(emu.events)
        leader = await wait_leader(cluster, 15)
        deadline = loop.time() + 60
        while sum(len(posts_in(emu, c, text)) for c in ids) < max(3, ponds // 6):
            if loop.time() > deadline:
                raise SystemExit(f"round {k + 1}: the broadcast did not start")
            await asyncio.sleep(0.02)
        leader.kill()
        killed = loop.time()
        successor = await wait_leader(cluster, 30)
        takeover = loop.time() - killed
        await emu.wait_for_message(OPERATOR, lambda m: "📣" in str(m.get("text")), 120,
                                   since=since)
        finished = loop.time() - killed
        per_pond = {c: len(posts_in(emu, c, text)) for c in ids}
        copies = Counter(per_pond.values())
        unknown = {c for (c,) in await cluster.query(
            "SELECT chat_id FROM broadcast_delivery WHERE post_id = $1 AND state = 'unknown'",
            post_id)}
        lost = {c for c, n in per_pond.items() if n == 0}
        await leader.proc.wait() if leader.proc else None
        await leader.start()
        await leader.wait_listening(cluster.http, 60)
        rounds.append({
            "killed": leader.name, "successor": successor.name, "takeover_s": takeover,
            "finished_s": finished, "doubled": sum(v for c, v in copies.items() if c > 1),
            "missing": len(lost), "in_doubt": len(unknown),
            "missing_not_in_doubt": len(lost - unknown),
        })
    return rounds


def third_instance(two: StormResult) -> str:
    """What a third instance would need on this machine, from the measured costs (CPU
    ms per grab): one instance is one Python thread, so it tops out near one core of its
    own; the machine's cores are shared with PostgreSQL and Redis (and here the
    emulator and the balancer, which stand in for Telegram and HAProxy)."""
    cores = os.cpu_count() or 1
    python = (two.cpu["python"] or 0.0) / 1000
    backend = ((two.cpu["postgres"] or 0.0) + (two.cpu["redis"] or 0.0)) / 1000
    harness = (two.cpu["emulator+balancer"] or 0.0) / 1000
    if python <= 0:
        return "n/a"
    per_instance = 1 / python  # grabs/s one instance gives with a core to itself
    machine = cores / (python + backend)  # grabs/s the cores give, without the harness
    here = cores / (python + backend + harness)
    return (
        f"a grab costs {python * 1000:.2f} CPU ms of Python, {backend * 1000:.2f} ms of "
        f"PostgreSQL + Redis (+ {harness * 1000:.2f} ms of emulator and balancer here). "
        f"One instance tops out near {per_instance:.0f} grabs/s (one core); {cores} cores "
        f"give ~{machine:.0f} grabs/s to all instances together (~{here:.0f} with the "
        f"harness on them). Two instances can already use {min(2 * per_instance, machine):.0f}"
        f" of those, so a third only pays with more cores: three at full speed need "
        f"~{3 * per_instance * (python + backend):.1f} cores"
    )


def start_machine() -> Machine:
    """PostgreSQL (or `PONDBOT_TEST_PG_URL`) and Redis, outside the event loop."""
    pg: PostgresServer | ExternalPostgres
    if os.environ.get("PONDBOT_TEST_PG_URL"):
        pg = ExternalPostgres(os.environ["PONDBOT_TEST_PG_URL"])
    else:
        pg = PostgresServer()
        pg.start()
    redis = RedisServer()
    try:
        redis.start()
    except BaseException:
        stop_machine(Machine(pg, redis))
        raise
    machine = Machine(pg, redis)
    if isinstance(pg, PostgresServer):
        machine.postmaster = int((pg.datadir / "postmaster.pid").read_text().split()[0])
    return machine


def stop_machine(machine: Machine) -> None:
    machine.redis.stop()
    if isinstance(machine.pg, PostgresServer):
        machine.pg.stop()
    else:
        machine.pg.close()


async def run(machine: Machine, args: argparse.Namespace
              ) -> tuple[list[StormResult], list[dict[str, Any]]]:
    results: list[StormResult] = []
    kills: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pondbot-replicas-") as tmp:
        if args.without_redis:
            plain, _ = await with_cluster(machine, args, Path(tmp), redis=False)
            results += plain
        shared, rounds = await with_cluster(machine, args, Path(tmp))
        results += shared
        kills = rounds or kills
    return results, kills


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="distinct members (10000)")
    parser.add_argument("--shares", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=300, help="presses before (300)")
    parser.add_argument("--kills", type=int, default=5, help="leader kills (5; 0: none)")
    parser.add_argument("--ponds", type=int, default=60,
                        help="ponds per broadcast in a failover round (60)")
    parser.add_argument("--broadcast", type=int, default=200, metavar="PONDS",
                        help="a broadcast to this many ponds during a crowd (200; 0: none)")
    parser.add_argument("--without-redis", action="store_true",
                        help="also one instance without REDIS_URL (what Redis costs)")
    args = parser.parse_args(argv)
    machine = start_machine()
    try:
        results, kills = asyncio.run(run(machine, args))
    finally:
        stop_machine(machine)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"replicas: N={args.n} members grab a packet of {args.shares} shares, "
          f"PostgreSQL + Redis, webhook through a round-robin balancer, "
          f"{os.cpu_count()} cores")
    for r in results:
        label = "1 instance" if r.size == 1 else f"{r.size} instances"
        label += "" if r.redis else ", no Redis"
        print(f"  [{label}]  exact: {args.shares} winners, sum = total, "
              f"{args.n} callbacks answered once each")
        print(f"    {r.grabs_per_s:8.0f} grabs/s   webhook request p50 {r.p50_ms:6.1f} ms  "
              f"p99 {r.p99_ms:6.1f} ms   press to answer p99 {r.wait_p99_ms:7.0f} ms")
        print("    CPU s per 1000 grabs: " + ", ".join(
            f"{k} {fmt(v)}" for k, v in r.cpu.items()))
        print(f"    cores busy: {r.busy:.0%} with these processes, {r.machine_busy:.0%} with "
              f"everything running on the machine")
        print(f"    per grab: {r.commits_per_grab:.1f} PostgreSQL commits, "
              f"{r.redis_per_grab:.1f} Redis commands; served per instance port: {r.served}")
    one, two = [r for r in results if r.redis]
    limits_ok = True
    if two.broadcast:
        b = two.broadcast
        print(f"  broadcast: {args.broadcast} ponds from the leader while both instances "
              f"answer {b['replies']} members (requests per instance {b['served']}): "
              f"busiest second {b['per_second']} (limit 30), busiest group minute "
              f"{b['per_group_minute']} (limit 20), busiest chat second "
              f"{b['per_chat_second']}; refused by the limits: {b['refused']}; "
              f"one copy in every pond")
        limits_ok = b["per_second"] <= 30 and b["per_group_minute"] <= 20 and not b["refused"]
    print(f"  ratio: {two.grabs_per_s / (2 * one.grabs_per_s):.2f}   "
          f"(2-instance throughput / (2 x 1-instance); SPEC: >= 0.8 while the database "
          f"is not the bottleneck)")
    if kills:
        times = [k["takeover_s"] for k in kills]
        print(f"  failover: {len(kills)} leader kills during a broadcast to {args.ponds} "
              f"ponds: takeover " + ", ".join(f"{t:.1f}" for t in times)
              + f" s (max {max(times):.1f} s, limit 10 s); broadcast done "
              + ", ".join(f"{k['finished_s']:.1f}" for k in kills) + " s after the kill")
        doubled = sum(k["doubled"] for k in kills)
        missing = sum(k["missing"] for k in kills)
        doubt = sum(k["in_doubt"] for k in kills)
        unexplained = sum(k["missing_not_in_doubt"] for k in kills)
        print(f"    doubled posts: {doubled}   missing posts: {missing} "
              f"(sends in doubt at the kill, never repeated and reported: {doubt}; "
              f"missing without being in doubt: {unexplained})")
        if max(times) >= 10 or doubled or unexplained:
            print("  FAILED: failover")
            return 1
    if not limits_ok:
        print("  FAILED: limits")
        return 1
    print(f"  third instance (on paper): {third_instance(two)}")
    print(f"  peak RSS: {rss_mb:.0f} MB (this process: the emulator and the balancer)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
