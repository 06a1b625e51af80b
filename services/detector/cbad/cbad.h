/* SPDX-License-Identifier: Apache-2.0 */
/* cbad: the compression-based anomaly detector of one stream; pure computation, no I/O. */
#ifndef DL_CBAD_H
#define DL_CBAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CBAD_VERSION "cbad-1"

#define CBAD_MAX_ENTITY_FIELDS 4
#define CBAD_MAX_VALUE_FIELDS 16
#define CBAD_FIELD_NAME_MAX 64
#define CBAD_SUMMARY_MAX 1024
#define CBAD_EXCERPT_MAX 1024
#define CBAD_MAX_EVIDENCE 8
#define CBAD_MAX_SIGNALS 16

/* Masking rules for the structure channel (bit set = mask that kind of token). */
enum {
	CBAD_MASK_TIMESTAMPS = 1u << 0,
	CBAD_MASK_UUIDS = 1u << 1,
	CBAD_MASK_HEX = 1u << 2,
	CBAD_MASK_NUMBERS = 1u << 3, /* long numbers (ids), not small counts */
	CBAD_MASK_IPS = 1u << 4,
	CBAD_MASK_EMAILS = 1u << 5,
	CBAD_MASK_ALL = (1u << 6) - 1,
};

/* Settings of one stream's detector. cbad_settings_default() gives the documented defaults;
 * every field is validated by cbad_settings_validate(). */
typedef struct cbad_settings {
	uint32_t baseline_events; /* events kept as the baseline the others are judged against */
	uint32_t baseline_bytes;  /* cap on the baseline's canonical bytes (the zstd dictionary) */
	uint32_t window_events;   /* events per drift window */
	uint32_t hop_events;      /* the baseline digest is rebuilt every hop events */
	double sensitivity;       /* 0.0 .. 1.0, default 0.5; higher finds more */
	int zstd_level;           /* compressor level of the structure channel */
	uint32_t mask;            /* CBAD_MASK_* bits */
	uint32_t max_event_bytes; /* longer events are scored on their first max_event_bytes */
	uint32_t max_entities;    /* entities remembered per entity field (least recently seen evicted) */
	size_t nentity_fields;
	char entity_fields[CBAD_MAX_ENTITY_FIELDS][CBAD_FIELD_NAME_MAX]; /* JSON keys, dotted paths */
	size_t nvalue_fields; /* 0 = every numeric field found, up to CBAD_MAX_VALUE_FIELDS */
	char value_fields[CBAD_MAX_VALUE_FIELDS][CBAD_FIELD_NAME_MAX];
	uint64_t seed; /* for any randomised test: results are deterministic for a given seed */
} cbad_settings;

void cbad_settings_default(cbad_settings *s);

/* Returns 0, or -EINVAL with a message naming the field and the allowed range. */
int cbad_settings_validate(const cbad_settings *s, char *errbuf, size_t errlen);

/* Applies the keys of a JSON object (as stored in streams.settings and accepted by PUT
 * /v1/streams/{stream}: "baseline_events", "window_events", "hop_events", "sensitivity",
 * "zstd_level", "mask" (array of names: "timestamps","uuids","hex","numbers","ips","emails"),
 * "max_event_bytes", "max_entities", "entity_fields" (array), "value_fields" (array)) on top of
 * *s and validates the result. Unknown keys are an error. On failure *s is untouched. */
int cbad_settings_apply_json(cbad_settings *s, const char *json, size_t len, char *errbuf,
			     size_t errlen);

typedef enum cbad_kind {
	CBAD_KIND_EVENT = 0, /* the event's structure is novel given the baseline */
	CBAD_KIND_WINDOW,    /* the mix of the recent window drifted from the baseline */
	CBAD_KIND_VALUE,     /* a numeric field is out of line (spike, level shift, flatline) */
	CBAD_KIND_ENTITY,    /* an entity behaves unlike its own history */
	CBAD_KIND_RATE,      /* a burst or drop in how often a kind of event occurs */
} cbad_kind;

typedef enum cbad_severity {
	CBAD_SEVERITY_NONE = 0,
	CBAD_SEVERITY_LOW,
	CBAD_SEVERITY_MEDIUM,
	CBAD_SEVERITY_HIGH,
	CBAD_SEVERITY_CRITICAL,
} cbad_severity;

const char *cbad_kind_name(cbad_kind k);         /* "event", "window", "value", "entity", "rate" */
const char *cbad_severity_name(cbad_severity s); /* "none", "low", ... */

typedef struct cbad_evidence {
	char name[CBAD_FIELD_NAME_MAX]; /* a field, a token class or a metric */
	char value[128];                /* redacted */
	double bits;                    /* what it cost, when it is a cost; else 0 */
	char detail[160];
} cbad_evidence;

