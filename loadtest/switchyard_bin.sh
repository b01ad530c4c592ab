# Sourced by the benchmark scripts: `switchyard_bin PROFILE [PATH]` prints PATH, or, without
# one, the PROFILE build wherever cargo puts it (CARGO_TARGET_DIR included); it fails with
# the command to build it when there is no binary there.
switchyard_bin() {
  local profile=$1 bin=${2:-}
  if [ -z "$bin" ]; then
    local target_dir
    target_dir=$(cargo metadata --format-version 1 --no-deps \
      | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    bin=$target_dir/$profile/switchyard
  fi
  if [ ! -x "$bin" ]; then
    echo "no switchyard binary at $bin: cargo build --profile $profile first" >&2
    return 1
  fi
  echo "$bin"
}
