/* SPDX-License-Identifier: Apache-2.0 */
/* proto_anomaly: an anomaly (schema driftlock.anomaly.v1) on topic driftlock.anomalies.v1. */
#ifndef DL_PROTO_ANOMALY_H
#define DL_PROTO_ANOMALY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/proto_topics.h"

#define PROTO_ANOMALY_SCHEMA "driftlock.anomaly.v1"

/* Limits. Text lengths count Unicode code points (JSON Schema maxLength); buffers hold 4 bytes
 * per code point plus the NUL. Names (signals, evidence, detector version, entity field) are
 * 1-64 characters of A-Za-z0-9._:- */
#define PROTO_ANOMALY_MAX_BYTES (64 * 1024)
#define PROTO_ANOMALY_MAX_DEPTH 8
#define PROTO_ANOMALY_NAME_MAX 64
#define PROTO_ANOMALY_SIGNALS_MAX 32
#define PROTO_ANOMALY_EVIDENCE_MAX 16
#define PROTO_ANOMALY_SUMMARY_MAX 1024
#define PROTO_ANOMALY_EXCERPT_MAX 1024
#define PROTO_ANOMALY_DETAIL_MAX 256       /* evidence[].detail */
#define PROTO_ANOMALY_ENTITY_VALUE_MAX 256 /* entity.value */

enum proto_anomaly_kind {
	PROTO_ANOMALY_KIND_EVENT,
	PROTO_ANOMALY_KIND_WINDOW, /* requires window */
	PROTO_ANOMALY_KIND_VALUE,
	PROTO_ANOMALY_KIND_ENTITY, /* requires entity */
	PROTO_ANOMALY_KIND_RATE,
};

enum proto_anomaly_severity {
	PROTO_ANOMALY_SEVERITY_LOW,
	PROTO_ANOMALY_SEVERITY_MEDIUM,
	PROTO_ANOMALY_SEVERITY_HIGH,
	PROTO_ANOMALY_SEVERITY_CRITICAL,
};

struct proto_anomaly_signal {
	char name[PROTO_ANOMALY_NAME_MAX + 1];
	double value;
};

struct proto_anomaly_evidence {
	char name[PROTO_ANOMALY_NAME_MAX + 1];
	bool has_value;
	double value;
	bool has_bits;
	double bits; /* compressed cost in bits, >= 0 */
	bool has_detail;
	char detail[4 * PROTO_ANOMALY_DETAIL_MAX + 1];
};

/* One anomaly. Every member is inline (fixed arrays), nothing is owned; timestamps are epoch
 * milliseconds. Optional parts carry a has_* flag. */
struct proto_anomaly {
	char id[PROTO_ID_MAX + 1];
	char org_id[PROTO_ORG_ID_LEN + 1];
	char stream[PROTO_STREAM_MAX + 1];
	char event_id[PROTO_ID_MAX + 1];
	int64_t event_ts_ms;
	int64_t detected_at_ms;
	enum proto_anomaly_kind kind;
	double score;   /* >= 0 */
	double p_value; /* 0..1 */
	enum proto_anomaly_severity severity;
	size_t nsignals;
	struct proto_anomaly_signal signals[PROTO_ANOMALY_SIGNALS_MAX];
	bool has_window;
	struct {
		int64_t start_ts_ms;
		int64_t end_ts_ms; /* >= start_ts_ms */
		int64_t events;    /* >= 0 */
	} window;
	bool has_entity;
	struct {
		char field[PROTO_ANOMALY_NAME_MAX + 1];
		char value[4 * PROTO_ANOMALY_ENTITY_VALUE_MAX + 1];
	} entity;
	struct {
		char summary[4 * PROTO_ANOMALY_SUMMARY_MAX + 1];
		char signal[PROTO_ANOMALY_NAME_MAX + 1];
		double value;
		double baseline_low, baseline_median, baseline_high; /* low <= median <= high */
		size_t nevidence;
		struct proto_anomaly_evidence evidence[PROTO_ANOMALY_EVIDENCE_MAX];
	} explanation;
	char excerpt[4 * PROTO_ANOMALY_EXCERPT_MAX + 1]; /* redacted event text, may be empty */
	struct {
		char version[PROTO_ANOMALY_NAME_MAX + 1];
		double sensitivity; /* 0..1 */
	} detector;
};

/* The fields a decoder requires, as dotted paths ("explanation.baseline.low"), NULL-terminated;
 * mirrors proto/schemas/anomaly.v1.schema.json. */
extern const char *const proto_anomaly_required_fields[];

/* Encodes a into a new compact JSON string (*ret_json, free with free()) of *ret_len bytes,
 * checked with the decoder's rules. Failure: -EINVAL/-ERANGE/-EMSGSIZE with "anomaly.<field>:
 * <rule>" in errbuf, -ENOMEM; outputs untouched. Thread-safe. */
int proto_anomaly_encode(const struct proto_anomaly *a, char **ret_json, size_t *ret_len,
			 char *errbuf, size_t errlen);

/* Decodes and validates `len` bytes into *ret (overwritten). Unknown members are ignored.
 * Failure: -EINVAL naming the field ("anomaly.p_value: must be between 0 and 1"), -EMSGSIZE
 * (over PROTO_ANOMALY_MAX_BYTES), -ENOMEM; *ret untouched. Thread-safe. */
int proto_anomaly_decode(const char *buf, size_t len, struct proto_anomaly *ret, char *errbuf,
			 size_t errlen);

/* Zeroes a (it owns nothing; kept so every message has the same API). Accepts NULL. */
void proto_anomaly_free(struct proto_anomaly *a);

#endif /* DL_PROTO_ANOMALY_H */