typedef struct cbad_signal_value {
	char name[32];
	double value;
} cbad_signal_value;

/* The verdict on one event. The explanation fields are filled only when anomaly is true. */
typedef struct cbad_result {
	double score;   /* [0, 1), higher = more anomalous: L / (L + 3) with L = -log10(p_value),
			   so 0.5 at p = 1e-3; monotone in p_value and never saturating, so
			   anomaly <=> score > the score of alpha; 0 while calibrating */
	double p_value; /* calibrated p-value of the strongest signal */
	bool anomaly;
	cbad_severity severity;
	cbad_kind kind;
	bool calibrating;  /* warm-up: never an anomaly */
	double progress;   /* 0..1 of the warm-up */
	double novelty_bits; /* the event's compressed cost given the baseline, in bits */

	size_t nsignals;
	cbad_signal_value signals[CBAD_MAX_SIGNALS];

	/* explanation */
	char signal[32];     /* which signal fired: "novelty", "drift", "value:cpu", ... */
	double value;        /* its value */
	double base_low, base_median, base_high; /* the baseline's typical range of it */
	char summary[CBAD_SUMMARY_MAX]; /* one plain sentence a person can check */
	size_t nevidence;
	cbad_evidence evidence[CBAD_MAX_EVIDENCE];
	char excerpt[CBAD_EXCERPT_MAX]; /* the event, secrets and personal data redacted */
	int64_t window_start_ts, window_end_ts; /* kind WINDOW: the window it covers */
	uint32_t window_events;
	char entity_field[CBAD_FIELD_NAME_MAX]; /* kind ENTITY (or VALUE/RATE per entity) */
	char entity_value[128];
} cbad_result;

typedef struct cbad_status {
	bool calibrating;
	double progress;
	uint64_t events_seen;
	uint64_t anomalies;
	size_t memory_bytes; /* what this detector holds now */
} cbad_status;

typedef struct cbad_detector cbad_detector;

/* Creates a detector from validated settings (copied). Returns 0 or -EINVAL / -ENOMEM with
 * text in errbuf; *ret untouched on failure. Not thread-safe: one thread per detector. */
int cbad_detector_new(const cbad_settings *s, cbad_detector **ret, char *errbuf, size_t errlen);

/* Judges one event: its bytes (JSON object or a plain log line; need not be NUL-terminated)
 * and its time in epoch milliseconds. Fills *ret (always). Deterministic: the same events,
 * times and settings give bit-identical results. Returns 0; -EINVAL only for a NULL event. */
int cbad_detector_process(cbad_detector *d, const char *event, size_t len, int64_t ts_ms,
			  cbad_result *ret);

/* Deferred work between events. Every hop_events events whose baseline changed, the zstd
 * dictionary of the novelty channel is rebuilt (about 1.2 M instructions at defaults, the
 * p99 of process()). That build waits until cbad_detector_idle() runs it or the next
 * cbad_detector_process() does (first thing), whichever comes first: it uses the same bytes
 * either way, so results are bit-identical whether and when idle() is called. A service calls
 * idle() when its queue is empty to keep the build off the per-event latency; calling it
 * never is correct too. cbad_detector_idle_pending() says whether there is work (cheap).
 * idle() returns 1 when it did the work, 0 when there was none, -EINVAL for a NULL detector.
 * Same thread as process(). */
bool cbad_detector_idle_pending(const cbad_detector *d);
int cbad_detector_idle(cbad_detector *d);

void cbad_detector_status(const cbad_detector *d, cbad_status *ret);

/* Changes the sensitivity live (thresholds only; learned state is kept). -EINVAL outside 0..1. */
int cbad_detector_set_sensitivity(cbad_detector *d, double sensitivity);

const cbad_settings *cbad_detector_settings(const cbad_detector *d);

/* Serialises the whole detector (settings included; versioned, zstd-compressed) into a malloc'd
 * buffer the caller frees. A detector restored from it gives the same results on the same
 * following events as the original would. */
int cbad_detector_save(const cbad_detector *d, void **ret_buf, size_t *ret_len, char *errbuf,
		       size_t errlen);
/* Restores a detector; -EINVAL (with text) for a corrupt, truncated or unknown-version buffer. */
int cbad_detector_load(const void *buf, size_t len, cbad_detector **ret, char *errbuf,
		       size_t errlen);

void cbad_detector_free(cbad_detector *d);

/* The sensitivity table: the p-value threshold a sensitivity maps to (monotonic: a higher
 * sensitivity gives a higher threshold, so never fewer anomalies). */
double cbad_sensitivity_alpha(double sensitivity);

#endif /* DL_CBAD_H */
