#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The run command: installs what is missing, builds, starts the local stack (PostgreSQL, Redis,
# Kafka) and the five services, waits until every service is ready, and runs the main job.
#   infra/up.sh          start (idempotent) and run the main job
#   infra/up.sh status   one line per server and service
#   infra/up.sh stop     stop the services, then the stack
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
run_dir=${DRIFTLOCK_RUN_DIR:-$root/run/local}
build=${DRIFTLOCK_BUILD:-$root/build/dev}
services=(ingest detector metering billing notifier)

log() { printf '==> %s\n' "$*"; }

svc_pid() { cat "$run_dir/services/$1.pid" 2>/dev/null || true; }
svc_alive() { local p; p=$(svc_pid "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }
svc_admin_port() { cat "$run_dir/services/$1.admin_port"; }

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

stop_services() {
	local s p
	for s in "${services[@]}"; do
		if svc_alive "$s"; then
			p=$(svc_pid "$s")
			kill -TERM "$p"
			for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
			if kill -0 "$p" 2>/dev/null; then
				echo "$s did not exit within 10 s of SIGTERM; killing" >&2
				kill -KILL "$p" || true
			fi
			echo "stopped driftlock-$s (pid $p)"
		fi
		rm -f "$run_dir/services/$s.pid"
	done
}

status() {
	local s rc=0
	"$root/infra/stack.sh" status --run-dir "$run_dir" || rc=1
	for s in "${services[@]}"; do
		if svc_alive "$s" && curl -fsS "http://127.0.0.1:$(svc_admin_port "$s")/readyz" >/dev/null 2>&1; then
			printf '%-10s ready    pid %s  admin http://127.0.0.1:%s\n' "$s" "$(svc_pid "$s")" "$(svc_admin_port "$s")"
		else
			printf '%-10s DOWN\n' "$s"; rc=1
		fi
	done
	return $rc
}

case "${1:-start}" in
stop)
	stop_services
	"$root/infra/stack.sh" stop --run-dir "$run_dir"
	exit 0 ;;
status)
	status; exit $? ;;
start) ;;
*)
	echo "usage: $0 [start|status|stop]" >&2; exit 2 ;;
esac

log "installing what is missing"
"$root/infra/install-deps.sh"

log "building in $build"
[ -f "$build/build.ninja" ] || meson setup "$build" -Dtests=disabled -Dbuildtype=release >/dev/null
meson compile -C "$build" >/dev/null

log "starting the local stack in $run_dir"
"$root/infra/stack.sh" start --run-dir "$run_dir"
set -a
# shellcheck disable=SC1091
. "$run_dir/stack.env"
set +a
"$root/infra/migrate.sh"

mkdir -p "$run_dir/services" "$run_dir/logs"
for s in "${services[@]}"; do
	if svc_alive "$s"; then
		echo "driftlock-$s already running (pid $(svc_pid "$s"))"
		continue
	fi
	[ -f "$run_dir/services/$s.admin_port" ] || free_port > "$run_dir/services/$s.admin_port"
	upper=$(echo "$s" | tr a-z A-Z)
	dsn_var="DRIFTLOCK_PG_DSN_$upper"
	extra=()
	if [ "$s" = ingest ]; then
		[ -f "$run_dir/services/ingest.http_port" ] || free_port > "$run_dir/services/ingest.http_port"
		extra=(DRIFTLOCK_INGEST_PORT="$(cat "$run_dir/services/ingest.http_port")")
	fi
	env DRIFTLOCK_ADMIN_PORT="$(svc_admin_port "$s")" \
		DRIFTLOCK_PG_DSN="${!dsn_var}" \
		"${extra[@]}" \
		setsid "$build/services/$s/driftlock-$s" >>"$run_dir/logs/$s.log" 2>&1 </dev/null &
	echo $! > "$run_dir/services/$s.pid"
	echo "started driftlock-$s (pid $!), log $run_dir/logs/$s.log"
done

log "waiting for every service to be ready"
for s in "${services[@]}"; do
	port=$(svc_admin_port "$s")
	ok=0
	for _ in $(seq 1 150); do
		if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then ok=1; break; fi
		svc_alive "$s" || break
		sleep 0.2
	done
	if [ $ok = 1 ]; then
		printf '%-10s ready  %s\n' "$s" "$(curl -fsS "http://127.0.0.1:$port/readyz")"
	else
		echo "driftlock-$s is not ready; last lines of its log:" >&2
		tail -n 20 "$run_dir/logs/$s.log" >&2
		exit 1
	fi
done

log "DriftLock is up"
status
cat <<TXT

Public API (ingest):  http://127.0.0.1:$(cat "$run_dir/services/ingest.http_port")
Addresses of Kafka, PostgreSQL and Redis: $run_dir/stack.env
Logs: $run_dir/logs/     Stop everything: infra/up.sh stop
TXT
