/* SPDX-License-Identifier: Apache-2.0 */
/* proto_usage: a billable usage record (schema driftlock.usage.v1) on topic driftlock.usage.v1. */
#ifndef DL_PROTO_USAGE_H
#define DL_PROTO_USAGE_H

#include <stddef.h>
#include <stdint.h>

#include "proto/proto_topics.h"

#define PROTO_USAGE_SCHEMA "driftlock.usage.v1"

#define PROTO_USAGE_MAX_BYTES 4096
#define PROTO_USAGE_MAX_DEPTH 4
#define PROTO_USAGE_PLAN_MAX 32 /* a-z0-9_- ; known: developer, pro, enterprise */

enum proto_usage_metric {
	PROTO_USAGE_METRIC_ANOMALIES,
};

/* One usage record: the running total of `metric` for an org in a billing period. Inline
 * members only; timestamps are epoch milliseconds. */
struct proto_usage {
	char id[PROTO_ID_MAX + 1]; /* idempotency key */
	char org_id[PROTO_ORG_ID_LEN + 1];
	int64_t period_start_ms;
	int64_t period_end_ms; /* > period_start_ms */
	enum proto_usage_metric metric;
	int64_t quantity; /* total in the period so far, >= 0 */
	int64_t overage;  /* part of quantity above the plan's allowance, 0..quantity */
	char plan[PROTO_USAGE_PLAN_MAX + 1];
	int64_t recorded_at_ms;
};

/* The fields a decoder requires, NULL-terminated; mirrors proto/schemas/usage.v1.schema.json. */
extern const char *const proto_usage_required_fields[];

/* Encodes u into a new compact JSON string (*ret_json, free with free()) of *ret_len bytes,
 * checked with the decoder's rules. Failure: -EINVAL/-ERANGE with "usage.<field>: <rule>" in
 * errbuf, -ENOMEM; outputs untouched. Thread-safe. */
int proto_usage_encode(const struct proto_usage *u, char **ret_json, size_t *ret_len,
		       char *errbuf, size_t errlen);

/* Decodes and validates `len` bytes into *ret (overwritten). Unknown members are ignored.
 * Failure: -EINVAL naming the field, -EMSGSIZE, -ENOMEM; *ret untouched. Thread-safe. */
int proto_usage_decode(const char *buf, size_t len, struct proto_usage *ret, char *errbuf,
		       size_t errlen);

/* Zeroes u (it owns nothing). Accepts NULL. */
void proto_usage_free(struct proto_usage *u);

#endif /* DL_PROTO_USAGE_H */
