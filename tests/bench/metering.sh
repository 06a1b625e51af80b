#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmarks driftlock-metering against a private real stack (Kafka, PostgreSQL, Redis) and writes
# the "Metering" section of docs/benchmarks.md (between its markers; tests/bench/run.sh keeps it).
#
# usage: tests/bench/metering.sh [BUILD_DIR]   (default build/bench, a release build)
# env:   REPEAT (default 3 rounds; medians are reported), ANOMALIES (200000 pre-filled anomalies),
#        ORGS (4 enterprise orgs, 8 streams each), ROWS (1000: the reference's rows per statement
#        and transaction, metering's default DRIFTLOCK_METERING_BATCH),
#        REFERENCE_ONLY=1 (only the COPY / INSERT half: for a tree without services/metering)
#
# The topic is filled once with ANOMALIES driftlock.anomaly.v1 messages shaped like the
# detector's (bench_metering fill). Each round: the metering service in a new consumer group on
# an anomalies table emptied of the previous round's rows (usage counters, alerts and outbox too,
# so every round stores and counts every anomaly), timed from its first "partitions assigned"
# log record (from its start when it logs none) until its /metrics show
# driftlock_metering_anomalies_total{result="stored"} at ANOMALIES; then, in the same round, the
# same rows by a plain COPY and by plain multi-row INSERTs into bench_anomalies, a scratch copy of
# the anomalies table with its columns, checks and indexes (bench_metering reference).
# Benchmarks are not tests: infra/test.sh does not run this.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/bench/lib.sh
. "$SRC/tests/bench/lib.sh"
BUILD=${1:-"$SRC/build/bench"}
REPEAT=${REPEAT:-3}
ANOMALIES=${ANOMALIES:-200000}
ORGS=${ORGS:-4}
ROWS=${ROWS:-1000}
REFERENCE_ONLY=${REFERENCE_ONLY:-0}
RUN="$SRC/build/bench-run"
OUT="$SRC/docs/benchmarks.md"

if [ "$REFERENCE_ONLY" != 1 ] && [ ! -f "$SRC/services/metering/meson.build" ]; then
	echo "bench: services/metering is not in this tree; REFERENCE_ONLY=1 runs the COPY / INSERT half" >&2
	exit 2
fi
if [ ! -f "$BUILD/build.ninja" ]; then
	meson setup "$BUILD" "$SRC" --buildtype=release >/dev/null
fi
TARGETS=(tests/bench/bench_metering)
[ "$REFERENCE_ONLY" = 1 ] || TARGETS+=(services/metering/driftlock-metering)
nice meson compile -C "$BUILD" "${TARGETS[@]}" >/dev/null

# A fresh private stack: the pre-filled topic must hold exactly this run's anomalies.
"$SRC/infra/stack.sh" stop --run-dir "$RUN" >/dev/null 2>&1 || true
rm -rf "$RUN"
"$SRC/infra/stack.sh" start --run-dir "$RUN" >&2
PID=
stop_service() {
	if [ -n "$PID" ]; then
		kill -TERM "$PID" 2>/dev/null || true
		wait "$PID" 2>/dev/null || true
	fi
	PID=
}
stop_all() {
	stop_service
	"$SRC/infra/stack.sh" stop --run-dir "$RUN" >/dev/null 2>&1 || true
}
trap stop_all EXIT
set -a
# shellcheck disable=SC1091
. "$RUN/stack.env"
set +a
"$SRC/infra/migrate.sh" >&2
# The orgs bench_metering writes anomalies for (b1000000-...-000000000NNN), on the enterprise
# plan (500,000 included: no threshold is crossed by the default run).
psql -q -v ON_ERROR_STOP=1 -v orgs="$ORGS" "$DRIFTLOCK_PG_DSN_ADMIN" >/dev/null <<'SQL'
INSERT INTO organizations (id, name, plan)
SELECT format('b1000000-0000-4000-8000-%s', lpad(i::text, 12, '0'))::uuid, 'bench ' || i, 'enterprise'
  FROM generate_series(1, :orgs) AS i
