#!/usr/bin/env bash
# An upstream's graceful GOAWAY, through switchyard and HAProxy (`proto h2`): h2load sends
# N requests (C connections, M streams each) over h2c to each proxy, whose upstream
# (goaway_upstream.py, pip package `h2`) sends GOAWAY every EVERY streams on a connection.
# Prints each proxy's non-2xx and failed requests: streams the upstream never processed
# must be sent again, not answered 502, and never counted against the version (the
# outcomes switchyard counted for it are printed). All on 127.0.0.1.
#
#   loadtest/h2bench/goaway.sh path/to/switchyard   [N=10000 C=10 M=10 EVERY="1000 5"]
set -euo pipefail
bin=$1
n=${N:-10000}; c=${C:-10}; m=${M:-10}; everies=${EVERY:-"1000 5"}
here=$(cd "$(dirname "$0")" && pwd)
run=$(mktemp -d /tmp/goaway.XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
up=127.0.0.1:18281

printf '%-11s %6s %8s %8s %8s\n' proxy every requests "2xx" "not 2xx"
for every in $everies; do
  python3 "$here/goaway_upstream.py" 18281 "$every" > "$run/upstream-$every.log" 2>&1 &
  upstream_pid=$!; pids+=($upstream_pid)
  cat > "$run/switchyard.toml" <<TOML
[proxy]
listen = "127.0.0.1:18293"
[admin]
socket = "$run/admin-$every.sock"
[state]
dir = "$run/state-$every"
[services.bench]
stable = "blue"
weights = { blue = 100 }
[services.bench.versions.blue]
endpoints = ["$up"]
protocol = "h2c"
TOML
  "$bin" run --config "$run/switchyard.toml" > "$run/switchyard-$every.log" 2>&1 &
  sy=$!; pids+=($sy)
  sed "s#@UP@#$up#; s#18190#18290#" "$here/haproxy.cfg" > "$run/haproxy.cfg"
  haproxy -f "$run/haproxy.cfg" > "$run/haproxy-$every.log" 2>&1 &
  hp=$!; pids+=($hp)
  sleep 1
  for target in switchyard:18293 haproxy:18290; do
    out=$(h2load -n "$n" -c "$c" -m "$m" "http://127.0.0.1:${target#*:}/" 2>&1)
    ok=$(echo "$out" | awk '/^status codes:/ {gsub(",", ""); print $3}')
    total=$(echo "$out" | awk '/^requests:/ {print $2}')
    printf '%-11s %6s %8s %8s %8s\n' "${target%%:*}" "$every" "$total" "$ok" $((total - ok))
  done
  # What switchyard counted against the version (refused streams never are).
  echo "  switchyard counted for blue: $(curl -s --unix-socket "$run/admin-$every.sock" http://admin/metrics \
    | awk '/^switchyard_requests_total\{.*version="blue"/ {split($0, a, "outcome=\""); split(a[2], b, "\""); printf "%s=%s ", b[1], $NF}')"
  kill "$sy" "$hp"; kill -TERM "$upstream_pid"; wait "$upstream_pid" 2>/dev/null || true
  echo "  upstream: $(tail -1 "$run/upstream-$every.log")"
done
