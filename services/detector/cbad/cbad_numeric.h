/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_numeric: the values, entity and rate channels of the detector behind one interface (internal to cbad). */
#ifndef DL_CBAD_NUMERIC_H
#define DL_CBAD_NUMERIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "services/detector/cbad/cbad.h"
#include "services/detector/cbad/cbad_ser.h"
#include "services/detector/cbad/cbad_signal.h"

typedef struct cbad_numeric cbad_numeric;

/* What the detector tells the numeric channels about one event. */
typedef struct cbad_event_view {
	const char *raw;      /* the event's bytes (JSON object, or a plain line: then no fields) */
	size_t len;
	int64_t ts_ms;        /* event time */
	uint64_t template_id; /* hash of the event's masked structure: same template = same kind of
				 event (0 when unknown) */
} cbad_event_view;

/* Creates the channels for settings s (copied: value_fields, entity_fields, max_entities,
 * baseline_events, seed). Returns 0, or -ENOMEM / -EINVAL with text; *ret untouched then. */
int cbad_numeric_new(const cbad_settings *s, cbad_numeric **ret, char *errbuf, size_t errlen);

/* Judges ev against what was learned so far, then (if learn) learns it. The event is counted
 * in the rate windows (kinds, identifiers, entities) either way: a burst of events the detector
 * does not learn because they are strange must still add up. Writes at most max
 * signals into out, strongest (lowest p_value) first, and returns how many. Only the first
 * (strongest) carries a detail sentence, when its p_value < 0.01; the others' detail is
 * empty. Signals whose channel has not seen enough history yet are not reported.
 * Deterministic. */
size_t cbad_numeric_observe(cbad_numeric *n, const cbad_event_view *ev, bool learn,
			    cbad_chan_signal *out, size_t max);

/* The number of tests (p-values) the last cbad_numeric_observe() made. The p-values it
 * returns are already corrected for them within each kind (value, entity, rate): the two
 * smallest p-values of a kind are combined and calibrated over the kind's recent events. */
size_t cbad_numeric_last_tests(const cbad_numeric *n);

/* Bytes held now (bounded by the settings; documented in docs/algorithm.md). */
size_t cbad_numeric_memory(const cbad_numeric *n);

/* The entity fields in use: configured ones, or those the documented heuristic chose from the
 * first events when none were configured (0 until it decided). */
size_t cbad_numeric_entity_fields(const cbad_numeric *n, char out[][CBAD_FIELD_NAME_MAX],
				  size_t max);

/* State: save appends to w; load reads into n, freshly created with the same settings, and
 * returns 0 or -EINVAL when the state is corrupt (r->failed or a bound exceeded). */
void cbad_numeric_save(const cbad_numeric *n, cbad_writer *w);
int cbad_numeric_load(cbad_numeric *n, cbad_reader *r);

void cbad_numeric_free(cbad_numeric *n);

#endif /* DL_CBAD_NUMERIC_H */
