#!/usr/bin/env bash
# Print the path of a working CPython interpreter of the wanted minor version.
#   find_python.sh 3.13 [explicit-candidate]
# A pyenv shim on PATH can exist for a version that is not active and then fails when
# run, so every candidate is executed and its reported version compared before use.
set -u

want="${1:?usage: find_python.sh MAJOR.MINOR [candidate]}"
explicit="${2:-}"

works() {
    local candidate="$1" got
    [ -n "$candidate" ] || return 1
    got=$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || return 1
    [ "$got" = "$want" ]
}

if [ -n "$explicit" ]; then
    if works "$explicit"; then
        command -v "$explicit" 2>/dev/null || echo "$explicit"
        exit 0
    fi
    echo "find_python.sh: '$explicit' is not a working Python $want" >&2
    exit 1
fi

candidates=()
pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
if command -v pyenv >/dev/null 2>&1; then
    pyenv_root="$(pyenv root 2>/dev/null || echo "$pyenv_root")"
fi
# Newest patch release first.
while IFS= read -r dir; do
    candidates+=("$dir/bin/python$want")
done < <(find "$pyenv_root/versions" -mindepth 1 -maxdepth 1 -name "$want.*" 2>/dev/null | sort -V -r)
candidates+=("$(command -v "python$want" 2>/dev/null || true)")
for dir in /usr/local/bin /usr/bin; do
    candidates+=("$dir/python$want")
done

for candidate in "${candidates[@]}"; do
    if works "$candidate"; then
        echo "$candidate"
        exit 0
    fi
done

cat >&2 <<MSG
find_python.sh: no working Python $want found.
Looked in: pyenv ($pyenv_root/versions/$want.*), python$want on PATH, /usr/local/bin, /usr/bin.
Install it (for example 'pyenv install $want') or name one explicitly, e.g. 'make test PYTHON=/path/to/python$want'.
MSG
exit 1
