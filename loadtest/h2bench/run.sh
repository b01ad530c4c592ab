#!/usr/bin/env bash
# HTTP/2 to upstreams, side by side: h2load (Debian's nghttp2-client) over h2c through
# switchyard (protocol = "h2c"), HAProxy (`proto h2` on the server line) and NGINX
# (`grpc_pass`, its only HTTP/2-to-upstream path) to one nginx h2c upstream, all on
# 127.0.0.1. Pinned like peerbench: each proxy on CPU 1, h2load and the upstream on CPU 0.
# Prints req/s and the proxy's own CPU time per request (user + system from /proc).
#
#   loadtest/h2bench/run.sh [path/to/switchyard]   [ROUNDS=3 CONNS="64 256" STREAMS=10 SECS=10]
# Without a path: the release binary wherever cargo puts it (CARGO_TARGET_DIR included).
set -euo pipefail
source "$(dirname "$0")/../switchyard_bin.sh"
bin=$(switchyard_bin release "${1:-}")
rounds=${ROUNDS:-3}; conns=${CONNS:-"64 256"}; streams=${STREAMS:-10}; secs=${SECS:-10}
here=$(cd "$(dirname "$0")" && pwd)
run=$(mktemp -d /tmp/h2bench.XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

up=127.0.0.1:18181
mkdir -p "$run/upstream" "$run/nginx"
sed "s#@RUN@#$run/upstream#" "$here/upstream-nginx.conf" > "$run/upstream/nginx.conf"
taskset -c 0 nginx -p "$run/upstream" -c "$run/upstream/nginx.conf" -g 'daemon off;' &
pids+=($!)

cat > "$run/switchyard.toml" <<TOML
[proxy]
listen = "127.0.0.1:18193"
workers = 1
version_header = ""
[admin]
socket = "$run/admin.sock"
[state]
dir = "$run/state"
[services.bench]
stable = "blue"
weights = { blue = 100 }
guard = { enabled = false }
[services.bench.versions.blue]
endpoints = ["$up"]
protocol = "h2c"
TOML
taskset -c 1 "$bin" run --config "$run/switchyard.toml" > "$run/switchyard.log" 2>&1 &
pids+=($!); switchyard_pid=$!

sed "s#@UP@#$up#" "$here/haproxy.cfg" > "$run/haproxy.cfg"
taskset -c 1 haproxy -f "$run/haproxy.cfg" > "$run/haproxy.log" 2>&1 &
pids+=($!); haproxy_pid=$!

sed "s#@RUN@#$run/nginx#; s#@UP@#$up#" "$here/nginx-grpc.conf" > "$run/nginx/nginx.conf"
taskset -c 1 nginx -p "$run/nginx" -c "$run/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!); nginx_pid=$!
sleep 1

# user + system clock ticks of a process and its children (nginx's worker).
ticks() {
  local total=0 pid
  for pid in $1 $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}
hz=$(getconf CLK_TCK)

declare -A ports=([direct]=18181 [switchyard]=18193 [haproxy]=18190 [nginx]=18191)
declare -A procs=([direct]="" [switchyard]=$switchyard_pid [haproxy]=$haproxy_pid [nginx]=$nginx_pid)
targets="direct switchyard haproxy nginx"
for t in $targets; do
  h2load -n 2000 -c 8 -m 4 "http://127.0.0.1:${ports[$t]}/" > "$run/warm-$t.txt" 2>&1 \
    || { echo "$t does not answer h2c:"; tail -5 "$run/warm-$t.txt"; exit 1; }
  grep -q "2000 succeeded" "$run/warm-$t.txt" || { echo "$t failed the warm-up:"; grep -E "requests:|status codes:" "$run/warm-$t.txt"; exit 1; }
done

echo "uptime before: $(uptime)"
printf '%-11s %6s %5s %10s %10s %8s\n' target conns round "req/s" "cpu us/req" failed
for c in $conns; do
  for r in $(seq 1 "$rounds"); do
    # Rotate the order each round so no target always goes first.
    list=($targets); k=$(( (r - 1) % ${#list[@]} ))
    order=("${list[@]:k}" "${list[@]:0:k}")
    for t in "${order[@]}"; do
      pid=${procs[$t]}
      before=0; [ -n "$pid" ] && before=$(ticks "$pid")
      out=$(taskset -c 0 h2load -D "$secs" -c "$c" -m "$streams" -t 1 "http://127.0.0.1:${ports[$t]}/" 2>&1)
      after=0; [ -n "$pid" ] && after=$(ticks "$pid")
      rps=$(echo "$out" | awk '/^finished in/ {print $4}')
      done_=$(echo "$out" | awk '/^requests:/ {print $8}')
      failed=$(echo "$out" | awk '/^requests:/ {print $10 + $12}')
      cpu="-"
      [ -n "$pid" ] && [ "${done_:-0}" -gt 0 ] && cpu=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$done_" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')
      printf '%-11s %6s %5s %10s %10s %8s\n' "$t" "$c" "$r" "$rps" "$cpu" "$failed"
    done
  done
done
echo "uptime after: $(uptime)"
