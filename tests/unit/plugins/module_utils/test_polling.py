"""poll_until: the one way the collection waits on a cloud or an agent."""

from __future__ import annotations

from ansible_collections.appconsistent.snapshots.plugins.module_utils.polling import poll_until

from .test_pacing import FakeClock


def test_the_pauses_grow_by_the_factor_and_the_last_one_ends_at_the_deadline():
    clock = FakeClock()
    looks = []
    assert not poll_until(lambda: looks.append(clock.now - 1000), 20, clock.sleep, clock, first_interval=1.0,
                          max_interval=10.0, growth=2)
    assert clock.slept == [1.0, 2.0, 4.0, 8.0, 5.0]
    assert looks == [0.0, 1.0, 3.0, 7.0, 15.0, 20.0]


def test_a_fixed_interval_keeps_its_pause():
    clock = FakeClock()
    assert not poll_until(lambda: False, 12, clock.sleep, clock, first_interval=5, max_interval=5)
    assert clock.slept == [5, 5, 2]


def test_a_poll_that_is_done_at_once_waits_for_nothing():
    clock = FakeClock()
    assert poll_until(lambda: True, 0, clock.sleep, clock)
    assert clock.slept == []


def test_the_wait_ends_when_the_poll_says_done():
    clock = FakeClock()
    answers = iter([False, False, True])
    assert poll_until(lambda: next(answers), 60, clock.sleep, clock)
    assert clock.slept == [1.0, 1.5]
