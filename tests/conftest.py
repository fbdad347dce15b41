"""Test-suite wide setup.

Makes the twin clouds importable as ``twin``, registers their fixtures, and
makes this checkout importable as ``ansible_collections.appconsistent.snapshots``
when it does not already sit in an ``ansible_collections`` tree.
"""

import os
import sys

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)

if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)


def _collection_root():
    parts = REPO_ROOT.split(os.sep)
    if len(parts) >= 3 and parts[-3] == "ansible_collections":
        return os.sep.join(parts[:-3])
    root = os.path.join(REPO_ROOT, "build", "pytest-collections")
    link = os.path.join(root, "ansible_collections", "appconsistent", "snapshots")
    if not os.path.islink(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        try:
            os.symlink(REPO_ROOT, link)
        except FileExistsError:  # another test process made it first
            pass
    return root


_ROOT = _collection_root()
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

try:  # the twin clouds need moto; the oldest-ansible environment runs unit tests without them
    from twin.fixtures import twin, twin_factory  # noqa: F401  pylint: disable=unused-import
except ImportError:
    pass
