# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    # The account's API request limits, accepted by every module of the collection so that one
    # module_defaults group can state them for a whole play.
    DOCUMENTATION = r"""
options:
  api_rate_limits:
    description:
      - The account's API request limits where they differ from the published ones, per API action, as
        C(capacity) (tokens) and C(refill) (tokens a second) of its token bucket, for example
        C({"CreateSnapshots":{"capacity":200,"refill":10}}) after a granted limit increase.
      - Without it, AWS calls are paced to EC2's published buckets (for example CreateSnapshots and
        CreateSnapshot 100 tokens refilling 5 a second each, CreateTags 100 refilling 10, StartInstances 5
        refilling 2, other mutating actions 50 refilling 5, Describe calls 100 refilling 20). SSM publishes no
        table of this form; its calls are paced at 20 tokens refilling 5 a second (GetCommandInvocation 10)
        until stated here.
      - Every call waits on the controller for its token, and throttling answers (another tool spending the same
        account's tokens) slow the pace down until calls succeed again. Instances are frozen only as fast as
        the calls that end their freeze can be made, so no instance waits frozen for a token.
    type: dict
  api_budget_share:
    description:
      - The part of every API bucket of the account this task may spend, above 0 and at most 1.
      - Set it below 1 when several controllers back up one account at the same time (AWX job slicing, or
        another team's jobs), for example C(0.5) for each of two slices.
    type: float
    default: 1.0
"""
