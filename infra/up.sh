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

# The main job: a sample of the labelled streams sent through the public API as a customer
# would, with an API key of a demo org created once (kept in $run_dir/demo.env).
datasets=${DRIFTLOCK_DATASETS:-$(cd "$root/.." && pwd)/shared/datasets}
sample=${DRIFTLOCK_SAMPLE_EVENTS:-2000}
api="http://127.0.0.1:$(cat "$run_dir/services/ingest.http_port")"
if [ ! -s "$run_dir/demo.env" ]; then
	org=$("$build/services/ingest/driftlock-admin" org create --name "demo" --plan pro)
	key=$("$build/services/ingest/driftlock-admin" key create --org "$org" --name demo 2>/dev/null)
	(umask 077 && printf 'DEMO_ORG=%s\nDEMO_KEY=%s\n' "$org" "$key" >"$run_dir/demo.env")
fi
# shellcheck disable=SC1091
. "$run_dir/demo.env"

# POST one NDJSON file; honours 429/503 Retry-After like a well-behaved client.
post_batch() {
	local file=$1 code body tries=0
	while :; do
		code=$(curl -sS -o "$run_dir/last-response.json" -D "$run_dir/last-headers.txt" \
			-w '%{http_code}' -H "Authorization: Bearer $DEMO_KEY" \
			-H 'Content-Type: application/x-ndjson' --data-binary "@$file" "$api/v1/events")
		case "$code" in
		202) python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["accepted"])' \
			"$run_dir/last-response.json"; return 0 ;;
		429 | 503)
			tries=$((tries + 1))
			[ "$tries" -le 30 ] || { echo "gave up after 30 retries ($code)" >&2; return 1; }
			sleep "$(sed -n 's/^Retry-After: *\([0-9]*\).*/\1/ip' "$run_dir/last-headers.txt" | head -1 | grep . || echo 1)" ;;
		*)
			body=$(cat "$run_dir/last-response.json")
			echo "POST /v1/events answered $code: $body" >&2; return 1 ;;
		esac
	done
}

log "sending a sample of $datasets/streams through $api/v1/events ($sample events per stream)"
if [ ! -d "$datasets/streams" ]; then
	echo "no datasets at $datasets/streams (set DRIFTLOCK_DATASETS); nothing sent" >&2
else
	tmp=$(mktemp -d)
	total=0
	for f in "$datasets"/streams/*.ndjson.gz; do
		name=$(basename "$f" .ndjson.gz)
		# head stops reading early: zcat's SIGPIPE must not count as a failure (pipefail).
		head -n "$sample" < <(zcat "$f") | split -l 1000 - "$tmp/$name."
		sent=0
		for part in "$tmp/$name".*; do
			n=$(post_batch "$part") || exit 1
			sent=$((sent + n))
		done
		printf '  %-14s %6d events accepted\n' "$name" "$sent"
		total=$((total + sent))
	done
	rm -rf "$tmp"
	echo "  total          $total events, each acknowledged by Kafka (driftlock.events.v1)"
fi
# What the detector found in the sample, as metering stored it in PostgreSQL: wait until the
# demo org's anomalies stop arriving (the detector and metering have caught up), then print them
# with their explanations and the org's usage for the billing period.
if [ -d "$datasets/streams" ]; then
	log "waiting for the detector and metering to catch up"
	q() { psql "$DRIFTLOCK_PG_DSN_ADMIN" -X -q -A -t -v ON_ERROR_STOP=1 -v org="$DEMO_ORG" "$@"; }
	count_sql="SELECT count(*) FROM anomalies WHERE org_id = :'org'::uuid"
	last=-1 same=0
	for _ in $(seq 1 90); do
		n=$(q <<<"$count_sql;")
		if [ "$n" = "$last" ]; then same=$((same + 1)); else same=0; last=$n; fi
		# Stable for 8 s (4 polls) after something arrived, or for 30 s when nothing did.
		if { [ "$n" -gt 0 ] && [ $same -ge 4 ]; } || [ $same -ge 15 ]; then break; fi
		sleep 2
	done
	log "anomalies found in the sample (read back from PostgreSQL, at most 30 shown)"
	q <<'SQL'
SELECT format(E'%s  %-14s %-8s %s\n    %s = %s, usual %s (%s .. %s); p-value %s, score %s',
              to_char(detected_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), stream,
              severity, explanation_summary, explanation_signal,
              COALESCE(round(explanation_value::numeric, 3)::text, '-'),
              COALESCE(round(baseline_median::numeric, 3)::text, '-'),
              COALESCE(round(baseline_low::numeric, 3)::text, '-'),
              COALESCE(round(baseline_high::numeric, 3)::text, '-'),
              to_char(p_value, 'FM0.000000'), round(score::numeric, 2))
  FROM anomalies WHERE org_id = :'org'::uuid
 ORDER BY detected_at, stream, id LIMIT 30;
SQL
	q <<'SQL'
SELECT format(E'\n%s anomalies stored for the demo org; by stream: %s',
              COALESCE(sum(n), 0),
              COALESCE(string_agg(stream || ' ' || n, ', ' ORDER BY stream), 'none'))
  FROM (SELECT stream, count(*) AS n FROM anomalies WHERE org_id = :'org'::uuid
         GROUP BY stream) AS s;
SELECT format('usage this period (%s .. %s, plan %s): %s of %s included anomalies counted (%s %%)',
              to_char(period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
              to_char(period_end AT TIME ZONE 'UTC', 'YYYY-MM-DD'), plan, counted, included,
              COALESCE(percent::text, '-'))
  FROM usage_current_period WHERE org_id = :'org'::uuid;
SQL
fi

cat <<TXT

Public API (ingest):  $api   (demo org $DEMO_ORG; its API key is in $run_dir/demo.env)
Addresses of Kafka, PostgreSQL and Redis: $run_dir/stack.env
Logs: $run_dir/logs/     Stop everything: infra/up.sh stop
TXT
