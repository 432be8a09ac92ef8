"""The daily task list's rules (games/tasks.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from games.tasks import Facts, Game, Kind, State, day_bounds, task_list

OPEN = Game(offered=True, joinable=True)
DONE = Game(offered=True, joinable=True, done=True)
OVER = Game(offered=True, joinable=False)


def states(facts: Facts) -> dict[Kind, State]:
    return {t.kind: t.state for t in task_list(facts).tasks}


def test_every_game_done_completes_the_list() -> None:
    facts = Facts(True, {k: DONE for k in (Kind.vote, Kind.guess, Kind.red_packet,
                                            Kind.lottery)}, today=True)
    tasks = task_list(facts)
    assert [t.kind for t in tasks.tasks] == [Kind.checkin, Kind.vote, Kind.guess,
                                             Kind.red_packet, Kind.lottery]
    assert tasks.complete and tasks.task_day and tasks.left == 0


def test_one_open_task_or_no_check_in_is_not_complete() -> None:
    games = {Kind.vote: DONE, Kind.guess: OPEN}
    tasks = task_list(Facts(True, games, today=True))
    assert not tasks.complete and tasks.left == 1
    assert not task_list(Facts(False, {Kind.vote: DONE}, today=True)).complete


def test_only_the_games_the_pond_had_are_on_the_list() -> None:
    tasks = task_list(Facts(True, {Kind.vote: DONE, Kind.guess: Game()}, today=True))
    assert [t.kind for t in tasks.tasks] == [Kind.checkin, Kind.vote]
    assert tasks.complete


def test_a_check_in_alone_or_with_the_lottery_is_no_task_day() -> None:
    """No game an operator opened: no bonus, or every check-in would pay twice."""
    alone = task_list(Facts(True, {}, today=True))
    assert not alone.task_day and not alone.complete
    lottery = task_list(Facts(True, {Kind.lottery: DONE}, today=True))
    assert not lottery.task_day and not lottery.complete
    assert [t.kind for t in lottery.tasks] == [Kind.checkin, Kind.lottery]


def test_a_game_that_ran_out_does_not_count_against_the_member() -> None:
    facts = Facts(True, {Kind.vote: DONE, Kind.red_packet: OVER}, today=True)
    assert states(facts)[Kind.red_packet] is State.over
    assert task_list(facts).complete


def test_games_all_missed_earn_nothing() -> None:
    """Over tasks are not held against the member, but one game must be done."""
    facts = Facts(True, {Kind.vote: OVER, Kind.red_packet: OVER, Kind.lottery: DONE},
                  today=True)
    tasks = task_list(facts)
    assert tasks.task_day and tasks.left == 0 and not tasks.complete


def test_a_past_day_has_nothing_open_any_more() -> None:
    facts = Facts(False, {Kind.vote: OPEN}, today=False)
    assert states(facts) == {Kind.checkin: State.over, Kind.vote: State.over}
    assert not task_list(facts).complete
    done = Facts(True, {Kind.vote: DONE, Kind.guess: OPEN}, today=False)
    assert task_list(done).complete  # the round could not be joined for that day any more


def test_day_bounds_are_the_pond_s_local_midnights() -> None:
    start, end = day_bounds(date(2026, 12, 6), "Asia/Shanghai")
    assert start == datetime(2026, 12, 5, 16, 0, tzinfo=UTC)
    assert end == datetime(2026, 12, 6, 16, 0, tzinfo=UTC)
    start, end = day_bounds(date(2026, 3, 8), "America/New_York")  # the clocks go forward
    assert (end - start).total_seconds() == 23 * 3600
