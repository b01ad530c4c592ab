#!/usr/bin/env bash
# switchyard as peerbench's extra proxy, with optional TOML appended (SWITCHYARD_EXTRA), to
# measure what a feature costs beside the same run's HAProxy and NGINX:
#   SWITCHYARD_BIN=$PWD/target/dist/switchyard SWITCHYARD_EXTRA="$(cat loadtest/peerbench/shadow-10.toml)" \
#     MODES=pinned ../shared/peerbench/run.sh --extra loadtest/peerbench/extra-switchyard.sh --extra-name switchyard
# The service, versions and split are peerbench's (its PEERBENCH_* variables).
set -euo pipefail
bin="${SWITCHYARD_BIN:-$PWD/target/dist/switchyard}"
cfg="$PEERBENCH_RUN/extra-switchyard.toml"
cat >"$cfg" <<CFG
[proxy]
listen = "$PEERBENCH_LISTEN"

[admin]
socket = "$PEERBENCH_RUN/switchyard-admin.sock"

[state]
dir = "$PEERBENCH_RUN/switchyard-state"

[services.bench]
stable = "stable"
weights = { stable = $PEERBENCH_WEIGHT_STABLE, canary = $PEERBENCH_WEIGHT_CANARY, shadow = 0 }

[services.bench.versions.stable]
endpoints = ["$PEERBENCH_UPSTREAM_STABLE"]

[services.bench.versions.canary]
endpoints = ["$PEERBENCH_UPSTREAM_CANARY"]

# A third name for the canary's upstream, for shadow copies (never given traffic).
[services.bench.versions.shadow]
endpoints = ["$PEERBENCH_UPSTREAM_CANARY"]

${SWITCHYARD_EXTRA:-}
CFG
rm -rf "$PEERBENCH_RUN/switchyard-state"
exec "$bin" run --config "$cfg"
