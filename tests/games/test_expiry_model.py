"""Points expiry (F14): the lot model against the ledger formula the daily job uses.

Random sequences of earnings, spendings, daily expiry runs and replayed runs, with a
history from before lots began (one lot at the epoch), are played on the explicit FIFO
model (`games.expiry.Lots`) and on a ledger of entries (what the database holds). After
every step: the open lots sum to the balance, and for every lot day the formula over the
ledger's sums equals what the model has left of the lots through that day; each run
expires exactly what the model expires, once per key."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from games import expiry

EPOCH = date(2026, 1, 10)


@dataclass
class Ledger:
    """Entries as (local day, delta, key); pre-epoch credits count from the epoch day."""

    entries: list[tuple[date, int, str]] = field(default_factory=list)

    @property
    def balance(self) -> int:
        return sum(d for _, d, _ in self.entries)

    def used(self) -> set[str]:
        return {k for _, _, k in self.entries}

    def credits_through(self, day: date) -> int:
        if day < EPOCH:
            return 0  # the lots start at the epoch: nothing before it is a lot of its own
        return sum(d for when, d, _ in self.entries if d > 0 and when <= day)

    def debits(self) -> int:
        return -sum(d for _, d, _ in self.entries if d < 0)

    def sums(self, days: list[date]) -> expiry.MemberSums:
        return expiry.MemberSums(1, {d: self.credits_through(d) for d in days}, self.debits())


ops = st.lists(
    st.one_of(
        st.tuples(st.just("earn"), st.integers(1, 50), st.integers(0, 3)),
        st.tuples(st.just("spend"), st.integers(1, 60), st.just(0)),
        st.tuples(st.just("run"), st.just(0), st.integers(0, 2)),
        st.tuples(st.just("replay"), st.just(0), st.just(0)),
    ),
    max_size=60,
)
history = st.lists(st.integers(-30, 40).filter(bool), max_size=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=history, steps=ops, days=st.integers(1, 6), reminder=st.integers(0, 4))
def test_lots_sum_to_the_balance_and_the_formula_matches_the_model(
    history: list[int], steps: list[tuple[str, int, int]], days: int, reminder: int
) -> None:
    ledger, lots = Ledger(), expiry.Lots()
    # Before lots began: credits and debits at random, never below zero.
    for i, delta in enumerate(history):
        if ledger.balance + delta >= 0:
            ledger.entries.append((EPOCH - timedelta(days=20 - i), delta, f"old:{i}"))
    if ledger.balance:
        lots.earn(EPOCH, ledger.balance)  # the migration: one lot dated at the epoch
    today = EPOCH
    last_run: date | None = None

    def run(day: date) -> None:
        through = expiry.last_expired_day(day, days)
        lot_days = expiry.reminder_days(day, days, reminder)
        plan = expiry.plan(ledger.sums(expiry.cutoffs(through, lot_days)), through, lot_days)
        key = f"expire:1:{through}"
        if plan.expire and key not in ledger.used():
            ledger.entries.append((day, -plan.expire, key))
        gone = lots.expire(through)
        assert plan.expire == gone
        for lot_day, held in plan.reminders.items():
            assert lot_day > through
            assert held == lots.left_through(lot_day) - lots.left_through(
                lot_day - timedelta(days=1)
            )

    for n, (op, amount, step) in enumerate(steps):
        if op == "earn":
            today += timedelta(days=step)
            ledger.entries.append((today, amount, f"earn:{n}"))
            lots.earn(today, amount)
        elif op == "spend":
            amount = min(amount, ledger.balance)
            if amount:
                ledger.entries.append((today, -amount, f"spend:{n}"))
                lots.spend(amount)
        elif op == "run":
            today += timedelta(days=step)
            run(today)
            last_run = today
        elif last_run is not None:  # a retried run, a restart the same day
            before = list(ledger.entries)
            run(last_run if last_run == today else today)
            if last_run == today:
                assert ledger.entries == before  # nothing expires twice
        # (a) the open lots always sum to the balance
        assert lots.balance == ledger.balance >= 0
        # (b) the job's formula equals the model's remaining, for every lot day
        debits = ledger.debits()
        for k in range(-25, (today - EPOCH).days + 2):
            day = EPOCH + timedelta(days=k)
            assert expiry.left(ledger.credits_through(day), debits) == lots.left_through(day)


def test_reminder_days_cover_the_lots_expiring_within_the_window() -> None:
    today = date(2026, 3, 1)
    # Lots of days today-29 .. today-23 expire tomorrow .. in 7 days.
    assert expiry.reminder_days(today, 30, 7) == [
        today - timedelta(days=29 - k) for k in range(7)
    ]
    # Never a lot this run expires itself (reminder 0: none to send ahead of time).
    assert expiry.reminder_days(today, 30, 0) == []
    assert expiry.expires_on(date(2026, 1, 30), 30) == today
