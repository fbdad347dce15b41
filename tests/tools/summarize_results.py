"""Add up the JUnit reports of the pytest stages of one `make test` run.

    summarize_results.py DIRECTORY

Prints one closing line, ``tests: N passed, N failed, N skipped``, over every ``*.xml``
report in DIRECTORY.
"""

import glob
import os
import sys
from xml.etree import ElementTree


def main() -> int:
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    passed = failed = skipped = 0
    for report in sorted(glob.glob(os.path.join(directory, "*.xml"))):
        root = ElementTree.parse(report).getroot()
        suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
        for suite in suites:
            total = int(suite.get("tests", 0))
            bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
            skip = int(suite.get("skipped", 0))
            failed += bad
            skipped += skip
            passed += total - bad - skip
    sys.stdout.write(f"tests: {passed} passed, {failed} failed, {skipped} skipped\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
