#!/usr/bin/env bash
# Runs `./dancemoe bench load` with the whole local cluster on the CPUs given: the benchmark, its edges and clients
# (they inherit its affinity) and the running local services, the broker's nodes and PostgreSQL (all their threads and
# child processes). The services get their own CPUs back when it ends, however it ends. It shows how serving follows
# the cores a site has, which a machine cannot show by adding cores it does not have.
#
#   scripts/bench-load-cores.sh CPUS [bench load options]
#   scripts/bench-load-cores.sh 0 --edges 3 --concurrency 1,16 --rounds 3 --json
set -euo pipefail

if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  echo "usage: scripts/bench-load-cores.sh CPUS [bench load options]   (CPUS as taskset takes them: 0, 0,1, 0-3)" >&2
  exit 2
fi
cpus=$1
shift
taskset -c "$cpus" true 2>/dev/null || { echo "bench-load-cores: '$cpus' names no CPU of this machine (it has $(nproc --all))" >&2; exit 2; }

root=$(cd "$(dirname "$0")/.." && pwd)

descendants() {
  local child
  for child in $(pgrep -P "$1" || true); do
    echo "$child"
    descendants "$child"
  done
}

main_pids=$("$root/scripts/services.sh" pids)
service_pids=()
for pid in $main_pids; do
  service_pids+=("$pid" $(descendants "$pid"))
done
if [ ${#service_pids[@]} -eq 0 ]; then
  echo "bench-load-cores: no local services running under ${DANCEMOE_STATE:-/var/tmp/dancemoe}: ./dancemoe services up" >&2
  exit 1
fi

declare -A masks
for pid in "${service_pids[@]}"; do
  masks[$pid]=$(taskset -p "$pid" 2>/dev/null | sed 's/.*: //') || true
done

give_back() {
  local pid
  for pid in "${!masks[@]}"; do
    [ -n "${masks[$pid]}" ] && taskset -a -p "${masks[$pid]}" "$pid" >/dev/null 2>&1 || true
  done
}
trap give_back EXIT

for pid in "${service_pids[@]}"; do
  taskset -a -p -c "$cpus" "$pid" >/dev/null 2>&1 || true
done
echo "bench-load-cores: the broker, PostgreSQL (${#service_pids[@]} processes) and the benchmark on CPUs $cpus" >&2
# In the background so that a signal to this script alone reaches the benchmark too, which then stops its edges.
taskset -c "$cpus" "$root/dancemoe" bench load "$@" &
bench=$!
trap 'kill -TERM "$bench" 2>/dev/null || true' INT TERM HUP
set +e
wait "$bench"
status=$?
while kill -0 "$bench" 2>/dev/null; do
  wait "$bench"
  status=$?
done
exit "$status"
