#!/usr/bin/env bash
# Run one pytest stage of `make test`.
#   pytest_stage.sh PYTHON STAGE-NAME [pytest options...] -- PATH...
# Paths that do not exist yet are left out, and a stage whose paths hold no test yet
# (pytest exit code 5) passes with a note; any other non-zero exit fails the stage.
# The tests' temporary files (pytest's tmp_path, tempfile's TMPDIR) stay inside the tree,
# under build/, so that a run leaves nothing in /tmp and its files are known to be its own.
set -u

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

python="${1:?usage: pytest_stage.sh PYTHON STAGE [options] -- PATH...}"
stage="${2:?usage: pytest_stage.sh PYTHON STAGE [options] -- PATH...}"
shift 2

options=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    options+=("$1")
    shift
done
[ $# -gt 0 ] && shift

paths=()
for path in "$@"; do
    if [ -e "$path" ]; then
        paths+=("$path")
    fi
done

if [ ${#paths[@]} -eq 0 ]; then
    echo "[$stage] none of $* exists yet: nothing to test"
    exit 0
fi

export TMPDIR="$root/build/tmp"
mkdir -p "$TMPDIR" "$root/build/pytest"
# Like /tmp: the database servers the e2e tests start write their own temporary files there.
chmod 1777 "$TMPDIR"
"$python" -m pytest --basetemp="$root/build/pytest/$stage" "${options[@]}" "${paths[@]}"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "[$stage] no tests collected in ${paths[*]} yet: stage passes"
    exit 0
fi
exit "$rc"
