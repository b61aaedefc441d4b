#!/usr/bin/env bash
# fedsketch on a local Flower deployment: 1 SuperLink + N SuperNodes on 127.0.0.1,
# TLS (a throw-away CA and server certificate made here) and SuperNode authentication
# (ECDSA keys registered with `flwr supernode register`). Also starts one SuperNode with an
# unregistered key and checks that the SuperLink refuses it. Everything started here is
# stopped at exit. See deploy/README.md.
#
# Usage: deploy/run_local.sh [-n N] [-c CONFIG] [-s section.key=value]... [-d DATA_DIR]
#                            [-w WORKDIR] [-p PORT] [-t TIMEOUT_S]
#   -n N        number of SuperNodes (= data.num_clients)           [2]
#   -c CONFIG   fedsketch TOML config                               [embedded default]
#   -s K=V      config override (repeatable), as for `fedsketch run --set`
#   -d DIR      a local data folder (data.source='local', data.data_dir) [the embedded data]
#   -w DIR      work folder: certs, keys, logs, FLWR_HOME, runs     [a new mktemp -d]
#   -p PORT     SuperLink port; SuperNodes use PORT+1..PORT+N+1     [9300]
#   -t SECONDS  limit for the whole `flwr run`                      [900]
# Exit status: 0 when the run finished, its run folder is complete and the unregistered
# SuperNode was rejected; non-zero otherwise.
set -euo pipefail

N=2; CONFIG=""; DATA_DIR=""; WORK=""; PORT=9300; RUN_TIMEOUT=900
SETS=()
while getopts "n:c:s:d:w:p:t:h" opt; do
  case "$opt" in
    n) N="$OPTARG" ;; c) CONFIG="$OPTARG" ;; s) SETS+=("$OPTARG") ;; d) DATA_DIR="$OPTARG" ;;
    w) WORK="$OPTARG" ;; p) PORT="$OPTARG" ;; t) RUN_TIMEOUT="$OPTARG" ;;
    h) sed -n '2,20p' "$0"; exit 0 ;; *) sed -n '2,20p' "$0" >&2; exit 2 ;;
  esac
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOST=127.0.0.1
WORK="${WORK:-$(mktemp -d -t fedsketch-deploy.XXXXXX)}"
mkdir -p "$WORK"; WORK="$(cd "$WORK" && pwd)"
if [ -n "$CONFIG" ]; then CONFIG="$(cd "$(dirname "$CONFIG")" && pwd)/$(basename "$CONFIG")"; fi
DATA_SETS=()
if [ -n "$DATA_DIR" ]; then
  DATA_DIR="$(cd "$DATA_DIR" && pwd)"; DATA_SETS=(--set "data.source='local'" --set "data.data_dir='$DATA_DIR'")
fi
CERTS="$WORK/certs"; KEYS="$WORK/keys"; LOGS="$WORK/logs"
mkdir -p "$CERTS" "$KEYS" "$LOGS" "$WORK/flwr-home" "$WORK/runs"
export FLWR_HOME="$WORK/flwr-home"
cd "$WORK"  # every process runs here; all paths below are absolute
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
CONN=fedsketch-local

