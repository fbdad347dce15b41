# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    # Waiting for agent commands and for snapshot completion.
    DOCUMENTATION = r"""
options:
  wait:
    description:
      - Wait until the agent command has finished on every instance and the snapshots are initiated.
      - With V(false), the task returns after the command is accepted; results then carry the command ids only.
    type: bool
    default: true
  wait_timeout:
    description:
      - How many seconds to wait for the agent command to finish on every instance.
      - On AWS, a command that has not reached its instance by then is cancelled (SSM CancelCommand), so that a late
        delivery does not quiesce the instance after the task has given up on it.
      - Instances are quiesced only as fast as the account's CreateSnapshots bucket lets them be snapshotted, so a
        large fleet needs a longer wait. M(appconsistent.snapshots.app_consistent_group) on AWS refuses, before
        anything is frozen or unmounted, a run whose CreateSnapshots calls alone would take longer than this at the
        account's limits, which is (N - C) / R seconds for N instances and a bucket of capacity C refilling R a
        second (980 s for 5000 instances at the published 100 and 5).
    type: int
    default: 900
  wait_for_completion:
    description:
      - Also wait until every snapshot of the set has completed.
      - A backup stage only needs the snapshots initiated (the data is then fixed); completion can take hours
        for large volumes.
    type: bool
    default: false
  completion_timeout:
    description:
      - How many seconds to wait for snapshot completion when O(wait_for_completion=true).
    type: int
    default: 14400
"""
