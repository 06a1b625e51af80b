#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The test command: installs what is missing, builds (warnings are errors), runs the Check unit
# suites under AddressSanitizer+UBSan, starts a private local stack and runs the integration suites
# against the real PostgreSQL, Redis and Kafka, then stops exactly that stack.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

build_main=${DRIFTLOCK_TEST_BUILD:-$root/build/test}
build_asan=${DRIFTLOCK_TEST_BUILD_ASAN:-$root/build/test-asan}
run_dir=${DRIFTLOCK_TEST_RUN_DIR:-$root/build/test-run}

log() { printf '\n==> %s\n' "$*"; }

log "installing what is missing"
"$root/infra/install-deps.sh"

log "building (warning_level=2, werror) in $build_main"
if [ ! -f "$build_main/build.ninja" ]; then
	meson setup "$build_main" -Dwerror=true -Dtests=enabled
fi
meson compile -C "$build_main"

log "building unit suites with AddressSanitizer and UBSan in $build_asan"
if [ ! -f "$build_asan/build.ninja" ]; then
	meson setup "$build_asan" -Dwerror=true -Dtests=enabled \
		-Db_sanitize=address,undefined -Db_lundef=false
fi
meson compile -C "$build_asan"

status=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1

log "unit suites (sanitized)"
meson test -C "$build_asan" --suite unit --print-errorlogs -v || status=1

build_fuzz=${DRIFTLOCK_TEST_BUILD_FUZZ:-$root/build/test-fuzz}
log "libFuzzer targets, briefly (clang, ASan+UBSan) in $build_fuzz"
if [ ! -f "$build_fuzz/build.ninja" ]; then
	CC=clang meson setup "$build_fuzz" -Dfuzz=true -Dtests=enabled \
		-Db_sanitize=address,undefined -Db_lundef=false
fi
meson compile -C "$build_fuzz"
meson test -C "$build_fuzz" --suite fuzz --print-errorlogs || status=1

log "starting a private stack in $run_dir"
"$root/infra/stack.sh" start --run-dir "$run_dir"
stop_stack() { "$root/infra/stack.sh" stop --run-dir "$run_dir" || true; }
trap stop_stack EXIT
set -a
# shellcheck disable=SC1091
. "$run_dir/stack.env"
set +a
"$root/infra/migrate.sh"

log "integration suites (real PostgreSQL, Redis, Kafka)"
meson test -C "$build_main" --suite integration --print-errorlogs -v || status=1

log "stopping the private stack"
trap - EXIT
stop_stack

log "summary"
python3 - "$build_asan/meson-logs/testlog.json" "$build_fuzz/meson-logs/testlog.json" \
	"$build_main/meson-logs/testlog.json" <<'PY'
import json, sys
passed = failed = skipped = 0
for path in sys.argv[1:]:
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        t = json.loads(line)
        r = t.get("result")
        name = t.get("name")
        if r == "OK":
            passed += 1
        elif r == "SKIP":
            skipped += 1
            print(f"skipped (counts as not passed): {name}")
        else:
            failed += 1
            print(f"FAILED: {name} ({r})")
print(f"suites: {passed} passed, {failed + skipped} failed")
PY
exit $status
