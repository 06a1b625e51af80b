#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmarks driftlock-ingest against a private real stack (Kafka, PostgreSQL, Redis) and writes
# the "Ingest" section of docs/benchmarks.md (between its markers; tests/bench/run.sh keeps it).
#
# usage: tests/bench/ingest.sh [BUILD_DIR]   (default build/bench, a release build)
# env:   REPEAT (default 3 runs of each measurement; medians are reported), SECONDS_EACH (8)
#
# Each HTTP measurement is paired, in the same run, with a plain librdkafka producer sending the
# same events (same envelope size, idempotent, acks=all) to the same broker with the same number
# of events waiting for acknowledgement at once, so the ratio says what the HTTP layer costs.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/bench/lib.sh
. "$SRC/tests/bench/lib.sh"
BUILD=${1:-"$SRC/build/bench"}
REPEAT=${REPEAT:-3}
EACH=${SECONDS_EACH:-8}
RUN="$SRC/build/bench-run"
OUT="$SRC/docs/benchmarks.md"

if [ ! -f "$BUILD/build.ninja" ]; then
	meson setup "$BUILD" "$SRC" --buildtype=release >/dev/null
fi
nice meson compile -C "$BUILD" services/ingest/driftlock-ingest services/ingest/driftlock-admin \
	tests/bench/bench_ingest >/dev/null

"$SRC/infra/stack.sh" start --run-dir "$RUN" >&2
stop_all() {
	[ -z "${INGEST_PID:-}" ] || kill -TERM "$INGEST_PID" 2>/dev/null || true
	wait 2>/dev/null || true
	"$SRC/infra/stack.sh" stop --run-dir "$RUN" >/dev/null 2>&1 || true
}
trap stop_all EXIT
set -a
# shellcheck disable=SC1091
. "$RUN/stack.env"
set +a
"$SRC/infra/migrate.sh" >&2

# A plan whose rate limits are above what this machine can send, so the benchmark measures the
# path, not the limiter (the limiter's own Redis calls still run: one lease per 100 ms).
psql -q -v ON_ERROR_STOP=1 "$DRIFTLOCK_PG_DSN_ADMIN" <<'SQL' >/dev/null
INSERT INTO plans (code, display_name, price_cents_month, included_anomalies, overage_allowed,
                   overage_microusd, retention_days, ingest_events_per_second, ingest_burst,
                   max_streams, sort_order)