say() { printf '[run_local %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# ---------------------------------------------------------------- cleanup (every process we start)
PGIDS=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for pg in "${PGIDS[@]}"; do kill -TERM -- "-$pg" 2>/dev/null || true; done
  for _ in $(seq 1 50); do  # up to 10 s for a clean exit
    local alive=0
    for pg in "${PGIDS[@]}"; do kill -0 -- "-$pg" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.2
  done
  for pg in "${PGIDS[@]}"; do kill -KILL -- "-$pg" 2>/dev/null || true; done
  say "stopped ${#PGIDS[@]} process groups; work folder $WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_bg LOG CMD... : run CMD in its own process group (setsid; no job control here, so the
# background child is not a group leader and setsid keeps its pid = the new group id)
start_bg() {
  local log="$1"; shift
  setsid "$@" >"$log" 2>&1 < /dev/null &
  PGIDS+=("$!")
}

wait_for() {  # wait_for SECONDS DESCRIPTION CMD... : retry CMD until it succeeds or time runs out
  local limit="$1" what="$2"; shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$end" ]; then say "timed out after ${limit}s waiting for $what"; return 1; fi
    sleep 1
  done
}

# ---------------------------------------------------------------- 1. certificates (CA + server, SAN IP:127.0.0.1)
say "generating a CA and a server certificate in $CERTS"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=fedsketch local CA" \
  -keyout "$CERTS/ca.key" -out "$CERTS/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=$HOST" \
  -keyout "$CERTS/server.key" -out "$CERTS/server.csr" 2>/dev/null
printf 'subjectAltName=IP:%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
  "$HOST" > "$CERTS/server.ext"
openssl x509 -req -in "$CERTS/server.csr" -CA "$CERTS/ca.crt" -CAkey "$CERTS/ca.key" -CAcreateserial \
  -days 2 -extfile "$CERTS/server.ext" -out "$CERTS/server.crt" 2>/dev/null

# ---------------------------------------------------------------- 2. SuperNode keys (ECDSA, OpenSSH format)
say "generating $N registered SuperNode keys and 1 unregistered key in $KEYS"
for i in $(seq 0 $((N - 1))) rogue; do
  rm -f "$KEYS/node-$i" "$KEYS/node-$i.pub"
  ssh-keygen -q -t ecdsa -b 384 -N "" -C "fedsketch-node-$i" -f "$KEYS/node-$i"
done

# ---------------------------------------------------------------- 3. the experiment config (resolved, absolute paths)
EXP="$WORK/experiment.toml"
SET_ARGS=()
for kv in "${SETS[@]}"; do SET_ARGS+=(--set "$kv"); done
fedsketch defaults ${CONFIG:+"$CONFIG"} "${SET_ARGS[@]}" \
  --set "data.num_clients=$N" ${DATA_SETS[@]+"${DATA_SETS[@]}"} --set "output.dir='$WORK/runs'" \
  --set "output.progress=false" > "$EXP"
say "experiment config: $EXP"

# ---------------------------------------------------------------- 4. SuperLink (TLS + node auth, no dependency install)
cat > "$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "$CONN"

[superlink.$CONN]
address = "$HOST:$PORT"
root-certificates = "$CERTS/ca.crt"
TOML
say "starting flower-superlink on $HOST:$PORT"
start_bg "$LOGS/superlink.log" flower-superlink \
  --host "$HOST" --port "$PORT" \
  --ssl-ca-certfile "$CERTS/ca.crt" --ssl-certfile "$CERTS/server.crt" --ssl-keyfile "$CERTS/server.key" \
  --enable-supernode-auth --disable-runtime-dependency-installation
wait_for 60 "the SuperLink" flwr supernode list "$CONN"

# ---------------------------------------------------------------- 5. register the N node keys
for i in $(seq 0 $((N - 1))); do
  flwr supernode register "$KEYS/node-$i.pub" "$CONN" --name "node-$i" > "$LOGS/register-$i.log" 2>&1 \
    || { cat "$LOGS/register-$i.log"; exit 1; }
done
say "registered $N SuperNode keys"

# ---------------------------------------------------------------- 6. SuperNodes, one per partition
for i in $(seq 0 $((N - 1))); do
  start_bg "$LOGS/supernode-$i.log" flower-supernode \
    --superlink "$HOST:$PORT" --root-certificates "$CERTS/ca.crt" \
    --auth-supernode-private-key "$KEYS/node-$i" \
    --node-config "partition-id=$i num-partitions=$N" \
    --host "$HOST" --port $((PORT + 1 + i))
done
say "started $N SuperNodes"

# ---------------------------------------------------------------- 7. an unregistered key must be refused
say "starting a SuperNode with an UNREGISTERED key (must be rejected)"
set +e
timeout 90 flower-supernode --superlink "$HOST:$PORT" --root-certificates "$CERTS/ca.crt" \
  --auth-supernode-private-key "$KEYS/node-rogue" --node-config "partition-id=0 num-partitions=$N" \
  --host "$HOST" --port $((PORT + N + 1)) --max-retries 0 > "$LOGS/supernode-rogue.log" 2>&1 < /dev/null
ROGUE_RC=$?
set -e
if [ "$ROGUE_RC" = 0 ] || [ "$ROGUE_RC" = 124 ] || ! grep -q "Failed to activate SuperNode" "$LOGS/supernode-rogue.log"; then
  say "FAIL: the unregistered SuperNode was not rejected (exit $ROGUE_RC)"; tail -5 "$LOGS/supernode-rogue.log"; exit 1
fi
say "REJECTED: unregistered SuperNode refused (exit $ROGUE_RC, Flower exit code 305: Failed to activate SuperNode)"
echo "$ROGUE_RC" > "$WORK/rogue.rc"

# ---------------------------------------------------------------- 8. run the app
say "flwr run (limit ${RUN_TIMEOUT}s); log: $LOGS/flwr-run.log"
set +e
timeout "$RUN_TIMEOUT" flwr run "$REPO/deploy/app" "$CONN" --stream \
  --run-config "config='$EXP' discovery-wait=120.0" > "$LOGS/flwr-run.log" 2>&1 < /dev/null
RUN_RC=$?
set -e
[ "$RUN_RC" = 0 ] || { say "flwr run failed (exit $RUN_RC)"; tail -30 "$LOGS/flwr-run.log"; exit 1; }

# ---------------------------------------------------------------- 9. check the run folder
python3 - "$EXP" <<'PY'
import json, sys
from fedsketch.config import load_config
from fedsketch.runner import run_dir_for
cfg = load_config(sys.argv[1])
out = run_dir_for(cfg)
recs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]
assert [r["round"] for r in recs] == list(range(cfg.fl.rounds + 1)), [r["round"] for r in recs]
assert (out / "adapter" / "adapter_config.json").is_file(), "no adapter saved"
for r in recs[1:]:
    print(f"  round {r['round']}: sampled {r['sampled']}, failed {[f['client'] for f in r['failed']]}, "
          f"sim {r['sim_seconds']:.2f} s, real {r['real_seconds']:.1f} s"
          + (f", accuracy {r['accuracy']:.3f}" if r.get('accuracy') is not None else ""))
print(f"run folder: {out}")
PY
say "OK"
