"""Helpers for running module code in-process in unit tests."""

import contextlib
import json

from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

try:  # ansible-core >= 2.19
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # older ansible-core reads the arguments from basic._ANSIBLE_ARGS
    patch_module_args = None


@contextlib.contextmanager
def module_args(args):
    """Make ``args`` the arguments the next AnsibleModule reads."""
    if patch_module_args is not None:
        with patch_module_args(args):
            yield
        return
    previous = basic._ANSIBLE_ARGS
    basic._ANSIBLE_ARGS = to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    try:
        yield
    finally:
        basic._ANSIBLE_ARGS = previous


class ModuleFailed(Exception):
    def __init__(self, result):
        super().__init__(result.get("msg"))
        self.result = result


class ModuleExited(Exception):
    def __init__(self, result):
        super().__init__(result.get("msg"))
        self.result = result
