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
from ansible.module_utils.basic import missing_required_lib

from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloud
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import AlibabaCloudError
from ansible_collections.appconsistent.snapshots.plugins.module_utils.alicloud import alicloud_argument_spec
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import describe_aws_failure
from ansible_collections.appconsistent.snapshots.plugins.module_utils.aws import with_max_attempts


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

    # --- AWS ------------------------------------------------------------------------

    def aws_client(self, service, region=None):
        """A boto3 client for ``service`` (ec2, ssm, ...), honouring endpoint_url; region None is the task's region.

        Its requests are retried as often as the task's aws_max_attempts says, where the module has that option.
        """
        if region:
            return with_max_attempts(self.client(service, region=region), self.params.get("aws_max_attempts"))
        if service not in self._aws_clients:
            if not HAS_BOTO3:
                self.fail_json(msg=missing_required_lib("boto3 and botocore"))
            try:
                check_sdk_version_supported(warn=self.warn)
            except AnsibleBotocoreError as exc:
                self.fail_json(msg=str(exc))
            self._aws_clients[service] = with_max_attempts(self.client(service), self.params.get("aws_max_attempts"))
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
