/* SPDX-License-Identifier: Apache-2.0 */
/* det_scenario: a labeled stream from tests/data/streams (a slice of ../shared/datasets, see
 * tests/data/README.md) for the detector's suites: its lines, times and labels, what CBAD alone finds
 * on it, and its events as ingest's envelopes. Every helper fails the running Check test when
 * something is missing. */
#ifndef DL_TESTS_SUPPORT_DET_SCENARIO_H
#define DL_TESTS_SUPPORT_DET_SCENARIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/dl_kafka.h"

typedef struct det_scenario {
	char **lines; /* NUL-terminated, without the newline */
	size_t *lens;
	int64_t *ts;  /* the line's "ts" in epoch milliseconds */
	bool *label;  /* true at the lines labeled anomalous */
	size_t n;
} det_scenario;

/* Loads the first n lines of <name>.ndjson.gz and <name>.labels.csv. */
void det_scenario_load(det_scenario *sc, const char *name, size_t n);

/* Runs CBAD with the default settings over every line: a malloc'd array, true at the lines it
 * calls anomalies; *ret_count is how many. */
bool *det_scenario_expected(const det_scenario *sc, size_t *ret_count);

/* Line i as a driftlock.event.v1 envelope of org and stream with event id "ev-<i>" and the
 * line's bytes as payload (malloc'd JSON, *ret_len bytes). */
char *det_scenario_envelope(const det_scenario *sc, size_t i, const char *org, const char *stream,
			    size_t *ret_len);

/* Produces lines [from, to) as envelopes of (org, stream) to driftlock.events.v1, keyed
 * org:stream, and waits until Kafka acknowledged them. */
void det_scenario_produce(dl_kafka_producer *prod, const det_scenario *sc, const char *org,
			  const char *stream, size_t from, size_t to);

/* Reads the org's anomalies: every one decodes, names an event "ev-<line>" of the scenario's n
 * lines and has a UUID-shaped id; sets seen[line] and returns how many messages there were
 * (duplicates included). */
size_t det_scenario_read_anomalies(const char *org, size_t want, int timeout_ms, bool *seen,
				   size_t n);

void det_scenario_free(det_scenario *sc);

#endif /* DL_TESTS_SUPPORT_DET_SCENARIO_H */
