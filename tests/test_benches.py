"""The benchmarks still run and still check their results (small N: figures are not
judged here, only that each bench completes its exactness checks and reports)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bench(*args: str) -> str:
    r = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.mark.parametrize("kind", ["button", "text"])
def test_checkin_bench(kind: str) -> None:
    out = bench("bench/checkin.py", "--n", "300", "--warmup", "20", "--kind", kind)
    assert f"check-ins ({kind}), N=300" in out
    assert "ratio:" in out and "peak RSS:" in out


def test_red_packet_bench() -> None:
    out = bench("bench/redpacket.py", "--n", "400", "--shares", "30")
    assert out.count("exact: 30 winners, sum = total, 400 callbacks answered once each") == 2
    assert out.count("ratio:") == 2 and "peak RSS:" in out


def test_redeem_bench() -> None:
    out = bench("bench/redeem.py", "--n", "300", "--stock", "10")
    assert "exact: 10 sold, 10 distinct codes, each only in its owner's DM, stock 0" in out
    assert "exact: 300 draws, one each, every press answered once" in out
    assert out.count("ratio:") == 2 and "peak RSS:" in out


def test_export_bench() -> None:
    out = bench("bench/export.py", "--n", "3000", "--members", "50")
    assert "exact: 3000 rows, every cell as the Python formatting writes it" in out
    assert re.search(r"^  ratio: \d+\.\d\d ", out, re.MULTILINE) and "peak RSS" in out


def test_scale_bench() -> None:
    out = bench("bench/scale.py", "--small", "100", "--big", "2000", "--n", "100",
                "--shares", "10", "--turns", "1", "--plans")
    assert "N=100 members pressing, with 100 and 2000 members" in out
    assert len(re.findall(r"^    ratio: \d+\.\d\d ", out, re.MULTILINE)) == 2
    assert "statements that scan a whole table:" in out and "peak RSS" in out
    assert "SCAN ledger_entry" not in out and "SCAN lottery_draw" not in out


@pytest.mark.e2e
def test_memory_bench() -> None:
    out = bench("bench/memory.py", "--idle", "0.5", "--rounds", "1")
    assert re.search(r"^  pondbot run \(one pond, greeted\): +\d+\.\d MB$", out, re.MULTILINE)
    stack = re.search(r"^  the same on pondbot's stack: +(\d+\.\d) MB +\((\d+\.\d\d) of bare",
                      out, re.MULTILINE)
    assert stack is not None and 1.0 < float(stack[2]) < 1.5, out  # the stack was loaded
    assert re.search(r"^  ratio: \d+\.\d\d ", out, re.MULTILINE)


@pytest.mark.e2e
def test_broadcast_bench() -> None:
    """The real bot's broadcast against the emulator: limits and exactness, not speed."""
    out = bench("bench/broadcast.py", "--ponds", "40", "--stormed-at", "10", "--storm", "2",
                "--retry-after", "1")
    assert "exact: 39 ponds answered with one copy each" in out
    busiest = re.search(r"busiest second (\d+) \(limit 30; everything sent: (\d+)\)", out)
    assert busiest is not None and int(busiest[2]) <= 30, out
    assert "flood 429s: 0 " in out
    assert re.search(r"^  ratio: \d+\.\d\d ", out, re.MULTILINE)


# Benches without a floor to compare with. The soak prints its checks instead; the
# segments bench times its export in absolute seconds (a floor is still to be chosen).
NO_RATIO = {"soak.py", "segments.py"}


def test_every_bench_prints_its_ratio_in_one_form_and_runs_small_here() -> None:
    """`ratio: 0.83` (two decimals after one space), and a small run in this file."""
    this = Path(__file__).read_text()
    benches = [p for p in sorted((ROOT / "bench").glob("*.py"))
               if "def main(" in p.read_text() and p.name not in NO_RATIO]
    assert len(benches) >= 6
    for path in benches:
        assert re.search(r"""["']\s*ratio: \{[^}]*:\.2f\}""", path.read_text()), path.name
        assert f'"bench/{path.name}"' in this, path.name


SOAK_CHECKS = (
    "ledger invariant", "ledger keys unique", "red packets exact",
    "one check-in per member and day", "votes paid once per ballot", "guess prizes paid once",
    "gives paid as sent", "callbacks answered at most once", "no duplicate posts",
    "no self-caused 429", "0 lost check-ins", "0 lost gives", "0 lost grabs",
    "0 lost guesses", "0 lost votes", "every game posted", "scheduled closes done",
    "bot never exited on its own", "clean shutdown (SIGTERM)", "Bot API spec respected",
    "token never logged",
)


@pytest.mark.e2e
def test_soak() -> None:
    """One minute of the soak: the real bot process, killed and restarted, under faults."""
    r = subprocess.run(
        [sys.executable, "bench/soak.py", "--minutes", "1"], capture_output=True, text=True,
        cwd=ROOT, timeout=400, check=False,
    )
    out = r.stdout
    assert "injected:" in out and "SIGKILLs:" in out, r.stderr[-2000:]
    for name in SOAK_CHECKS:
        assert re.search(rf"^check {re.escape(name)}: .* (OK|FAIL)$", out, re.MULTILINE), name
    assert r.returncode == 0, out[out.find("checks:"):] + r.stderr[-2000:]


def test_segments_bench() -> None:
    out = bench("bench/segments.py", "--members", "500")
    assert "shop: 500 members, 2500 orders" in out
    assert "exact: 500 rows, every member's figures, segment and churn risk as expected" in out
    assert "pondbot export segments:" in out


@pytest.mark.e2e
@pytest.mark.postgres
def test_replicas_bench() -> None:
    """One and two real webhook instances on PostgreSQL + Redis (the leader's failover
    is tests/e2e/test_replicas_e2e.py's)."""
    out = bench("bench/replicas.py", "--n", "200", "--shares", "20", "--warmup", "30",
                "--kills", "0", "--broadcast", "0")
    assert out.count("exact: 20 winners, sum = total, 200 callbacks answered once each") == 2
    assert re.search(r"^  ratio: \d+\.\d\d ", out, re.MULTILINE)
    assert "third instance (on paper):" in out and "peak RSS:" in out
