# The tests' way to hand registered results to pytest: writes the task's ``content`` to ``dest`` on the controller.
#
# It replaces an ansible.builtin.copy task at the end of every test play, which ran two modules (stat and copy) for
# each ansible-playbook run of the suite; this runs none. Tests only: it is not part of the collection.

from __future__ import annotations

import os

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    """write_test_results: dest (a path on the controller), content (a string, usually ``... | to_json``)."""

    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        dest = self._task.args["dest"]
        descriptor = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(str(self._task.args["content"]))
        result["changed"] = False
        return result
