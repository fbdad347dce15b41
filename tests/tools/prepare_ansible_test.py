"""Make ``ansible-test sanity`` work on a machine that cannot download get-pip.

Places ``get_pip_standin.py`` in ansible-test's cache under the name of the pip version
that the installed ansible-test bootstraps. A real get-pip script already in the cache is
left alone. Run with the Python of the environment that holds ansible-test.
"""

import os
import re
import shutil
import sys

import ansible_test

MARKER = "Offline stand-in for the get-pip bootstrap script"


def bootstrap_pip_version() -> str:
    source = os.path.join(os.path.dirname(ansible_test.__file__), "_internal", "python_requirements.py")
    with open(source, encoding="utf-8") as handle:
        match = re.search(r"""\bpip\s*=\s*['"]([0-9.]+)['"]""", handle.read())
    if not match:
        raise SystemExit(f"prepare_ansible_test: cannot find the pip version ansible-test bootstraps in {source}")
    return match.group(1)


def main() -> int:
    version = bootstrap_pip_version()
    cache = os.path.expanduser(os.path.join("~", ".ansible", "test", "cache"))
    target = os.path.join(cache, f"get_pip_{version.replace('.', '_')}.py")
    if os.path.exists(target):
        with open(target, encoding="utf-8") as handle:
            if MARKER not in handle.read():
                return 0
    os.makedirs(cache, exist_ok=True)
    shutil.copyfile(os.path.join(os.path.dirname(os.path.abspath(__file__)), "get_pip_standin.py"), target)
    sys.stdout.write(f"ansible-test will bootstrap pip {version} with {target}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
