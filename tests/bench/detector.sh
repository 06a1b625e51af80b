#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmarks driftlock-detector against a private real stack (Kafka, PostgreSQL, Redis) and writes
# the "Detector" section of docs/benchmarks.md (between its markers; tests/bench/run.sh keeps it).
#
# usage: tests/bench/detector.sh [BUILD_DIR]   (default build/bench, a release build)
# env:   REPEAT (default 3 runs of each throughput measurement; medians are reported),
#        EVENTS (200000 pre-filled events), LAT_SECONDS (15 s of steady load at each of two rates),
#        DRIFTLOCK_DATASETS (default ../shared/datasets beside the repository)
#
# Throughput: the topic is filled once with EVENTS envelopes (4 orgs x 4 labelled streams of
# datasets/streams, the lines' bytes as payloads), then each run starts fresh workers in a new
# consumer group (Redis emptied, so every stream calibrates from nothing as on first contact) and
# times them through their /metrics until driftlock_detector_events_total reaches EVENTS. Next
# to each run, the same events in the same order through one cbad_detector per stream in one
# process (bench_detector engine): the ratio says what the service costs around the engine.
# Latency: one worker that has caught up gets events at a steady rate below its capacity; each
# anomaly's append time minus its event's (Kafka CreateTime of both) gives p50 and p99.
# Benchmarks are not tests: infra/test.sh does not run this.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/bench/lib.sh
. "$SRC/tests/bench/lib.sh"
BUILD=${1:-"$SRC/build/bench"}
REPEAT=${REPEAT:-3}
EVENTS=${EVENTS:-200000}
LAT_SECONDS=${LAT_SECONDS:-15}
DATASETS=${DRIFTLOCK_DATASETS:-$(cd "$SRC/../shared/datasets" && pwd)}
RUN="$SRC/build/bench-run"
OUT="$SRC/docs/benchmarks.md"

if [ ! -f "$BUILD/build.ninja" ]; then
	meson setup "$BUILD" "$SRC" --buildtype=release >/dev/null
fi
nice meson compile -C "$BUILD" services/detector/driftlock-detector tests/bench/bench_detector >/dev/null

# A fresh private stack: the pre-filled topic must hold exactly this run's events.
"$SRC/infra/stack.sh" stop --run-dir "$RUN" >/dev/null 2>&1 || true
rm -rf "$RUN"
# Kafka's default wait for a new group's members (3 s, where the tests' stacks use 0): the two
# workers of a run join within it, so the first assignment already splits the partitions.
DRIFTLOCK_KAFKA_GROUP_INITIAL_DELAY_MS=3000 "$SRC/infra/stack.sh" start --run-dir "$RUN" >&2
PIDS=()
stop_workers() {
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	PIDS=()
}
stop_all() {
	stop_workers
	"$SRC/infra/stack.sh" stop --run-dir "$RUN" >/dev/null 2>&1 || true
}
trap stop_all EXIT
set -a
# shellcheck disable=SC1091
. "$RUN/stack.env"
set +a
"$SRC/infra/migrate.sh" >&2
# The orgs bench_detector writes events for (b0000000-...-0000000000NN, NN = 1..63) must exist:
# the detector dead-letters events of an unknown org.
psql -q -v ON_ERROR_STOP=1 "$DRIFTLOCK_PG_DSN_ADMIN" >/dev/null <<'SQL'
INSERT INTO organizations (id, name, plan)
SELECT format('b0000000-0000-4000-8000-%s', lpad(i::text, 12, '0'))::uuid, 'bench ' || i, 'enterprise'
  FROM generate_series(1, 63) AS i
ON CONFLICT (id) DO NOTHING;
SQL