VALUES ('bench', 'Benchmark', 0, 1000000, false, 0, 1, 100000000, 1000000000, NULL, 99)
ON CONFLICT (code) DO NOTHING;
SQL
ADMIN="$BUILD/services/ingest/driftlock-admin"
ORG=$("$ADMIN" --json org create --name "bench $(date +%s)" --plan bench |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
KEY=$("$ADMIN" --json key create --org "$ORG" --name bench |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
APORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DRIFTLOCK_PG_DSN=$DRIFTLOCK_PG_DSN_INGEST DRIFTLOCK_INGEST_PORT=$PORT DRIFTLOCK_ADMIN_PORT=$APORT \
	DRIFTLOCK_LOG_LEVEL=warn "$BUILD/services/ingest/driftlock-ingest" 2>"$RUN/logs/ingest-bench.log" &
INGEST_PID=$!
for _ in $(seq 1 300); do
	curl -fs "http://127.0.0.1:$APORT/readyz" >/dev/null 2>&1 && break
	sleep 0.2
done
curl -fs "http://127.0.0.1:$APORT/readyz" >/dev/null || { echo "ingest not ready" >&2; exit 1; }

B="$BUILD/tests/bench/bench_ingest"
TMP=$(mktemp -d)

SINGLE_CONNS=128
BATCH_CONNS=8
# Warm-up: connections, the producer's idempotence id, partition leaders.
"$B" --mode single --port "$PORT" --key "$KEY" --conns 16 --seconds 2 >/dev/null
for i in $(seq 1 "$REPEAT"); do
	echo "bench: ingest round $i/$REPEAT" >&2
	"$B" --mode kafka --brokers "$DRIFTLOCK_KAFKA_BROKERS" --conns $SINGLE_CONNS --batch 1 --seconds "$EACH" >"$TMP/ks$i" 2>/dev/null
	"$B" --mode single --port "$PORT" --key "$KEY" --conns $SINGLE_CONNS --seconds "$EACH" >"$TMP/hs$i"
	"$B" --mode kafka --brokers "$DRIFTLOCK_KAFKA_BROKERS" --conns $BATCH_CONNS --batch 1000 --seconds "$EACH" >"$TMP/kb$i" 2>/dev/null
	"$B" --mode batch --port "$PORT" --key "$KEY" --conns $BATCH_CONNS --batch 1000 --seconds "$EACH" >"$TMP/hb$i"
	# The HTTP layer's own ceiling: a request refused at once (a malformed key: 401 before any
	# database, Redis or Kafka work), same client and connections.
	"$B" --mode single --port "$PORT" --key x --conns $SINGLE_CONNS --seconds "$EACH" >"$TMP/floor$i" || true
	python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(round(d['requests_other']/d['seconds']))" "$TMP/floor$i" >>"$TMP/floor"
	echo "$(field "$TMP/hs$i" requests_per_s) $(field "$TMP/ks$i" events_per_s)" >>"$TMP/single"
	echo "$(field "$TMP/hb$i" events_per_s) $(field "$TMP/kb$i" events_per_s)" >>"$TMP/batch"
done
FLOOR=$(median <"$TMP/floor")
HS=$(cut -d' ' -f1 "$TMP/single" | median)
KS=$(cut -d' ' -f2 "$TMP/single" | median)
HB=$(cut -d' ' -f1 "$TMP/batch" | median)
KB=$(cut -d' ' -f2 "$TMP/batch" | median)
RS=$(awk -v a="$HS" -v b="$KS" 'BEGIN {printf "%.2f", a / b}')
RB=$(awk -v a="$HB" -v b="$KB" 'BEGIN {printf "%.2f", a / b}')
HALF=$(awk -v a="$HS" 'BEGIN {printf "%d", a / 2}')
for i in $(seq 1 "$REPEAT"); do
	"$B" --mode rate --rate "$HALF" --port "$PORT" --key "$KEY" --conns $SINGLE_CONNS --seconds "$EACH" >"$TMP/hr$i"
	echo "$(field "$TMP/hr$i" p50_us) $(field "$TMP/hr$i" p99_us) $(field "$TMP/hr$i" requests_per_s)" >>"$TMP/rate"
done
P50=$(cut -d' ' -f1 "$TMP/rate" | median)
P99=$(cut -d' ' -f2 "$TMP/rate" | median)
RR=$(cut -d' ' -f3 "$TMP/rate" | median)
ERRORS=$(cat "$TMP"/hs* "$TMP"/hb* "$TMP"/hr* | python3 -c 'import json,sys; print(sum(json.loads(l)["requests_other"] for l in sys.stdin if l.strip()))')

CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
{
	echo "<!-- ingest:begin (written by tests/bench/ingest.sh; do not edit by hand) -->"
	echo "## Ingest: POST /v1/events into Kafka"
	echo
	echo "- Date: $(date -u +%Y-%m-%dT%H:%M:%SZ); source $(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo unknown)"
	echo "- Machine: $(nproc) CPUs online, ${CPU:-unknown CPU}: the broker (one JVM), ingest, PostgreSQL, Redis and the load generator share them."
	echo "- Command: \`tests/bench/ingest.sh\` (release build; ${REPEAT} runs of ${EACH} s each, medians). Events ~200 B JSON; every request is answered only after Kafka acknowledged its events (acks=all, idempotent)."
	echo "- Reference: \`bench_ingest --mode kafka\`, a plain librdkafka producer sending envelopes of the same size to the same topic with as many events waiting for acknowledgement at once as the HTTP run has (connections x events per request), measured in the same run."
	echo
	echo "| measurement | ingest (HTTP) | plain librdkafka | ratio | target |"
	echo "|---|---|---|---|---|"
	echo "| single-event requests, $SINGLE_CONNS keep-alive connections | $HS requests/s | $KS events/s | $RS | 30,000 requests/s |"
	echo "| NDJSON batches of 1,000 events, $BATCH_CONNS connections | $HB events/s | $KB events/s | $RB | 300,000 events/s |"
	echo
	echo "The HTTP layer alone (libevent's evhttp with dl_http's routing, limits, request ids and security headers; a request with a malformed key answered 401 before any other work), same client and connections: $FLOOR requests/s. Everything a single-event request does beyond that (key cache, rate limit, parsing, the envelope, librdkafka's produce and delivery report, the reply after the acknowledgement) is the difference."
	echo
	echo "Latency of a single-event request at half the measured peak ($HALF requests/s offered, $RR served; open loop, measured from each request's scheduled send time): p50 ${P50} µs, p99 ${P99} µs. Non-202 answers in all runs: $ERRORS."
	echo
	echo "Runs (requests/s or events/s, then the reference): single $(tr '\n' ';' <"$TMP/single") batch $(tr '\n' ';' <"$TMP/batch")"
	echo "<!-- ingest:end -->"
} >"$TMP/section.md"

write_section "$OUT" ingest "$TMP/section.md"
rm -rf "$TMP"
