# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    # Windows instances reached through SSM Run Command: which instances, and how SSM fans the command out.
    DOCUMENTATION = r"""
options:
  instance_ids:
    description:
      - IDs of the Windows instances.
      - One of O(instance_ids) and O(targets) is required.
    type: list
    elements: str
  targets:
    description:
      - Instances selected by tag, in the form of SSM Run Command targets.
      - The collection resolves them to instance IDs itself (with DescribeInstances), so each instance
        is checked and reported on its own.
    type: list
    elements: dict
    suboptions:
      key:
        description:
          - C(tag:<name>), C(tag-key) or C(InstanceIds).
        type: str
        required: true
      values:
        description:
          - Tag values, tag keys or instance IDs.
        type: list
        elements: str
        required: true
  max_concurrency:
    description:
      - How many instances SSM runs the document on at the same time, as a number or a percentage.
    type: str
    default: "50"
  max_errors:
    description:
      - How many failed instances make SSM stop sending the command to the rest of a batch, as a number or
        a percentage.
      - The default lets every instance run whatever happens on the others.
    type: str
    default: "100%"
  delivery_timeout:
    description:
      - Seconds SSM waits for an instance to pick up the command before it reports C(DeliveryTimedOut).
    type: int
    default: 600
"""
