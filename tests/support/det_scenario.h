/* SPDX-License-Identifier: Apache-2.0 */
/* det_scenario: a labeled stream of $DRIFTLOCK_DATASETS/streams (default ../shared/datasets beside
 * the source tree) for the detector's suites: its lines, times and labels, what CBAD alone finds
 * on it, and its events as ingest's envelopes. Every helper fails the running Check test when
 * something is missing. */
#ifndef DL_TESTS_SUPPORT_DET_SCENARIO_H
#define DL_TESTS_SUPPORT_DET_SCENARIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

void det_scenario_free(det_scenario *sc);

#endif /* DL_TESTS_SUPPORT_DET_SCENARIO_H */
