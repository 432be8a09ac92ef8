"""The benchmarks still run and still check their results (small N: figures are not
judged here, only that each bench completes its exactness checks and reports)."""

from __future__ import annotations

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
