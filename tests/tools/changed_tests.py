"""What `make check` looks at: the files a change touches and the integration tests of the modules it reaches.

    changed_tests.py files [BASE]         changed files that still exist (for ansible-test sanity)
    changed_tests.py integration [BASE]   the tests/integration files of the changed modules

The change is the working tree (committed or not, and new files) against BASE, by default
where HEAD left origin/main (HEAD itself when there is no origin/main). A module is reached
when its file changed or a module_utils file it imports, directly or through other
module_utils files, changed.
"""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = "plugins/modules"
MODULE_UTILS = "plugins/module_utils"
IMPORT = re.compile(r"plugins\.module_utils(?:\.(\w+)| import ([\w, ()]+))")


def git(*argv: str) -> str:
    return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def default_base() -> str:
    try:
        return git("merge-base", "HEAD", "origin/main").strip()
    except subprocess.CalledProcessError:
        return "HEAD"


def changed_files(base: str) -> list[str]:
    names = set(git("diff", "--name-only", base).split())
    names.update(git("ls-files", "--others", "--exclude-standard").split())
    return sorted(name for name in names if os.path.isfile(os.path.join(ROOT, name)))


def imported_utils(path: str) -> set[str]:
    """The names of the module_utils files a plugin file imports."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        text = handle.read()
    names = set()
    for direct, listed in IMPORT.findall(text):
        if direct:
            names.add(direct)
        else:
            names.update(name.split()[0] for name in listed.strip("()").split(",") if name.strip())
    return {name for name in names if os.path.isfile(os.path.join(ROOT, MODULE_UTILS, name + ".py"))}


def reached_modules(changed: list[str]) -> set[str]:
    utils = {os.path.basename(name)[:-3] for name in changed if name.startswith(MODULE_UTILS + "/") and name.endswith(".py")}
    # Grow the changed set by every module_utils file that imports a changed one.
    grown = True
    while grown:
        grown = False
        for name in os.listdir(os.path.join(ROOT, MODULE_UTILS)):
            stem = name[:-3]
            if name.endswith(".py") and stem not in utils and imported_utils(f"{MODULE_UTILS}/{name}") & utils:
                utils.add(stem)
                grown = True
    modules = {os.path.basename(name)[:-3] for name in changed if name.startswith(MODULES + "/") and name.endswith(".py")}
    for name in os.listdir(os.path.join(ROOT, MODULES)):
        if name.endswith(".py") and imported_utils(f"{MODULES}/{name}") & utils:
            modules.add(name[:-3])
    return modules


def integration_tests(changed: list[str]) -> list[str]:
    tests = {name for name in changed if name.startswith("tests/integration/test_") and name.endswith(".py")}
    modules = reached_modules(changed)
    for name in os.listdir(os.path.join(ROOT, "tests", "integration")):
        if any(name == f"test_{module}.py" or name.startswith(f"test_{module}_") for module in modules):
            tests.add(f"tests/integration/{name}")
    return sorted(tests)


def main() -> int:
    if len(sys.argv) not in (2, 3) or sys.argv[1] not in ("files", "integration"):
        print(__doc__.split("\n\n", 2)[1], file=sys.stderr)
        return 2
    changed = changed_files(sys.argv[2] if len(sys.argv) == 3 else default_base())
    print("\n".join(changed if sys.argv[1] == "files" else integration_tests(changed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
