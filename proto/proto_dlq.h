/* SPDX-License-Identifier: Apache-2.0 */
/* proto_dlq: a dead letter (schema driftlock.dlq.v1) on topic driftlock.dlq.v1, carrying the
 * original message bytes, where they came from, and why they could not be processed. */
#ifndef DL_PROTO_DLQ_H
#define DL_PROTO_DLQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_DLQ_SCHEMA "driftlock.dlq.v1"

#define PROTO_DLQ_MAX_BYTES (4 * 1024 * 1024) /* base64 of the largest value fits */
#define PROTO_DLQ_MAX_DEPTH 4
#define PROTO_DLQ_VALUE_MAX (2 * 1024 * 1024) /* decoded bytes of value */
#define PROTO_DLQ_KEY_MAX (16 * 1024)         /* decoded bytes of key */
#define PROTO_DLQ_HEADERS_MAX 64
#define PROTO_DLQ_HEADER_KEY_MAX 128           /* characters */
#define PROTO_DLQ_HEADER_VALUE_MAX (16 * 1024) /* decoded bytes */
#define PROTO_DLQ_TOPIC_MAX 249                /* Kafka's limit; A-Za-z0-9._- */
#define PROTO_DLQ_NAME_MAX 64                  /* reason.code (a-z0-9_), service (a-z0-9_-) */
#define PROTO_DLQ_MESSAGE_MAX 1024             /* reason.message, characters */

struct proto_dlq_header {
	char key[4 * PROTO_DLQ_HEADER_KEY_MAX + 1];
	bool has_value; /* false: the header's value was null */
	uint8_t *value; /* owned */
	size_t value_len;
};

/* One dead letter. key, value and headers (with their values) are owned by the struct and
 * released by proto_dlq_free; the rest is inline. Timestamps are epoch milliseconds. */
struct proto_dlq {
	char source_topic[PROTO_DLQ_TOPIC_MAX + 1];
	int32_t source_partition; /* >= 0 */
	int64_t source_offset;    /* >= 0 */
	bool has_key;             /* false: the source message had a null key */
	uint8_t *key;
	size_t key_len;
	uint8_t *value; /* the original bytes; NULL allowed when value_len is 0 */
	size_t value_len;
	size_t nheaders;
	struct proto_dlq_header *headers; /* array of nheaders */
	char reason_code[PROTO_DLQ_NAME_MAX + 1];
	char reason_message[4 * PROTO_DLQ_MESSAGE_MAX + 1];
	char service[PROTO_DLQ_NAME_MAX + 1];
	int64_t failed_at_ms;
};

/* The fields a decoder requires, NULL-terminated; mirrors proto/schemas/dlq.v1.schema.json.
 * key and headers[].value_b64 are required but may be null. */
extern const char *const proto_dlq_required_fields[];

/* Encodes d (bytes as standard padded base64) into a new compact JSON string (*ret_json, free
 * with free()) of *ret_len bytes, checked with the decoder's rules. Failure: -EINVAL/-ERANGE/
 * -EMSGSIZE with "dlq.<field>: <rule>" in errbuf, -ENOMEM; outputs untouched. Thread-safe. */
int proto_dlq_encode(const struct proto_dlq *d, char **ret_json, size_t *ret_len, char *errbuf,
		     size_t errlen);

/* Decodes and validates `len` bytes into *ret (overwritten without freeing), base64 decoded.
 * Unknown members are ignored. Failure: -EINVAL naming the field, -EMSGSIZE, -ENOMEM; *ret
 * untouched. On success the caller releases *ret with proto_dlq_free. Thread-safe. */
int proto_dlq_decode(const char *buf, size_t len, struct proto_dlq *ret, char *errbuf,
		     size_t errlen);

/* Frees what d owns and zeroes d. Accepts NULL. */
void proto_dlq_free(struct proto_dlq *d);

#endif /* DL_PROTO_DLQ_H */
