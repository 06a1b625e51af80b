/* SPDX-License-Identifier: Apache-2.0 */
/* proto_notification: what to tell an org (schema driftlock.notification.v1) on topic
 * driftlock.notifications.v1. */
#ifndef DL_PROTO_NOTIFICATION_H
#define DL_PROTO_NOTIFICATION_H

#include <stddef.h>
#include <stdint.h>

#include "proto/proto_topics.h"

#define PROTO_NOTIFICATION_SCHEMA "driftlock.notification.v1"

#define PROTO_NOTIFICATION_MAX_BYTES (64 * 1024)
#define PROTO_NOTIFICATION_MAX_DEPTH 16
/* kind: 1-64 characters of a-z0-9_. Known kinds: usage_threshold, payment_failed,
 * grace_started, suspended, payment_succeeded. New kinds are not a breaking change; a consumer
 * that does not know a kind skips it. */
#define PROTO_NOTIFICATION_KIND_MAX 64

/* One notification. `data` is owned (release with proto_notification_free); the rest is inline.
 * Timestamps are epoch milliseconds. */
struct proto_notification {
	char id[PROTO_ID_MAX + 1]; /* dedupe key: the same id is delivered at most once */
	char org_id[PROTO_ORG_ID_LEN + 1];
	char kind[PROTO_NOTIFICATION_KIND_MAX + 1];
	/* The "data" object as JSON text, exactly its bytes on the wire. */
	char *data;
	size_t data_len;
	int64_t created_at_ms;
};

/* The fields a decoder requires, NULL-terminated; mirrors the JSON Schema. */
extern const char *const proto_notification_required_fields[];

/* Encodes n into a new compact JSON string (*ret_json, free with free()) of *ret_len bytes;
 * n->data must be the text of one JSON object. Checked with the decoder's rules.
 * Failure: -EINVAL/-ERANGE/-EMSGSIZE with "notification.<field>: <rule>" in errbuf, -ENOMEM;
 * outputs untouched. Thread-safe. */
int proto_notification_encode(const struct proto_notification *n, char **ret_json,
			      size_t *ret_len, char *errbuf, size_t errlen);

/* Decodes and validates `len` bytes into *ret (overwritten without freeing). Unknown members
 * are ignored. Failure: -EINVAL naming the field, -EMSGSIZE, -ENOMEM; *ret untouched. On success
 * the caller owns ret->data (proto_notification_free). Thread-safe. */
int proto_notification_decode(const char *buf, size_t len, struct proto_notification *ret,
			      char *errbuf, size_t errlen);

/* Frees what n owns (data) and zeroes n. Accepts NULL. */
void proto_notification_free(struct proto_notification *n);

#endif /* DL_PROTO_NOTIFICATION_H */
