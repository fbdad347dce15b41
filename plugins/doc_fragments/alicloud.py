# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    # Alibaba Cloud connection options, accepted by every module of the collection
    # so one module_defaults group can carry them.
    DOCUMENTATION = r"""
options:
  alicloud_access_key:
    description:
      - Alibaba Cloud AccessKey ID.
      - If not set, the E(ALIBABA_CLOUD_ACCESS_KEY_ID) environment variable is used.
      - Credentials are taken from the first source that is set, in this order
        O(alicloud_access_key) with O(alicloud_secret_key) (and O(alicloud_security_token)),
        O(alicloud_ecs_role_name), O(alicloud_profile).
    type: str
    aliases: [alicloud_access_key_id]
  alicloud_secret_key:
    description:
      - Alibaba Cloud AccessKey secret.
      - If not set, the E(ALIBABA_CLOUD_ACCESS_KEY_SECRET) environment variable is used.
    type: str
    aliases: [alicloud_access_key_secret]
  alicloud_security_token:
    description:
      - STS token to use with temporary AccessKey credentials.
      - If not set, the E(ALIBABA_CLOUD_SECURITY_TOKEN) environment variable is used.
    type: str
  alicloud_region:
    description:
      - Alibaba Cloud region ID, for example C(cn-hangzhou).
      - If not set, the E(ALIBABA_CLOUD_REGION_ID) environment variable is used.
      - Required when an Alibaba Cloud instance is involved.
    type: str
  alicloud_ecs_role_name:
    description:
      - Name of the RAM role attached to the ECS instance the controller runs on; credentials are then
        read from the instance metadata service.
      - If not set, the E(ALIBABA_CLOUD_ECS_METADATA) environment variable is used.
    type: str
  alicloud_profile:
    description:
      - Profile name in the aliyun CLI configuration (C(~/.aliyun/config.json)).
      - If not set, the E(ALIBABA_CLOUD_PROFILE) environment variable is used.
    type: str
  alicloud_endpoint:
    description:
      - ECS API endpoint to use instead of the region's, as C(host) or C(host:port).
      - If not set, the E(ALIBABA_CLOUD_ECS_ENDPOINT) environment variable is used.
    type: str
  alicloud_protocol:
    description:
      - Protocol for the ECS API. C(http) is meant for local test endpoints only.
    type: str
    choices: [https, http]
    default: https
  alicloud_max_attempts:
    description:
      - How many times one ECS API call is attempted when Alibaba Cloud answers with throttling or
        C(ServiceUnavailable); the waits between attempts grow exponentially with jitter.
    type: int
    default: 6
requirements:
  - alibabacloud-ecs20140526 >= 7.0.0
  - alibabacloud-credentials >= 1.0.0
"""
