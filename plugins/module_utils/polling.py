# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Waiting on a cloud or an agent: one listing per round, with growing pauses, never past the deadline."""

from __future__ import annotations


def poll_until(poll, timeout, sleep, clock, first_interval=1.0, max_interval=5.0, growth=1.5):
    """Call ``poll()`` until it returns True or ``timeout`` seconds passed; True when it did.

    The pauses start at ``first_interval`` and grow by ``growth`` up to ``max_interval``; the last one ends at the
    deadline, so that the last look is taken then and not a pause later.
    """
    deadline = clock() + timeout
    interval = first_interval
    while True:
        if poll():
            return True
        if clock() >= deadline:
            return False
        sleep(min(interval, max(0.0, deadline - clock())))
        interval = min(interval * growth, max_interval)


def wait_for_all(read_states, ids, wanted, timeout, sleep, clock, max_interval=10.0):
    """Read ``read_states(ids)`` ({id: state}) until every id is in ``wanted`` or ``timeout`` passed; the ids that are."""
    done = []

    def all_there():
        states = read_states(ids)
        done[:] = [i for i in ids if states.get(i) == wanted]
        return len(done) == len(ids)

    poll_until(all_there, timeout, sleep, clock, max_interval=max_interval)
    return done
