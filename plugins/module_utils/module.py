# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The module class every module of the collection is built on.

It is ``AnsibleAWSModule`` (AWS credentials, ``endpoint_url``, retries and
``fail_json_aws`` behave as in amazon.aws) with the Alibaba Cloud connection
options added, so that one ``module_defaults`` group can carry the
connection settings of both providers to every module.
"""

from __future__ import annotations

from ansible_collections.amazon.aws.plugins.module_utils.botocore import HAS_BOTO3
from ansible_collections.amazon.aws.plugins.module_utils.botocore import check_sdk_version_supported
from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleBotocoreError
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible.module_utils.basic import _load_params
from ansible.module_utils.basic import missing_required_lib

from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloud
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloudError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import alicloud_argument_spec
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import AppConsistentAWSError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import describe_aws_failure
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import with_max_attempts
from ansible_collections.appconsistent.snapshots.plugins.module_utils.validate import check_params
from ansible_collections.appconsistent.snapshots.plugins.module_utils import pacing


def api_limits_argument_spec():
    """Options of the account's API request limits, accepted by every module (the api_limits doc fragment)."""
    return dict(
        api_rate_limits=dict(type="dict"),
        api_budget_share=dict(type="float", default=1.0),
    )


class AppConsistentModule(AnsibleAWSModule):
    """Module class with both providers' connections.

    The AWS SDK check is made when an AWS client is first asked for, so that a
    play that only touches Alibaba Cloud does not need boto3 installed.
    """

    def __init__(self, provider=None, **kwargs):
        spec = alicloud_argument_spec()
        spec.update(api_limits_argument_spec())
        spec.update(kwargs.get("argument_spec") or {})
        kwargs["argument_spec"] = spec
        kwargs["check_boto3"] = False
        super().__init__(**kwargs)
        self._aws_clients = {}
        self._alicloud = None
        self._pacer = None
        self.pacer  # refuses bad api_rate_limits / api_budget_share before any call
        # Ids, run ids, durations and timeouts of every module are checked before the module does anything:
        # an id is used as a describe filter, where a wildcard would select what the user did not name.
        try:
            check_params(self.params, provider)
        except ValueError as exc:
            self.fail_json(msg=str(exc))
        # The options the task (or its module_defaults) gave a value, by their own names: a default filled in
        # by the argument spec is not something the user asked for.
        aliases = {alias: name for name, option in spec.items() for alias in option.get("aliases") or []}
        self.given = frozenset(aliases.get(key, key) for key, value in _load_params().items() if value is not None)

    @property
    def pacer(self):
        """The model of the account's API token buckets, shared by every thread and client of this run."""
        if self._pacer is None:
            try:
                self._pacer = pacing.Pacer(limits=pacing.parse_limits(self.params.get("api_rate_limits")),
                                           share=self.params.get("api_budget_share") or 1.0)
            except ValueError as exc:
                self.fail_json(msg=str(exc))
        return self._pacer

    def refuse_other_cloud_options(self, provider, cloud_options):
        """Fail before any call when the task sets options that only the other cloud reads.

        ``cloud_options`` maps each provider (aws, alicloud) to the options of this module that only that
        provider uses. Left alone, they would be accepted and silently ignored.
        """
        for cloud, options in cloud_options.items():
            if cloud == provider:
                continue
            given = [name for name in options if name in self.given]
            if given:
                self.fail_json(msg=other_cloud_options_message(given, cloud, provider))

    # --- AWS ------------------------------------------------------------------------

    def aws_client(self, service, region=None):
        """A boto3 client for ``service`` (ec2, ssm, ...), honouring endpoint_url; region None is the task's region.

        Its requests are retried as often as the task's aws_max_attempts says, where the module has that option.
        """
        if region and region != self.region:
            # Another Region (a copy's destination) has buckets of its own, spent by this client's calls.
            if (service, region) not in self._aws_clients:
                client = with_max_attempts(self.client(service, region=region), self.params.get("aws_max_attempts"))
                self._aws_clients[(service, region)] = pacing.attach(client, self.pacer.in_region(region))
            return self._aws_clients[(service, region)]
        if service not in self._aws_clients:
            if not HAS_BOTO3:
                self.fail_json(msg=missing_required_lib("boto3 and botocore"))
            try:
                check_sdk_version_supported(warn=self.warn)
            except AnsibleBotocoreError as exc:
                self.fail_json(msg=str(exc))
            client = with_max_attempts(self.client(service), self.params.get("aws_max_attempts"))
            self._aws_clients[service] = pacing.attach(client, self.pacer)
        return self._aws_clients[service]

    def exit_json(self, **kwargs):
        self._add_pacing(kwargs)
        super().exit_json(**kwargs)

    def fail_json(self, msg=None, **kwargs):
        self._add_pacing(kwargs)
        super().fail_json(msg=msg, **kwargs)

    def run_or_fail(self, run, refusals=(ValueError,)):
        """What ``run()`` returns; a refusal (one of ``refusals``) fails the task with its message, an AWS or Alibaba
        Cloud error as ``fail_aws`` and ``fail_alicloud`` report it."""
        try:
            return run()
        except refusals as exc:
            self.fail_json(msg=str(exc))
        except AppConsistentAWSError as exc:
            self.fail_aws(exc)
        except AlibabaCloudError as exc:
            self.fail_alicloud(exc)
        return None  # not reached: each fail_* above ends the module

    def keep_diff(self, result):
        """Take ``result["diff"]`` out of the result unless the task runs with --diff."""
        diff = result.pop("diff")
        if self._diff:
            result["diff"] = diff

    def _add_pacing(self, result):
        """Every result of a run that called AWS says what the account's limits cost it."""
        pacer = getattr(self, "_pacer", None)  # None while the options are still being read
        summary = pacer.summary() if pacer is not None else None
        if summary and (summary["calls"] or summary.get("estimated_floor_s") is not None):
            result.setdefault("api_pacing", summary)

    def fail_aws(self, exc, msg=None, **kwargs):
        """Fail the task for an AWS error: connection problems get one plain sentence, the rest the full response."""
        plain = describe_aws_failure(exc)
        if plain:
            self.fail_json(msg=plain, **kwargs)
        if isinstance(exc, AnsibleAWSError):
            if exc.exception is not None:
                self.fail_json_aws(exc.exception, msg=msg or exc.message, **kwargs)
            self.fail_json(msg=msg or exc.message, **kwargs)
        self.fail_json_aws(exc, msg=msg, **kwargs)

    # --- Alibaba Cloud ---------------------------------------------------------------

    @property
    def alicloud(self):
        """The Alibaba Cloud ECS access object of this run."""
        if self._alicloud is None:
            self._alicloud = AlibabaCloud(self)
        return self._alicloud

    def fail_alicloud(self, exc, msg=None, **kwargs):
        if isinstance(exc, AlibabaCloudError):
            message = f"{msg}: {exc}" if msg else str(exc)
            self.fail_json(msg=message, error=exc.to_dict(), **kwargs)
        self.fail_json(msg=f"{msg}: {exc}" if msg else str(exc), **kwargs)


def list_failed_instances(failed):
    """The first five of ``failed`` (dicts with instance_id and reason) for a failure message, and how many more."""
    names = "; ".join(f"{f['instance_id']}: {f['reason']}" for f in failed[:5])
    more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
    return names + more


CLOUD_NAMES = {"aws": "AWS", "alicloud": "Alibaba Cloud"}


def other_cloud_options_message(names, cloud, provider):
    """One sentence refusing options of ``cloud`` in a task whose provider is ``provider``."""
    many = len(names) > 1
    listed = ", ".join(names[:-1]) + " and " + names[-1] if many else names[0]
    return (f"{listed} {'are' if many else 'is an'} {CLOUD_NAMES[cloud]} option{'s' if many else ''} and provider is "
            f"{provider}: remove {'them' if many else 'it'}, as {'they' if many else 'it'} would be ignored.")
