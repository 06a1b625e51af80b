/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_entity: each entity's own history (values, hours, rate) for one entity field, bounded (internal to cbad). */
#ifndef DL_CBAD_ENTITY_H
#define DL_CBAD_ENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "services/detector/cbad/cbad_ser.h"

/*
 * One table per entity field ("host", "user"). Entities live in sets of CBAD_ENTITY_WAYS
 * slots chosen by the hash of the entity's value; a new entity takes a free slot of its set or
 * evicts the set's least recently seen entity, so memory never exceeds max_entities entities
 * (rounded up to a whole set) and no event costs more than a scan of one set. The slab of
 * entities grows by doubling as entities appear, so a stream with 20 hosts holds 20 entities.
 *
 * Per entity: 80 bytes (key, last seen, rate shares, 24 hour-of-day counts of active days and
 * the current day's active hours; its label is not
 * kept, signals are about the current event's entity) plus 64 bytes per value field it models
 * (at most CBAD_ENTITY_MAX_VALUES: its value model and its long-run level). Calibration is pooled
 * over the entities of the table: an entity's statistic is its own (its value against its own
 * history), its p-value is that statistic's rank among every entity's recent statistics.
 */

#define CBAD_ENTITY_WAYS 8
#define CBAD_ENTITY_MAX_VALUES 4 /* value fields judged per entity (the first four) */
#define CBAD_ENTITY_LABEL_MAX 32
#define CBAD_ENTITY_RATE_SHORT 128 /* events: window of an entity's burst test */
#define CBAD_ENTITY_RATE_BEFORE 2048 /* events: a burst is judged against the share before these */
#define CBAD_ENTITY_MIN_OWN 16     /* an entity's own values needed before it is judged */
#define CBAD_ENTITY_MIN_DAYS 2     /* an entity's earlier active days needed before its hours are judged */
#define CBAD_ENTITY_LEVEL_MEMORY 256 /* own values an entity's long-run level remembers */

typedef struct cbad_entity cbad_entity;

typedef enum cbad_entity_what {
	CBAD_ENTITY_SPIKE = 0, /* a value far from the entity's own usual values */
	CBAD_ENTITY_SHIFT,     /* the entity's recent mean moved from its usual level */
	CBAD_ENTITY_FLAT,      /* the entity repeats the same value far longer than usual */
	CBAD_ENTITY_RATE,      /* the entity's share of the stream's events bursts */
	CBAD_ENTITY_HOUR,      /* the entity acts at an hour of day it rarely acts at */
	CBAD_ENTITY_LEVEL,     /* the entity's values step away from its long-run level and stay:
				* p is calibrated on its own, not for the entity kind (see
				* docs/algorithm.md, "Entities") */
} cbad_entity_what;

typedef struct cbad_entity_signal {
	cbad_entity_what what;
	uint32_t value_index; /* SPIKE, SHIFT, FLAT, LEVEL: which value */
	double stat, p_value;
	double value; /* the value, the count in the window, the hour */
	uint32_t run; /* FLAT: the run length */
	/* HOUR: the smallest p-value the test could give this entity now (at its least usual
	 * hour): an entity active around the clock can never be strange (its test is left out
	 * of the event's Bonferroni count, Tarone's rule); 0 for the other tests */
	double p_min;
	double base_low, base_median, base_high;
} cbad_entity_signal;

/* A table for up to max_entities entities with nvalues (<= CBAD_ENTITY_MAX_VALUES) value
 * fields each. Returns 0, -EINVAL or -ENOMEM; *ret untouched on failure. */
int cbad_entity_new(uint32_t max_entities, size_t nvalues, cbad_entity **ret);

/* One event of the entity whose value hashes to key (label: its text, for explanations; not
 * stored beyond CBAD_ENTITY_LABEL_MAX - 1 bytes). values[nvalues]: the event's value fields,
 * NAN when absent. hour_index: the event's UTC hours since the epoch (its hour of day is
 * hour_index % 24, its day hour_index / 24), or -1 when unknown; judge_hour: whether
 * the stream's history covers enough days for hours to be judged (they are learned anyway). now: the stream's
 * event index. Judges, then learns when learn, and writes at most max signals (every test it
 * could make, weak ones included, in no particular order) into out; returns how many. A new
 * entity that cannot be stored (slab growth failed) is judged but not learned. No allocation
 * unless the slab grows. */
size_t cbad_entity_observe(cbad_entity *e, uint64_t key, const char *label, size_t label_len,
			   const double *values, int64_t hour_index, bool judge_hour, uint64_t now,
			   bool learn, cbad_entity_signal *out, size_t max);

/* Makes e judge and learn its entities' values only (spike and step: no rate, hour or
 * flatline tests, none of their learning): for contexts, whose share of events and runs say
 * nothing about who acts. Call once, right after cbad_entity_new(). */
void cbad_entity_set_values_only(cbad_entity *e);

/* Which value fields (bit v for values[v]) get the long-run level test from the next
 * cbad_entity_observe() on (default: all). A field whose values are codes (a status) has no
 * level: any other code is an infinite z. */
void cbad_entity_set_level_mask(cbad_entity *e, uint32_t mask);

/* The label of the entity last observed (valid until the next call). */
const char *cbad_entity_last_label(const cbad_entity *e);

size_t cbad_entity_count(const cbad_entity *e);
size_t cbad_entity_memory(const cbad_entity *e);
void cbad_entity_save(const cbad_entity *e, cbad_writer *w);
/* Into a table created with the same max_entities and nvalues; 0 or -EINVAL/-ENOMEM. */
int cbad_entity_load(cbad_entity *e, cbad_reader *r);
void cbad_entity_free(cbad_entity *e);

#endif /* DL_CBAD_ENTITY_H */
