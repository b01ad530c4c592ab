#!/usr/bin/env bash
# Where a proxy's CPU per request goes: user space (the proxy's own code) and the kernel
# (its system calls and the loopback TCP work they carry), for switchyard and HAProxy side
# by side, pinned like peerbench (each proxy on CPU 1; wrk and the nginx upstream on CPU 0),
# all on 127.0.0.1. peerbench's `cpu us/req` is the sum of the two; this shows the split,
# and so how much of a proxy's CPU no user-space change can remove.
#
#   loadtest/cpu_split/run.sh [path/to/switchyard]   [ROUNDS=2 CONNS="64 256" SECS=8]
# Without a path: the dist binary wherever cargo puts it (CARGO_TARGET_DIR included).
# Needs wrk, nginx, haproxy, taskset (as peerbench does).
set -euo pipefail
source "$(dirname "$0")/../switchyard_bin.sh"
bin=$(switchyard_bin dist "${1:-}")
for tool in wrk nginx haproxy taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
rounds=${ROUNDS:-2}; conns=${CONNS:-"64 256"}; secs=${SECS:-8}
here=$(cd "$(dirname "$0")" && pwd)
run=$(mktemp -d /tmp/cpu-split.XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

mkdir -p "$run/upstream"
sed "s#@RUN@#$run/upstream#" "$here/upstream-nginx.conf" > "$run/upstream/nginx.conf"
taskset -c 0 nginx -p "$run/upstream" -c "$run/upstream/nginx.conf" -g 'daemon off;' &
pids+=($!)
sed "s#@RUN@#$run#" "$here/switchyard.toml" > "$run/switchyard.toml"
taskset -c 1 "$bin" run --config "$run/switchyard.toml" > "$run/switchyard.log" 2>&1 &
pids+=($!); switchyard=$!
taskset -c 1 haproxy -f "$here/haproxy.cfg" > "$run/haproxy.log" 2>&1 &
pids+=($!); haproxy=$!
for port in 18193 18194 18181; do
  for _ in $(seq 1 50); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
    sleep 0.1
  done
done

tick=$(getconf CLK_TCK)
# user and system CPU time of a process, in clock ticks
cpu_of() { awk '{print $14, $15}' "/proc/$1/stat"; }
echo "proxy conns req/s user_us/req sys_us/req total_us/req"
for c in $conns; do
  for round in $(seq 1 "$rounds"); do
    for proxy in switchyard:$switchyard:18193 haproxy:$haproxy:18194; do
      IFS=: read -r name pid port <<<"$proxy"
      url=http://127.0.0.1:$port/
      taskset -c 0 wrk -t1 -c"$c" -d2s "$url" > /dev/null
      read -r user0 sys0 < <(cpu_of "$pid")
      taskset -c 0 wrk -t1 -c"$c" -d"${secs}s" "$url" > "$run/wrk.txt"
      read -r user1 sys1 < <(cpu_of "$pid")
      requests=$(grep -oE '^ *[0-9]+ requests' "$run/wrk.txt" | grep -oE '[0-9]+')
      python3 - "$name" "$c" "$requests" "$secs" "$tick" "$user0" "$user1" "$sys0" "$sys1" <<'PY'
import sys
name, c, requests, secs, tick = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
user0, user1, sys0, sys1 = map(int, sys.argv[6:10])
user = (user1 - user0) / tick * 1e6 / requests
system = (sys1 - sys0) / tick * 1e6 / requests
print(f"{name} {c} {requests / secs:.0f} {user:.2f} {system:.2f} {user + system:.2f}")
PY
    done
  done
done
