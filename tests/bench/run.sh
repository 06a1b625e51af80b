#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Runs the CBAD benchmarks (throughput, latency, memory, detection quality) and writes docs/benchmarks.md.
#
# usage: tests/bench/run.sh [BUILD_DIR]     (default build/bench, set up as a release build)
# env:   DRIFTLOCK_DATASETS (default ../shared/datasets beside the repository), REPEAT (default 5)
set -eu

SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-"$SRC/build/bench"}
DATASETS=${DRIFTLOCK_DATASETS:-$(cd "$SRC/../shared/datasets" && pwd)}
REPEAT=${REPEAT:-5}
OUT="$SRC/docs/benchmarks.md"
export DRIFTLOCK_DATASETS="$DATASETS"

if [ ! -f "$BUILD/build.ninja" ]; then
	meson setup "$BUILD" "$SRC" --buildtype=release >/dev/null
fi
nice meson compile -C "$BUILD" tests/bench/bench_throughput tests/bench/bench_quality \
	services/detector/scan/driftlock-scan >/dev/null

# One core: the engine is single-threaded per stream and the target is per core.
PIN=""
if command -v taskset >/dev/null 2>&1 && taskset -c 1 true 2>/dev/null; then
	PIN="taskset -c 1"
fi

TP_CMD="$PIN $BUILD/tests/bench/bench_throughput --repeat $REPEAT --real $DATASETS/streams/web-access.ndjson.gz --markdown"
Q_CMD="$PIN $BUILD/tests/bench/bench_quality"
# The commands as written into the document: relative to the repository's root.
TP_DOC=$(printf '%s' "$TP_CMD" | sed -e "s#$SRC/##g" -e "s#$(dirname "$SRC")/shared/#../shared/#g")
Q_DOC=$(printf '%s' "$Q_CMD" | sed "s#$SRC/##g")
Q1_CMD="$PIN $BUILD/tests/bench/bench_quality --nab-reference"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "bench: throughput ..." >&2
$TP_CMD >"$TMP/tp.md"
echo "bench: quality ..." >&2
$Q_CMD >"$TMP/q.txt"
$Q1_CMD >"$TMP/q1.txt"

CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
{
	cat <<HDR
# CBAD benchmarks

Written by \`tests/bench/run.sh\` (do not edit by hand; re-run it). Honest numbers from one run.

- Date: $(date -u +%Y-%m-%dT%H:%M:%SZ)
- Machine: $(nproc) CPUs online, ${CPU:-unknown CPU}; $(uname -sr)
- Build: \`${BUILD#"$SRC"/}\` ($(meson introspect --buildoptions "$BUILD" 2>/dev/null | tr ',' '\n' | grep -A3 '"name": "buildtype"' | sed -n 's/.*"value": "\(.*\)".*/\1/p' | head -1)), pinned with \`${PIN:-no taskset}\`
- Source: $(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo unknown) plus the working tree at the time of the run

## driftlock-scan

\`driftlock-scan\` (services/detector/scan) runs the engine over files or stdin and is how these
numbers can be reproduced from the command line on any NDJSON or log file:

\`\`\`
driftlock-scan [--sensitivity X] [--baseline N] [--window N] [--hop N] [--level N] [--mask LIST]
               [--entity FIELD]... [--value FIELD]... [--settings JSON] [--stream NAME]
               [--format ndjson|text] [--scores] [--max-line-bytes N] [FILE|-]...
\`\`\`

- Input: NDJSON objects or plain log lines (a line starting with \`{\` is JSON), plain or gzip.
  A bad line (invalid JSON, invalid \`ts\`, longer than --max-line-bytes, default 1 MiB) is
  reported on stderr as \`FILE:line N: ...\` and skipped; the scan never stops for it.
- Time: the \`ts\` field (RFC 3339 or epoch ms); without it, the line's position over all
  inputs as milliseconds. Streams: one detector per \`stream\` field value (at most 4096), or
  all input as one stream with --stream.
- Output: anomalies as NDJSON (line, stream, ts, kind, score, p_value, severity, signal, value,
  baseline range, summary, evidence, excerpt, window, entity), or a table with --format text;
  --scores prints one \`{"line":N,"score":S,"p_value":P,"anomaly":B}\` per input line instead.
- A progress bar on stderr when stderr is a terminal. Exit status 0 done, 1 an input could not
  be read, 2 usage. \`driftlock-scan --help\` has the details.

## Throughput, latency, memory

\`\`\`
$TP_DOC
\`\`\`

Per-event scoring (\`cbad_detector_process\`, then \`cbad_detector_idle\`: the deferred dictionary
builds are counted) of one detector at default settings on one core, after
an untimed warm-up of 2 x baseline_events; next to \`ZSTD_compressCCtx\` of the same event bytes at
the engine's default level in the same run; medians of $REPEAT repetitions. Latency is measured
with \`clock_gettime\` around each \`cbad_detector_process\` call: p50/p99 on a second detector
whose \`cbad_detector_idle\` runs between events (untimed), "inline" on a third that never calls it
(the builds inside process()). Memory is
\`cbad_status.memory_bytes\` at the end of the run; saved state is the size of
\`cbad_detector_save\`'s output. Target: >= 250,000 events/s on ~200-byte JSON events.

$(cat "$TMP/tp.md")

## Detection quality: datasets/streams and NAB

\`\`\`
$Q_DOC
\`\`\`

Per stream, at default settings, scored exactly as \`datasets/streams/README.md\` ("Scoring a
detector") says: P, R, F1 at the detector's own decisions; best F1 over every distinct score
value (with its threshold; an upper bound chosen with the labels); PR-AUC (step-wise average
precision); episodes detected / episodes (200-line rule) and the median and maximum time to detect
in events; events/s of the whole run (one core). Under each stream: recall and episodes per
anomaly kind, and the detector's flags split by its own kind of anomaly into true and false
positives. Targets: mean F1 at default sensitivity >= 0.8.

NAB: each CSV row is fed as the event \`{"value":<value as written>}\` at the row's timestamp
(UTC), one detector per file, the engine's \`score\` as NAB's anomaly score; scored with NAB's
rules as \`datasets/nab/README.md\` describes them (probationary period, scaled sigmoid,
earliest detection per window, one corpus threshold searched over every distinct score). Per
group: the raw score at the corpus' standard threshold, windows detected, false-positive rows,
and the group's own normalised score (no normalisation exists for a group without windows: its
raw score is the cost of its false positives). Target: standard score >= 60.

\`\`\`
$(cat "$TMP/q.txt")
\`\`\`

### Self-check of the NAB scorer

The README's reference detector (1.0 at the middle row of every window, 0.5 on every 50th row)
must score 93.09 / 93.09 / 95.39 with raw 47.3936; \`tests/unit/test_bench_scoring.c\` checks the
README's single-file example (-0.337336 / -0.651778 / -1.337336).

\`\`\`
$(printf '%s' "$Q1_CMD" | sed "s#$SRC/##g")
$(cat "$TMP/q1.txt")
\`\`\`
HDR
} >"$OUT.tmp"
# Keep the sections tests/bench/ingest.sh, detector.sh and metering.sh write (they need a running
# stack, this script does not).
for sec in ingest detector metering; do
	if [ -f "$OUT" ] && grep -q "<!-- $sec:begin" "$OUT"; then
		printf '\n' >>"$OUT.tmp"
		sed -n "/<!-- $sec:begin/,/<!-- $sec:end -->/p" "$OUT" >>"$OUT.tmp"
	fi
done
mv "$OUT.tmp" "$OUT"
echo "bench: wrote $OUT" >&2