ON CONFLICT (id) DO NOTHING;
SQL

B="$BUILD/tests/bench/bench_metering"
M="$BUILD/services/metering/driftlock-metering"
TMP=$(mktemp -d)
# rate LOG START_MS WATCH_OUTPUT: anomalies/s from the first "partitions assigned" in LOG (else
# START_MS, the service's start) to the watch's done_ms; and which start was used.
rate() {
	python3 - "$1" "$2" "$3" "$ANOMALIES" <<'PY'
import datetime, json, sys
log, start_ms, watch, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
starts = []
for line in open(log, errors="replace"):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if r.get("msg") == "partitions assigned" and str(r.get("count", "1")) != "0":
        starts.append(datetime.datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).timestamp())
t0, how = (min(starts), "assigned") if starts else (start_ms / 1000, "started")
done = json.load(open(watch))["done_ms"] / 1000
print(round(n / (done - t0)), how)
PY
}
# Empties what a round writes, so the next one stores and counts every anomaly again.
fresh_tables() {
	psql -q -v ON_ERROR_STOP=1 "$DRIFTLOCK_PG_DSN_ADMIN" \
		-c "TRUNCATE anomalies, anomaly_status_history, usage_counters, usage_alerts, outbox" >/dev/null
	local hp=${DRIFTLOCK_REDIS_URL##*@}
	REDISCLI_AUTH=$(python3 -c 'import sys, urllib.parse as u; print(u.unquote(u.urlparse(sys.argv[1]).password or ""))' "$DRIFTLOCK_REDIS_URL") \
		redis-cli -h "${hp%%:*}" -p "$(echo "${hp#*:}" | cut -d/ -f1)" FLUSHDB | grep -qx OK
}

BASE_MS=$(date +%s%3N)
if [ "$REFERENCE_ONLY" != 1 ]; then
	echo "bench: filling driftlock.anomalies.v1 with $ANOMALIES anomalies" >&2
	"$B" fill --brokers "$DRIFTLOCK_KAFKA_BROKERS" --anomalies "$ANOMALIES" --orgs "$ORGS" \
		--base-ms "$BASE_MS" >"$TMP/fill"
fi

STAMP=$(date +%s)
for i in $(seq 1 "$REPEAT"); do
	echo "bench: metering round $i/$REPEAT" >&2
	MR=- HOW=-
	if [ "$REFERENCE_ONLY" != 1 ]; then
		fresh_tables
		PORT=$(free_port)
		START_MS=$(date +%s%3N)
		DRIFTLOCK_PG_DSN=$DRIFTLOCK_PG_DSN_METERING DRIFTLOCK_ADMIN_PORT=$PORT \
			DRIFTLOCK_METERING_GROUP="bench-$STAMP-$i" DRIFTLOCK_LOG_LEVEL=info \
			"$M" 2>"$RUN/logs/metering-$i.log" &
		PID=$!
		"$B" watch --port "$PORT" --anomalies "$ANOMALIES" --seconds 900 >"$TMP/w$i"
		stop_service
		read -r MR HOW <<<"$(rate "$RUN/logs/metering-$i.log" "$START_MS" "$TMP/w$i")"
		STORED=$(psql -At "$DRIFTLOCK_PG_DSN_ADMIN" -c "SELECT count(*) FROM anomalies")
		COUNTED=$(psql -At "$DRIFTLOCK_PG_DSN_ADMIN" -c "SELECT COALESCE(sum(anomalies), 0) FROM usage_counters")
		if [ "$STORED" != "$ANOMALIES" ] || [ "$COUNTED" != "$ANOMALIES" ]; then
			echo "bench: round $i stored $STORED and counted $COUNTED of $ANOMALIES" >&2
			exit 1
		fi
	fi
	"$B" reference --dsn "$DRIFTLOCK_PG_DSN_ADMIN" --anomalies "$ANOMALIES" --orgs "$ORGS" \
		--base-ms "$BASE_MS" --rows "$ROWS" >"$TMP/r$i"
	echo "$MR $(field "$TMP/r$i" copy_per_s) $(field "$TMP/r$i" insert_per_s) $HOW" >>"$TMP/runs"
done
CP=$(cut -d' ' -f2 "$TMP/runs" | median)
IN=$(cut -d' ' -f3 "$TMP/runs" | median)
if [ "$REFERENCE_ONLY" != 1 ]; then
	MT=$(cut -d' ' -f1 "$TMP/runs" | median)
	RC=$(awk -v a="$MT" -v b="$CP" 'BEGIN {printf "%.2f", a / b}')
	RI=$(awk -v a="$MT" -v b="$IN" 'BEGIN {printf "%.2f", a / b}')
	MSG_AVG=$(field "$TMP/fill" message_bytes_avg)
	HOWS=$(cut -d' ' -f4 "$TMP/runs" | sort -u | tr '\n' ' ')
fi

CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
{
	echo "<!-- metering:begin (written by tests/bench/metering.sh; do not edit by hand) -->"
	echo "## Metering: driftlock.anomalies.v1 to PostgreSQL"
	echo
	echo "- Date: $(date -u +%Y-%m-%dT%H:%M:%SZ); source $(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo unknown)"
	echo "- Machine: $(nproc) CPUs online, ${CPU:-unknown CPU}: the broker (one JVM), PostgreSQL, Redis, the service and the load tools share them; nothing is pinned."
	echo "- Command: \`REPEAT=$REPEAT$([ "$REFERENCE_ONLY" = 1 ] && echo " REFERENCE_ONLY=1") tests/bench/metering.sh\` (release build; $REPEAT rounds, medians)."
	echo "- Anomalies: $ANOMALIES, $ORGS orgs on the enterprise plan x 8 streams, shaped like the detector's (3 signals, an explanation with 2 evidence items, a 150-byte excerpt, every 10th a window anomaly)$([ "$REFERENCE_ONLY" = 1 ] || echo "; messages $MSG_AVG B on average")."
	echo "- Reference: the same rows into \`bench_anomalies\` (\`CREATE TABLE ... (LIKE anomalies INCLUDING ALL)\`: the same columns, checks and indexes; no foreign key, row-level security or counters), by COPY FROM STDIN and by parameterised multi-row INSERT ... ON CONFLICT DO NOTHING, $ROWS rows per statement and transaction, in the same round."
	if [ "$REFERENCE_ONLY" = 1 ]; then
		echo
		echo "| measurement | rows/s |"
		echo "|---|---|"
		echo "| plain COPY | $CP |"
		echo "| plain multi-row INSERT | $IN |"
		echo
		echo "The service half was not run: services/metering was not in the tree measured. Target for metering: at least 20,000 anomalies/s."
	else
		echo "- Service: \`driftlock-metering\` in a new consumer group per round, on tables emptied of the previous round (anomalies, usage counters, alerts, outbox; Redis flushed); timed from its first \"partitions assigned\" log record (used: $HOWS) until its /metrics (polled every 10 ms) show driftlock_metering_anomalies_total{result=\"stored\"} at $ANOMALIES; each round then checks that PostgreSQL holds $ANOMALIES anomalies and usage counters summing to $ANOMALIES."
		echo
		echo "| measurement | anomalies/s | metering / it | target |"
		echo "|---|---|---|---|"
		echo "| driftlock-metering (store + count + usage + commit) | $MT | | >= 20,000 |"
		echo "| plain COPY, same rows | $CP | $RC | |"
		echo "| plain multi-row INSERT, same rows | $IN | $RI | |"
	fi
	echo
	echo "Where a stored anomaly's time goes (PostgreSQL's per-statement times during a run, and why the 20,000/s target is out of reach on this machine): docs/operations.md, \"Metering throughput\"."
	echo
	echo "Runs (metering, COPY, INSERT in rows/s; start used): $(tr '\n' ';' <"$TMP/runs")"
	echo "<!-- metering:end -->"
} >"$TMP/section.md"

write_section "$OUT" metering "$TMP/section.md"
rm -rf "$TMP"
