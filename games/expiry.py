"""Points expiry (SPEC F14): lots, spent first in first out, and what the daily job
works out from the ledger alone.

The rule. Every earning is a lot dated by the shop's local day it was earned on (a
member's earnings of one day make one lot). Spending takes the oldest lots first. With
`points_expiry_days` = N > 0, the job of local day T expires what is left of the lots
of days <= T - N (`expire` ledger entries, keyed `expire:<member>:<T - N>`), and a
lot's member is reminded once, `points_expiry_reminder_days` = R days before it
expires (on day L + N for the lot of day L). The balances held when lots began are one
lot of that moment. Lots begin with the migration that brought them, and again whenever
expiry is switched on (N from 0 to > 0, the first time or after it was off): points
earned while points did not expire were earned under no expiry, so they never count as
older than the switch-on — the first expiry comes N days after it, with the reminder R
days before, never at once. Changing N while expiry is on keeps the lots' days (only the
age changes). storage/expiry.py (`switched`) moves the epoch.

`Lots` below is that rule written out, lot by lot. The database keeps no lot rows: the
hot paths (a check-in, a grab) write their ledger entry and nothing more. The job needs
only this, per member:

    left of the lots of days <= L  ==  max(0, credits of days <= L  -  all debits)

where "all debits" are every negative entry so far, expiries included. Why: debits
always take the oldest open lot, and a lot earned later is newer than every lot open
when it is earned, so what has been taken is always a prefix of the lots in date order,
of size "all debits" (never more than was earned: balances never go negative). The
lots of days <= L are a prefix too, so what is left of them is the part of their sum
beyond the taken prefix. An expiry is itself a debit of exactly that part, so once it is
written the same formula gives 0: running the job again (a retry, a restart) expires
nothing more, and its key would refuse a second entry anyway. `tests/games/
test_expiry_model.py` checks the formula against `Lots` over random sequences.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta


@dataclass(slots=True)
class Lot:
    day: date
    left: int


class Lots:
    """A member's open lots, oldest first: the rule of F14 written out."""

    def __init__(self) -> None:
        self.lots: deque[Lot] = deque()

    @property
    def balance(self) -> int:
        return sum(lot.left for lot in self.lots)

    def earn(self, day: date, amount: int) -> None:
        if amount <= 0:
            raise ValueError("a lot holds points")
        if self.lots and day < self.lots[-1].day:
            raise ValueError("lots are earned in date order")
        if self.lots and self.lots[-1].day == day:
            self.lots[-1].left += amount
        else:
            self.lots.append(Lot(day, amount))

    def spend(self, amount: int) -> None:
        """Take `amount` from the oldest lots; refuses more than the balance."""
        if amount <= 0:
            raise ValueError("spend a positive amount")
        if amount > self.balance:
            raise ValueError("not enough points")
        while amount:
            lot = self.lots[0]
            taken = min(lot.left, amount)
            lot.left -= taken
            amount -= taken
            if lot.left == 0:
                self.lots.popleft()

    def left_through(self, day: date) -> int:
        """What is left of the lots of days <= `day`."""
        return sum(lot.left for lot in self.lots if lot.day <= day)

    def expire(self, through: date) -> int:
        """Close the lots of days <= `through`; returns the points they still held."""
        gone = 0
        while self.lots and self.lots[0].day <= through:
            gone += self.lots.popleft().left
        return gone


def left(credits_through: int, debits: int) -> int:
    """What is left of the lots earned up to a day, from the ledger's sums: the credits
    of those days and every debit so far (a positive number)."""
    return max(0, credits_through - debits)


def lot_left(credits_through: int, credits_before: int, debits: int) -> int:
    """What is left of one day's lot: of the lots through it, less of those before it."""
    return left(credits_through, debits) - left(credits_before, debits)


def last_expired_day(today: date, days: int) -> date:
    """The newest lot day the job of `today` expires (N = `days` > 0)."""
    return today - timedelta(days=days)


def expires_on(lot_day: date, days: int) -> date:
    return lot_day + timedelta(days=days)


CATCH_UP_DAYS = 7  # reminders a stopped bot still sends late: lots up to a week behind


def reminder_days(today: date, days: int, reminder: int) -> list[date]:
    """The lot days whose reminder is due by `today`: expiring within `reminder` days
    (and not today or before: those are expired by this very run), oldest first. A day
    missed while the bot was down is still covered, up to `CATCH_UP_DAYS` behind."""
    newest = today + timedelta(days=reminder - days)
    oldest = max(newest - timedelta(days=CATCH_UP_DAYS), today - timedelta(days=days - 1))
    out: list[date] = []
    day = oldest
    while day <= newest:
        out.append(day)
        day += timedelta(days=1)
    return out


@dataclass(frozen=True, slots=True)
class MemberSums:
    """One member's ledger sums as the job reads them: the credits through each lot
    day asked for (`credits[d]`: earned on days <= d) and every debit so far."""

    user_id: int
    credits: Mapping[date, int]
    debits: int


@dataclass(frozen=True, slots=True)
class Plan:
    """What the job does for one member: expire `expire` points (the lots through
    `through`) and remind of `reminders` (lot day -> points left in it)."""

    user_id: int
    through: date
    expire: int
    reminders: Mapping[date, int]


def cutoffs(through: date, lot_days: Iterable[date]) -> list[date]:
    """The lot days whose credit sums `plan` needs, oldest first."""
    days = {through}
    for day in lot_days:
        days.update((day, day - timedelta(days=1)))
    return sorted(days)


def plan(sums: MemberSums, through: date, lot_days: Iterable[date]) -> Plan:
    """Apply the formula: the expiry of the lots through `through`, and what each of
    `lot_days` (each after `through`) still holds once that expiry is written.
    `sums.credits` holds every day of `cutoffs(through, lot_days)`."""
    expire = left(sums.credits[through], sums.debits)
    debits = sums.debits + expire
    reminders: dict[date, int] = {}
    for day in sorted(lot_days):
        before = sums.credits[day - timedelta(days=1)]
        held = lot_left(sums.credits[day], before, debits)
        if held > 0:
            reminders[day] = held
    return Plan(sums.user_id, through, expire, reminders)
