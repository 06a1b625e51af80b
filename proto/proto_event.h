/* SPDX-License-Identifier: Apache-2.0 */
/* proto_event: the event envelope (schema driftlock.event.v1) on topic driftlock.events.v1. */
#ifndef DL_PROTO_EVENT_H
#define DL_PROTO_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "proto/proto_topics.h"

#define PROTO_EVENT_SCHEMA "driftlock.event.v1"

/* Limits a decoder enforces (and an encoder refuses to exceed). Text lengths count Unicode code
 * points, like JSON Schema's maxLength; buffers hold 4 bytes per code point plus the NUL. */
#define PROTO_EVENT_MAX_BYTES (1024 * 1024) /* the whole encoded envelope */
#define PROTO_EVENT_MAX_DEPTH 32            /* JSON nesting, envelope included */
#define PROTO_EVENT_ATTRS_MAX 32
#define PROTO_EVENT_ATTR_KEY_MAX 64    /* A-Za-z0-9._:- */
#define PROTO_EVENT_ATTR_VALUE_MAX 256 /* any text */

enum proto_event_source {
	PROTO_EVENT_SOURCE_HTTP,
	PROTO_EVENT_SOURCE_KAFKA,
};

struct proto_event_attribute {
	char key[PROTO_EVENT_ATTR_KEY_MAX + 1];
	char value[4 * PROTO_EVENT_ATTR_VALUE_MAX + 1];
};

/* One event. All strings are NUL-terminated fixed arrays except `payload`, which the struct
 * owns (release with proto_event_free). Timestamps are epoch milliseconds (common/dl_time). */
struct proto_event {
	char id[PROTO_ID_MAX + 1];
	char org_id[PROTO_ORG_ID_LEN + 1];
	char stream[PROTO_STREAM_MAX + 1];
	int64_t ts_ms;          /* event time */
	int64_t received_at_ms; /* when DriftLock received it */
	enum proto_event_source source;
	/* The payload as JSON text, exactly the bytes of the "payload" value on the wire (object,
	 * array, number, true/false/null, or a quoted JSON string for a raw log line). */
	char *payload;
	size_t payload_len;
	size_t nattributes;
	struct proto_event_attribute attributes[PROTO_EVENT_ATTRS_MAX];
};

/* The fields a decoder requires, as dotted paths, NULL-terminated (mirrors the JSON Schema). */
extern const char *const proto_event_required_fields[];

/* Encodes ev as one compact JSON object into a new string (*ret_json, NUL-terminated, free with
 * free()) of *ret_len bytes. The result is checked with the decoder's rules, so what encodes
 * decodes. Failure: -EINVAL/-ERANGE/-EMSGSIZE with the field and rule in errbuf ("event.stream:
 * must be 1-128 characters of A-Za-z0-9._:-"), -ENOMEM; outputs untouched. Thread-safe. */
int proto_event_encode(const struct proto_event *ev, char **ret_json, size_t *ret_len,
		       char *errbuf, size_t errlen);

/* Decodes and validates `len` bytes (no NUL needed) into *ret, overwriting it without freeing
 * what it held. Unknown members are ignored (forward compatibility); for repeated members the
 * first wins. Failure: -EINVAL (field and rule in errbuf), -EMSGSIZE (over
 * PROTO_EVENT_MAX_BYTES), -ENOMEM; *ret untouched. On success the caller owns ret->payload and
 * releases it with proto_event_free. Thread-safe. */
int proto_event_decode(const char *buf, size_t len, struct proto_event *ret, char *errbuf,
		       size_t errlen);

/* Makes ev an empty event (no payload, no attributes) without touching the attribute slots
 * past nattributes: the struct is ~35 KiB, nearly all of it attribute buffers, and zeroing it
 * whole per event costs more than decoding one. Use it instead of memset on a new event. */
void proto_event_init(struct proto_event *ev);

/* Frees what ev owns (the payload) and resets ev as proto_event_init does (the header and the
 * attributes it held are zeroed). Accepts NULL. Does not free ev itself. */
void proto_event_free(struct proto_event *ev);

#endif /* DL_PROTO_EVENT_H */
