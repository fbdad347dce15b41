"""Offline stand-in for the get-pip bootstrap script that ansible-test downloads.

ansible-test creates a bare virtual environment for each sanity test and bootstraps pip
into it by running a cached ``get_pip_<version>.py`` as ``__main__`` with pip install
arguments. The upstream script is fetched from a host that is not reachable from every
build machine, so this stand-in bootstraps pip from the interpreter's bundled copy
(``ensurepip``) and then lets that pip install what ansible-test asked for, from the
package index configured on the machine.
"""

import ensurepip
import os
import subprocess
import sys

# Options that only the upstream get-pip script understands.
GET_PIP_ONLY_OPTIONS = frozenset(("--no-setuptools", "--no-wheel"))


def main() -> int:
    # ensurepip points PIP_CONFIG_FILE at /dev/null inside this process; the install
    # below must see the machine's pip configuration (index, certificates) again.
    environment = dict(os.environ)
    ensurepip.bootstrap(upgrade=True)
    arguments = [argument for argument in sys.argv[1:] if argument not in GET_PIP_ONLY_OPTIONS]
    return subprocess.call([sys.executable, "-m", "pip", "install"] + arguments, env=environment)


if __name__ == "__main__":
    sys.exit(main())
