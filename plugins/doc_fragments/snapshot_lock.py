# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    # The lock option of the modules that make sets: every member of each set made is locked against deletion.
    DOCUMENTATION = r"""
options:
  lock:
    description:
      - Lock every member of each set this task makes (or finds made by an earlier run with the same run id or source
        set) against deletion, with the providers' snapshot lock, as M(appconsistent.snapshots.snapshot_set_lock)
        does. Unset, nothing is locked.
      - The options are checked before anything is frozen, stopped or created; a bad one fails the task with nothing
        done. M(appconsistent.snapshots.app_consistent_group) and M(appconsistent.snapshots.vss_snapshot) need
        O(wait=true) with it, as they return before the sets exist otherwise.
      - AWS locks a snapshot that is pending or completed, so its members are locked as soon as the set is made (a
        lock for a number of days starts when the snapshot completes). Alibaba Cloud members are locked once they are
        accomplished; the task waits for that at most O(lock.wait_timeout) seconds.
      - A set is reported locked only when every member is. When a member cannot be locked (the provider refuses,
        the snapshot failed, or O(lock.wait_timeout) ran out), the set is kept, reported not locked with each member's
        lock, and the task fails naming the set and the M(appconsistent.snapshots.snapshot_set_lock) task that locks
        it.
      - In check mode nothing is called; the lock each set would get is reported.
    type: dict
    suboptions:
      mode:
        description:
          - V(governance) (AWS only) holds at once and can be removed or shortened by anyone allowed to.
          - V(compliance) cannot be shortened or removed by anyone once its cooling-off period is over. Alibaba Cloud
            has compliance mode only.
          - Required.
        type: str
        choices: [governance, compliance]
      duration_days:
        description:
          - How long the lock holds, in days (1 to 36500). Exactly one of O(lock.duration_days) and
            O(lock.expires_at) is required.
        type: int
      expires_at:
        description:
          - When the lock ends, as an ISO 8601 UTC instant such as C(2027-01-31T00:00:00Z) (AWS only).
        type: str
      cool_off_hours:
        description:
          - The cooling-off period of a compliance lock, in hours (1 to 72), during which it may still be changed or
            removed. V(0) or unset means none, which needs O(lock.acknowledge_no_cool_off=true).
        type: int
      acknowledge_no_cool_off:
        description:
          - Confirms a compliance lock without a cooling-off period, which nobody can shorten or remove until it
            expires.
        type: bool
        default: false
      wait_timeout:
        description:
          - The longest the task waits, in seconds, for members the provider cannot lock yet (Alibaba Cloud snapshots
            still in progress). The state is read once per round, with pauses growing to 30 seconds.
        type: int
        default: 3600
"""
