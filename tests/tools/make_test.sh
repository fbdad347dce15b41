#!/usr/bin/env bash
# The order of `make test`: set-up, the stages (some side by side), the hygiene check, the times.
#   make_test.sh ROOT PYTHON "BESIDE..." "STAGE..."
# BESIDE stages (sanity, lint, molecule: nothing shared with the tests) run in the background while the first
# STAGES that are not timing-sensitive run; their output is kept in build/stages/ and printed
# when they are done. A stage written FIRST|SECOND runs FIRST in the background at a lower CPU priority
# beside SECOND (see Makefile: TEST_STAGES). Every stage runs as `make STAGE`; the run fails when any of
# them fails, and the hygiene check runs at the end in every case, also after a failure or Ctrl-C.
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
        start_in_background "$name"
    done
}

start_in_background() {  # start_in_background NAME [nice]: make NAME in a session of its own, output in build/stages
    local name="$1" niceness="${2:-0}"
    started[$name]=$(date +%s)
    # A session of its own, so that an interrupted run can stop the stage with all its children.
    setsid nice -n "$niceness" "${BASH_SOURCE[0]}" --in-background "$make" "$name" "$logs" &
    pids[$name]=$!
}

wait_stage() {  # wait_stage NAME WHERE: waits for a stage started in the background, prints its output and time
    local name="$1" where="$2" rc took
    [ -n "${pids[$name]:-}" ] || return 0
    wait "${pids[$name]}"
    unset "pids[$name]"
    echo "=== make $name (ran $where)"
    cat "$logs/$name.log"
    rc=$(cat "$logs/$name.rc" 2>/dev/null || echo 1)
    took=$(( $(cat "$logs/$name.end" 2>/dev/null || date +%s) - ${started[$name]} ))
    if [ "$rc" = 0 ]; then
        summary+=$(printf '  %-16s %5ss (%s)' "$name" "$took" "$where")$'\n'
    else
        echo "=== make $name FAILED after ${took}s"
        summary+=$(printf '  %-16s %5ss FAILED (%s)' "$name" "$took" "$where")$'\n'
        failed+=" $name"
    fi
}

wait_beside() {
    local name
    for name in "${beside[@]}"; do
        wait_stage "$name" "in the background"
    done
}

run_side_by_side() {  # run_side_by_side FIRST SECOND
    # FIRST waits on nothing real (the twins answer at once) and yields the CPU: SECOND's tests wait on real
    # deadlines (freeze timeouts, watchdogs, database locks) and see the cores as if they ran alone, while
    # FIRST uses the time SECOND spends waiting.
    local first="$1" second="$2"
    echo "=== make $first (beside $second at a lower CPU priority, output in build/stages/$first.log)"
    start_in_background "$first" 10
    timed "$second" "$make" "$second"
    local rc=$?
    wait_stage "$first" "beside $second"
    [ "$rc" = 0 ] && [ -z "$failed" ]
}

stop_beside() {
    local name
    for name in "${!pids[@]}"; do
        kill -TERM -- "-${pids[$name]}" 2>/dev/null
        wait "${pids[$name]}" 2>/dev/null
    done
}

wait_all_background() {
    local name
    for name in "${!pids[@]}"; do
        wait_stage "$name" "in the background"
    done
}

finish() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$interrupted" ]; then
        stop_beside
    else
        # A failed stage does not cut the background ones short: stopped half-way, they would leave their
        # servers, loop devices and directories behind, and the hygiene check would rightly find them.
        wait_all_background
    fi
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
interrupted=""
trap 'echo "=== interrupted"; interrupted=1; failed+=" (interrupted)"; exit 130' INT TERM

timed setup "$make" setup || exit 1
"$python" "$tools/hygiene.py" snapshot "$snapshot" "$root" || exit 1

start_beside
for stage in "${stages[@]}"; do
    if [[ "$stage" == *"|"* ]]; then
        run_side_by_side "${stage%%|*}" "${stage#*|}" || exit 1
        continue
    fi
    timed "$stage" "$make" "$stage" || exit 1
    if [ "$stage" = "$beside_until" ]; then
        wait_beside
        [ -z "$failed" ] || exit 1
    fi
done
wait_beside
[ -z "$failed" ] || exit 1
