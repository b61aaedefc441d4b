#!/usr/bin/env bash
# Run comparison suites with one process per (suite, seed), JOBS at a time, seed-major, then write
# each suite's tables and plots over those seeds. Processes share nothing but the suite folders
# (each run has its own folder; checkpoints and results are written atomically), and a finished
# run is reused, so the script can be stopped and started again.
#
#   scripts/run-suites-parallel.sh "0 1 2" suites/fig2-sampling-long.toml suites/fig3-rank-long.toml
#
# Environment: JOBS (processes at a time; default: all of them), FEDSKETCH (the command;
# default `fedsketch`, e.g. "python -m fedsketch" in a checkout without an install), LOGS (folder
# of the per-process logs; default runs/parallel-logs).
set -uo pipefail
if (( $# < 2 )); then
    echo "usage: $0 \"SEED SEED ...\" SUITE.toml [SUITE.toml ...]" >&2
    exit 2
fi
seeds=$1; shift
FEDSKETCH=${FEDSKETCH:-fedsketch}
LOGS=${LOGS:-runs/parallel-logs}
JOBS=${JOBS:-$(( $(wc -w <<<"$seeds") * $# ))}
mkdir -p "$LOGS"

run_one() {  # suite seed
    local log="$LOGS/$(basename "$1" .toml)-seed$2.log"
    if $FEDSKETCH compare "$1" --seeds "$2" >"$log" 2>&1; then
        echo "done: $1 seed $2"
    else
        echo "FAILED: $1 seed $2 (log: $log)"
    fi
}

running=0
for seed in $seeds; do
    for suite in "$@"; do
        if (( running >= JOBS )); then wait -n; running=$((running - 1)); fi
        run_one "$suite" "$seed" &
        running=$((running + 1))
    done
done
wait
status=0
for suite in "$@"; do  # every run is finished now: this only reads them and writes the tables
    $FEDSKETCH compare "$suite" --seeds "$(tr -s ' ' ',' <<<"$seeds")" || status=1
done
exit $status