B="$BUILD/tests/bench/bench_detector"
D="$BUILD/services/detector/driftlock-detector"
TMP=$(mktemp -d)
# Runs are timed
# from the first "partitions assigned" in the group's worker logs (when consuming can start) to
# the moment the watch sees driftlock_detector_events_total reach EVENTS.
# rate GROUP WATCH_OUTPUT: events/s of that run, and the seconds from its first assignment of
# partitions to its last (the group settling: a rebalance while a worker is busy waits for it).
rate() {
	python3 - "$RUN/logs" "$1" "$2" "$EVENTS" <<'PY'
import datetime, glob, json, sys
logs, group, watch, events = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
starts = []
for f in glob.glob(f"{logs}/detector-{group}-*.log"):
    for line in open(f):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("msg") == "partitions assigned" and r.get("count") != "0":
            starts.append(datetime.datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).timestamp())
w = json.load(open(watch))
done = w["done_ms"] / 1000
# events/s from the first assignment, how long after it the last one came (rebalances under
# way), and events/s from the first events processed to the last (the consumer's start left out,
# as the engine's timing leaves out its set-up)
first, n0 = w["first_ms"] / 1000, w["first_events"]
proc = (events - n0) / (done - first) if done > first and n0 < events else events / (done - min(starts))
print(round(events / (done - min(starts))), round(max(starts) - min(starts), 1), round(proc))
PY
}
# start_worker GROUP: one driftlock-detector in consumer group GROUP; its admin port in $PORT.
start_worker() {
	PORT=$(free_port)
	DRIFTLOCK_PG_DSN=$DRIFTLOCK_PG_DSN_DETECTOR DRIFTLOCK_ADMIN_PORT=$PORT \
		DRIFTLOCK_DETECTOR_GROUP=$1 DRIFTLOCK_LOG_LEVEL=info \
		"$D" 2>"$RUN/logs/detector-$1-${#PIDS[@]}.log" &
	PIDS+=($!)
}
# Empties the stack's Redis (the stream snapshots): redis://:PASSWORD@HOST:PORT/DB.
fresh_state() {
	local hp=${DRIFTLOCK_REDIS_URL##*@}
	REDISCLI_AUTH=$(python3 -c 'import sys, urllib.parse as u; print(u.unquote(u.urlparse(sys.argv[1]).password or ""))' "$DRIFTLOCK_REDIS_URL") \
		redis-cli -h "${hp%%:*}" -p "$(echo "${hp#*:}" | cut -d/ -f1)" FLUSHDB | grep -qx OK
}

echo "bench: filling driftlock.events.v1 with $EVENTS events" >&2
"$B" fill --brokers "$DRIFTLOCK_KAFKA_BROKERS" --dir "$DATASETS/streams" --events "$EVENTS" >"$TMP/fill"
ENV_AVG=$(field "$TMP/fill" envelope_bytes_avg)
PAY_AVG=$(field "$TMP/fill" payload_bytes_avg)
NSTREAMS=$(field "$TMP/fill" streams)

STAMP=$(date +%s)
# A warm-up round, not counted: in three runs of this script the first round's ratio was the
# lowest each time (0.50, 0.51, 0.55 against 0.62-0.73 for the later ones): the broker's first
# read of the whole topic and its JIT serving fetches for the first time.
echo "bench: warm-up round (not counted)" >&2
fresh_state
start_worker "bench-$STAMP-warmup"
"$B" watch --ports "$PORT" --events "$EVENTS" --seconds 600 >/dev/null
stop_workers
"$B" engine --dir "$DATASETS/streams" --events "$EVENTS" >/dev/null
for i in $(seq 1 "$REPEAT"); do
	echo "bench: detector round $i/$REPEAT" >&2
	"$B" engine --dir "$DATASETS/streams" --events "$EVENTS" >"$TMP/e$i"
	fresh_state
	start_worker "bench-$STAMP-1w-$i"
	P1=$PORT
	"$B" watch --ports "$P1" --events "$EVENTS" --seconds 600 >"$TMP/w1_$i"
	stop_workers
	fresh_state
	start_worker "bench-$STAMP-2w-$i"
	P1=$PORT
	start_worker "bench-$STAMP-2w-$i"
	P2=$PORT
	"$B" watch --ports "$P1,$P2" --events "$EVENTS" --seconds 600 >"$TMP/w2_$i"
	stop_workers
	# The engine again after the workers: the round's reference is the mean of both, so a
	# change of the machine's load during the round weighs on both sides alike.
	"$B" engine --dir "$DATASETS/streams" --events "$EVENTS" >"$TMP/e${i}b"
	read -r A1W _ R1W <<<"$(rate "bench-$STAMP-1w-$i" "$TMP/w1_$i")"
	read -r A2W SETTLE R2W <<<"$(rate "bench-$STAMP-2w-$i" "$TMP/w2_$i")"
	ENG=$(awk -v a="$(field "$TMP/e$i" events_per_s)" -v b="$(field "$TMP/e${i}b" events_per_s)" 'BEGIN {printf "%d", (a + b) / 2}')
	echo "$R1W $ENG $R2W $(field "$TMP/w1_$i" seconds_from_start) $(field "$TMP/w2_$i" seconds_from_start) $SETTLE $A1W $A2W" >>"$TMP/runs"
done
W1=$(cut -d' ' -f1 "$TMP/runs" | median)
EN=$(cut -d' ' -f2 "$TMP/runs" | median)
W2=$(cut -d' ' -f3 "$TMP/runs" | median)
R1=$(awk -v a="$W1" -v b="$EN" 'BEGIN {printf "%.2f", a / b}')
R2=$(awk -v a="$W2" -v b="$EN" 'BEGIN {printf "%.2f", a / b}')
S21=$(awk -v a="$W2" -v b="$W1" 'BEGIN {printf "%.2f", a / b}')
# Each round's own ratio (worker against that round's engine), and their median.
PAIRED=$(awk '{printf "%.2f\n", $1 / $2}' "$TMP/runs")
PR1=$(echo "$PAIRED" | median)
PR1=$(awk -v a="$PR1" 'BEGIN {printf "%.2f", a}')
SETTLE=$(cut -d' ' -f6 "$TMP/runs" | median)
A1=$(cut -d' ' -f7 "$TMP/runs" | median)
A2=$(cut -d' ' -f8 "$TMP/runs" | median)

# Latency: one worker catches up on the pre-filled topic (its streams are past calibration),
# then events continue from the next lines at a fixed rate below its capacity: first a light
# load (a twentieth of the one-worker rate, at most 2,000 events/s), then a quarter of it (at
# most 10,000 events/s), LAT_SECONDS each.
LOW=$(awk -v a="$W1" 'BEGIN {r = int(a / 20 / 100) * 100; if (r > 2000) r = 2000; if (r < 100) r = 100; print r}')
HIGH=$(awk -v a="$W1" 'BEGIN {r = int(a / 4 / 100) * 100; if (r > 10000) r = 10000; if (r < 100) r = 100; print r}')
FROM=$(( (EVENTS + NSTREAMS - 1) / NSTREAMS ))
fresh_state
start_worker "bench-$STAMP-lat"
P1=$PORT
"$B" watch --ports "$P1" --events "$EVENTS" --seconds 600 >/dev/null
for RATE in $LOW $HIGH; do
	echo "bench: latency at $RATE events/s for $LAT_SECONDS s" >&2
	"$B" latency --brokers "$DRIFTLOCK_KAFKA_BROKERS" --dir "$DATASETS/streams" --from "$FROM" \
		--rate "$RATE" --seconds "$LAT_SECONDS" --inject 100 --wait 10 >"$TMP/lat$RATE"
	FROM=$((FROM + (RATE * LAT_SECONDS + NSTREAMS - 1) / NSTREAMS))
	python3 - "$TMP/lat$RATE" <<'PY' >>"$TMP/latrows"
import json, sys
d = json.load(open(sys.argv[1]))
print(f"| {d['rate']:.0f} events/s | {d['events']} ({d['injected']} random) | {d['anomalies']} | "
      f"{d['p50_ms']} ms | {d['p99_ms']} ms | {d['max_ms']} ms | {d['over_100ms']} |")
PY
done
stop_workers

CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
{
	echo "<!-- detector:begin (written by tests/bench/detector.sh; do not edit by hand) -->"
	echo "## Detector: driftlock.events.v1 to driftlock.anomalies.v1"
	echo
	echo "- Date: $(date -u +%Y-%m-%dT%H:%M:%SZ); source $(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo unknown)"
	echo "- Machine: $(nproc) CPUs online, ${CPU:-unknown CPU}: the broker (one JVM), PostgreSQL, Redis, the workers and the load tools share them; nothing is pinned."
	echo "- Command: \`REPEAT=$REPEAT tests/bench/detector.sh\` (release build; a warm-up round of one worker and the engine, not counted, then $REPEAT runs of each throughput measurement, medians; default worker settings)."
	echo "- Events: $EVENTS envelopes pre-filled on the topic ($((EVENTS / NSTREAMS)) per stream, $NSTREAMS streams: 4 orgs x web-access, audit-log, orders-app, payments of datasets/streams, the lines in order, the line's ts as event time); envelopes $ENV_AVG B on average around payloads of $PAY_AVG B."
	echo "- Workers: \`driftlock-detector\` in a new consumer group per run, Redis emptied before each run (every stream calibrates from nothing); their /metrics polled every 10 ms. The rate is timed from the first poll that sees events processed to the one that sees driftlock_detector_events_total at $EVENTS (the events processed before that first poll are left out of the count), as the engine's own timing starts after its set-up; the rate timed from the first \"partitions assigned\" in the workers' logs (consumer start included: offset look-up, first fetch, first settings look-ups) is in the last column. Each run's time from the workers' start (group join included) is in the runs line."
	echo "- Reference: \`bench_detector engine\`, the same events in the same order through one cbad_detector per stream in one process (cbad_detector_process, then cbad_detector_idle when it has work), run before and after the workers in each round; the round's reference is the mean of the two."
	echo
	echo "| measurement | detector | CBAD engine alone | ratio | target | detector, from assignment |"
	echo "|---|---|---|---|---|---|"
	echo "| one worker | $W1 events/s | $EN events/s | $R1 | >= 0.6 | $A1 events/s |"
	echo "| two workers, same group | $W2 events/s | $EN events/s | $R2 | | $A2 events/s |"
	echo
	echo "Ratios above are median against median. Each round's own ratio (one worker against that round's engine): $(echo "$PAIRED" | tr '\n' ' ')- median $PR1."
	echo
	echo "Two workers against one: x$S21. The topic has 6 partitions; the two workers start together in a new group and join it within the broker's group.initial.rebalance.delay.ms (3000 ms, Kafka's default, set for this benchmark's broker), so the first assignment splits the partitions 3 + 3; the group took $SETTLE s (median) from the first assignment to the last. On this machine the workers also share its $(nproc) CPUs with the broker, so a second worker has little CPU the first did not already use."
	echo
	echo "Latency from an event's append to its anomaly's append: the event's and the anomaly's Kafka CreateTime, both set by their producers on this machine's clock (the load's producer is connected before its first event). One worker that had caught up on the pre-filled topic (its streams past calibration) gets events continuing the same streams at a steady rate (open loop) for $LAT_SECONDS s each, every 100th with a random 200-character payload so that there are anomalies enough for a p99; default DRIFTLOCK_DETECTOR_LINGER (5 ms, the anomaly producer) and DRIFTLOCK_DETECTOR_BATCH (256)."
	echo
	echo "| offered load | events sent | anomalies | p50 | p99 | max | over 100 ms |"
	echo "|---|---|---|---|---|---|---|"
	cat "$TMP/latrows"
	echo
	echo "Runs (one worker, engine, two workers in events/s; one worker and two workers in seconds from their start, group join included; two workers' settling in s; one and two workers in events/s from assignment): $(tr '\n' ';' <"$TMP/runs")"
	echo "<!-- detector:end -->"
} >"$TMP/section.md"

write_section "$OUT" detector "$TMP/section.md"
rm -rf "$TMP"
