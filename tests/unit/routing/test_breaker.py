"""The breaker: closed -> open after N failures in the window (or a ratio), half-open after the cooldown."""

from __future__ import annotations

from aigw.config.models import CircuitBreakerConfig
from aigw.routing.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, Window


def cfg(**kw: object) -> CircuitBreakerConfig:
    return CircuitBreakerConfig.model_validate({"failures": 3, "window_s": 10, "cooldown_s": 5, **kw})


def test_opens_after_n_failures_within_the_window() -> None:
    b = Breaker(cfg())
    assert not b.failure(0.0, trial=False)
    assert not b.failure(1.0, trial=False)
    assert b.phase(1.0) == CLOSED
    assert b.failure(2.0, trial=False)
    assert b.phase(2.0) == OPEN


def test_failures_older_than_the_window_do_not_count() -> None:
    b = Breaker(cfg())
    b.failure(0.0, trial=False)
    b.failure(1.0, trial=False)
    assert not b.failure(12.5, trial=False)  # the first two fell out of the 10 s window
    assert b.phase(12.5) == CLOSED


def test_successes_do_not_reset_the_count_but_the_ratio_mode_weighs_them() -> None:
    b = Breaker(cfg(failures=100, error_ratio=0.5, min_calls=4))
    b.success(0, trial=False)
    b.failure(0, trial=False)
    b.success(0, trial=False)
    assert b.phase(0) == CLOSED  # 1 of 3: too few calls to judge
    assert b.failure(0, trial=False)  # 2 of 4 = 50%
    assert b.phase(0) == OPEN


def test_half_open_after_cooldown_lets_a_limited_number_of_trials_through() -> None:
    b = Breaker(cfg(half_open_calls=2))
    b.trip(0.0)
    assert not b.try_trial(4.9)
    assert b.phase(5.0) == HALF_OPEN
    assert b.try_trial(5.0)
    assert b.try_trial(5.0)
    assert not b.try_trial(5.0)
    b.release_trial()
    assert b.try_trial(5.1)


def test_a_trial_that_hangs_holds_its_permit_for_a_cooldown_only() -> None:
    """Without Redis a trial that never answered kept the deployment from every other request for its whole
    timeout (600 s by default); its permit now lapses after a cooldown, as the shared permits' lease does."""
    b = Breaker(cfg(half_open_calls=1))  # cooldown 5 s
    b.trip(0.0)
    assert b.try_trial(5.0)
    assert not b.try_trial(9.9)
    assert b.try_trial(10.0)  # the first still hangs: a second trial may go
    assert not b.try_trial(12.0)
    assert b.failure(13.0, trial=True) and b.phase(13.0) == OPEN  # a trial's end still settles the breaker


def test_a_trial_success_closes_and_a_trial_failure_reopens_for_another_cooldown() -> None:
    b = Breaker(cfg())
    b.trip(0.0)
    assert b.try_trial(5.0)
    assert b.failure(5.0, trial=True)
    assert b.phase(9.9) == OPEN and b.phase(10.0) == HALF_OPEN
    assert b.try_trial(10.0)
    assert b.success(10.0, trial=True)
    assert b.phase(10.0) == CLOSED
    assert b.window.totals(10.0) == (0, 0)


def test_results_of_calls_started_before_opening_do_not_move_an_open_breaker() -> None:
    b = Breaker(cfg())
    b.trip(0.0)
    assert not b.failure(1.0, trial=False)
    assert not b.success(1.0, trial=False)
    assert b.phase(1.0) == OPEN and b.until == 5.0


def test_disabled_never_opens() -> None:
    b = Breaker(cfg(enabled=False))
    for t in range(10):
        b.failure(float(t), trial=False)
    assert b.phase(10.0) == CLOSED


def test_end_cooldown_makes_an_open_breaker_half_open_now() -> None:
    b = Breaker(cfg())
    b.trip(0.0)
    b.end_cooldown(1.0)
    assert b.phase(1.0) == HALF_OPEN


def test_adopt_takes_only_newer_shared_verdicts() -> None:
    b = Breaker(cfg())
    assert b.adopt(OPEN, until=50.0, gen=1)
    assert b.phase(10.0) == OPEN
    assert not b.adopt(CLOSED, until=0.0, gen=1)  # same generation: already seen
    assert b.phase(10.0) == OPEN
    assert b.adopt(CLOSED, until=0.0, gen=2)
    assert b.phase(10.0) == CLOSED


def test_window_counts_by_bucket() -> None:
    w = Window(10.0)
    w.add(0.0, 2, 1)
    w.add(5.0, 3, 0)
    assert w.totals(5.0) == (5, 1)
    assert w.totals(10.5) == (3, 0)
    assert w.totals(30.0) == (0, 0)
