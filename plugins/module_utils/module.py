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
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import describe_aws_failure
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import retry_decorator


class AppConsistentModule(AnsibleAWSModule):
    """Module class with both providers' connections.

    The AWS SDK check is made when an AWS client is first asked for, so that a
    play that only touches Alibaba Cloud does not need boto3 installed.
    """

    def __init__(self, **kwargs):
        spec = alicloud_argument_spec()
        spec.update(kwargs.get("argument_spec") or {})
        kwargs["argument_spec"] = spec
        kwargs["check_boto3"] = False
        super().__init__(**kwargs)
        self._aws_clients = {}
        self._alicloud = None
        # The options the task (or its module_defaults) gave a value, by their own names: a default filled in
        # by the argument spec is not something the user asked for.
        aliases = {alias: name for name, option in spec.items() for alias in option.get("aliases") or []}
        self.given = frozenset(aliases.get(key, key) for key, value in _load_params().items() if value is not None)

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

    def aws_client(self, service):
        """A boto3 client for ``service`` (ec2, ssm, ...), honouring endpoint_url, with retries."""
        if service not in self._aws_clients:
            if not HAS_BOTO3:
                self.fail_json(msg=missing_required_lib("boto3 and botocore"))
            try:
                check_sdk_version_supported(warn=self.warn)
            except AnsibleBotocoreError as exc:
                self.fail_json(msg=str(exc))
            self._aws_clients[service] = self.client(service, retry_decorator=retry_decorator())
        return self._aws_clients[service]

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


CLOUD_NAMES = {"aws": "AWS", "alicloud": "Alibaba Cloud"}


def other_cloud_options_message(names, cloud, provider):
    """One sentence refusing options of ``cloud`` in a task whose provider is ``provider``."""
    many = len(names) > 1
    listed = ", ".join(names[:-1]) + " and " + names[-1] if many else names[0]
    return (f"{listed} {'are' if many else 'is an'} {CLOUD_NAMES[cloud]} option{'s' if many else ''} and provider is "
            f"{provider}: remove {'them' if many else 'it'}, as {'they' if many else 'it'} would be ignored.")
