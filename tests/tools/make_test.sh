#!/usr/bin/env bash
# The order of `make test`: set-up, the stages (some side by side), the hygiene check, the times.
#   make_test.sh ROOT PYTHON "BESIDE..." "STAGE..."
# BESIDE stages (sanity, lint, molecule: nothing shared with the tests) run in the background while the first
# STAGES that are not timing-sensitive run; their output is kept in build/stages/ and printed
# when they are done. Every stage runs as `make STAGE`; the run fails when any of them fails,
# and the hygiene check runs at the end in every case, also after a failure or Ctrl-C.
set -u

if [ "${1:-}" = "--in-background" ]; then  # one background stage: make_test.sh --in-background MAKE STAGE LOGS
    "$2" "$3" >"$4/$3.log" 2>&1
    echo $? >"$4/$3.rc"
    date +%s >"$4/$3.end"
    exit 0
fi

root="${1:?usage: make_test.sh ROOT PYTHON BESIDE STAGES}"
python="${2:?}"
read -r -a beside <<<"${3:-}"
read -r -a stages <<<"${4:?}"
# The stages the background ones may run beside: pure CPU work and the twin's own tests. The
# integration and e2e tests wait on real timeouts and are left the machine's two cores.
beside_until="twin-test"

tools="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
make="${MAKE:-make}"
build="$root/build"
logs="$build/stages"
snapshot="$build/hygiene-snapshot.json"
summary=""
failed=""
declare -A pids=() started=()

rm -rf "$build/test-results" "$logs"
mkdir -p "$logs"
run_start=$(date +%s)

timed() {  # timed NAME COMMAND...: runs in the foreground, adds its time to the summary
    local name="$1" start
    shift
    start=$(date +%s)
    echo "=== make $name"
    if "$@"; then
        summary+=$(printf '  %-16s %5ss' "$name" "$(( $(date +%s) - start ))")$'\n'
        return 0
    fi
    echo "=== make $name FAILED after $(( $(date +%s) - start ))s"
    summary+=$(printf '  %-16s %5ss FAILED' "$name" "$(( $(date +%s) - start ))")$'\n'
    failed+=" $name"
    return 1
}

start_beside() {
    local name
    for name in "${beside[@]}"; do
        echo "=== make $name (in the background, output in build/stages/$name.log)"
        started[$name]=$(date +%s)
        # A session of its own, so that an interrupted run can stop the stage with all its children.
        setsid "${BASH_SOURCE[0]}" --in-background "$make" "$name" "$logs" &
        pids[$name]=$!
    done
}

wait_beside() {
    local name rc
    for name in "${beside[@]}"; do
        [ -n "${pids[$name]:-}" ] || continue
        wait "${pids[$name]}"
        unset "pids[$name]"
        echo "=== make $name (ran in the background)"
        cat "$logs/$name.log"
        rc=$(cat "$logs/$name.rc" 2>/dev/null || echo 1)
        local took=$(( $(cat "$logs/$name.end" 2>/dev/null || date +%s) - ${started[$name]} ))
        if [ "$rc" = 0 ]; then
            summary+=$(printf '  %-16s %5ss (in the background)' "$name" "$took")$'\n'
        else
            echo "=== make $name FAILED after ${took}s"
            summary+=$(printf '  %-16s %5ss FAILED (in the background)' "$name" "$took")$'\n'
            failed+=" $name"
        fi
    done
}

stop_beside() {
    local name
    for name in "${!pids[@]}"; do
        kill -TERM -- "-${pids[$name]}" 2>/dev/null
        wait "${pids[$name]}" 2>/dev/null
    done
}

finish() {
    local rc=$?
    trap - EXIT INT TERM
    stop_beside
    if [ -e "$snapshot" ]; then
        timed hygiene "$python" "$tools/hygiene.py" check "$snapshot" "$root" || true
    fi
    summary+=$(printf '  %-16s %5ss' "total" "$(( $(date +%s) - run_start ))")$'\n'
    printf '=== stage times\n%s' "$summary"
    "$python" "$tools/summarize_results.py" "$build/test-results" 2>/dev/null || true
    if [ -n "$failed" ]; then
        echo "=== failed:$failed"
        exit 1
    fi
    exit "$rc"
}
trap finish EXIT
trap 'echo "=== interrupted"; failed+=" (interrupted)"; exit 130' INT TERM

timed setup "$make" setup || exit 1
"$python" "$tools/hygiene.py" snapshot "$snapshot" "$root" || exit 1

start_beside
for stage in "${stages[@]}"; do
    timed "$stage" "$make" "$stage" || exit 1
    if [ "$stage" = "$beside_until" ]; then
        wait_beside
        [ -z "$failed" ] || exit 1
    fi
done
wait_beside
[ -z "$failed" ] || exit 1
