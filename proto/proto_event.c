/* SPDX-License-Identifier: Apache-2.0 */
/* proto_event: JSON codec of the event envelope, keeping the payload's original bytes. */
#include "proto/proto_event.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "proto/proto_json.h"
#include "proto/proto_json_scan.h"
#include "common/dl_time.h"

static const char *const source_names[] = { "http", "kafka", NULL };

const char *const proto_event_required_fields[] = {
	"schema", "id", "org_id", "stream", "ts", "received_at", "source", "payload", NULL,
};

/* The bytes of ev in use: the fields before the attributes, and the attributes it holds. */
static size_t event_used_size(const struct proto_event *ev)
{
	return offsetof(struct proto_event, attributes) +
	       ev->nattributes * sizeof(ev->attributes[0]);
}

void proto_event_init(struct proto_event *ev)
{
	memset(ev, 0, offsetof(struct proto_event, attributes));
}

static int attributes_from_json(const cJSON *attrs, struct proto_event *ev, char *errbuf,
				size_t errlen)
{
	const cJSON *it;
	size_t n = 0, i, klen;
	int rc;

	for (it = attrs->child; it != NULL; it = it->next) {
		struct proto_event_attribute *a;

		if (n == PROTO_EVENT_ATTRS_MAX) {
			proto_json_err(errbuf, errlen, "event.attributes: must have at most %d members",
				       PROTO_EVENT_ATTRS_MAX);
			return -EINVAL;
		}
		klen = strlen(it->string);
		if (klen == 0 || klen > PROTO_EVENT_ATTR_KEY_MAX ||
		    proto_topics_check_id(it->string, klen, NULL, 0) < 0) {
			proto_json_err(errbuf, errlen,
				       "event.attributes: keys must be 1-%d characters of A-Za-z0-9._:-",
				       PROTO_EVENT_ATTR_KEY_MAX);
			return -EINVAL;
		}
		for (i = 0; i < n; i++) {
			if (strcmp(ev->attributes[i].key, it->string) == 0) {
				proto_json_err(errbuf, errlen, "event.attributes: duplicate key \"%s\"",
					       it->string);
				return -EINVAL;
			}
		}
		a = &ev->attributes[n];
		rc = proto_json_string(attrs, "event.attributes", it->string, true, PROTO_JSON_TEXT, 0,
				       PROTO_EVENT_ATTR_VALUE_MAX, a->value, sizeof(a->value), NULL,
				       errbuf, errlen);
		if (rc < 0)
			return rc;
		/* GetObjectItem finds the first of equal keys; duplicates were refused above. */
		memcpy(a->key, it->string, klen + 1);
		n++;
	}
	ev->nattributes = n;
	return 0;
}

/* Reads the members of root into ev; the payload is the `plen` bytes at `payload` (its value on
 * the wire, which the tree holds as null). */
static int event_from_json(const cJSON *root, const char *payload, size_t plen,
			   struct proto_event *ev, char *errbuf, size_t errlen)
{
	const cJSON *attrs;
	int source, rc;

	if ((rc = proto_json_schema(root, "event", PROTO_EVENT_SCHEMA, errbuf, errlen)) < 0 ||
	    (rc = proto_json_string(root, "event", "id", true, PROTO_JSON_ID, 1, PROTO_ID_MAX,
				    ev->id, sizeof(ev->id), NULL, errbuf, errlen)) < 0 ||
	    (rc = proto_json_string(root, "event", "org_id", true, PROTO_JSON_UUID, 0, 0,
				    ev->org_id, sizeof(ev->org_id), NULL, errbuf, errlen)) < 0 ||
	    (rc = proto_json_string(root, "event", "stream", true, PROTO_JSON_ID, 1,
				    PROTO_STREAM_MAX, ev->stream, sizeof(ev->stream), NULL, errbuf,
				    errlen)) < 0 ||
	    (rc = proto_json_time(root, "event", "ts", true, &ev->ts_ms, NULL, errbuf, errlen)) < 0 ||
	    (rc = proto_json_time(root, "event", "received_at", true, &ev->received_at_ms, NULL,
				  errbuf, errlen)) < 0 ||
	    (rc = proto_json_enum(root, "event", "source", true, source_names, &source, NULL,
				  errbuf, errlen)) < 0)
		return rc;
	ev->source = (enum proto_event_source)source;
	if (cJSON_GetObjectItemCaseSensitive(root, "payload") == NULL) {
		proto_json_err(errbuf, errlen, "event.payload: is required");
		return -EINVAL;
	}
	rc = proto_json_container(root, "event", "attributes", false, cJSON_Object, &attrs, errbuf,
				  errlen);
	if (rc < 0)
		return rc;
	if (attrs != NULL && (rc = attributes_from_json(attrs, ev, errbuf, errlen)) < 0)
		return rc;
	/* Last, so nothing else can fail after the allocation. */
	ev->payload = malloc(plen + 1);
	if (ev->payload == NULL)
		return -ENOMEM;
	memcpy(ev->payload, payload, plen);
	ev->payload[plen] = '\0';
	ev->payload_len = plen;
	return 0;
}

/* The members the fast path reads from the scan, in this order; payload first. */
enum { M_PAYLOAD, M_SCHEMA, M_ID, M_ORG, M_STREAM, M_TS, M_RECEIVED, M_SOURCE, M_ATTRS, M_COUNT };
static const char *const scan_names[M_COUNT] = {
	"payload", "schema", "id", "org_id", "stream", "ts", "received_at", "source", "attributes",
};

/* A plain (unescaped) string member's text, or NULL. */
static const char *plain(const char *buf, const struct proto_json_member *m, size_t *ret_len)
{
	if (!m->seen || m->type != 's' || m->escaped)
		return NULL;
	*ret_len = m->len;
	return buf + m->off;
}

/* What the fast path decodes before it commits to the output. */
struct event_head {
	char id[PROTO_ID_MAX + 1];
	char org_id[PROTO_ORG_ID_LEN + 1];
	char stream[PROTO_STREAM_MAX + 1];
	int64_t ts_ms, received_at_ms;
	enum proto_event_source source;
};

/* The envelope as ingest writes it (no attributes, no escapes in the header members, every
 * rule met) decoded from the scan's spans without any tree. Returns false to leave everything
 * else, errors included, to the general path, which reports them. */
static bool event_from_spans(const char *buf, const struct proto_json_member m[M_COUNT],
			     struct event_head *ev)
{
	const char *s;
	size_t n;
	int i;

	if (m[M_ATTRS].seen)
		return false;
	if (!(s = plain(buf, &m[M_SCHEMA], &n)) || n != sizeof(PROTO_EVENT_SCHEMA) - 1 ||
	    memcmp(s, PROTO_EVENT_SCHEMA, n) != 0)
		return false;
	if (!(s = plain(buf, &m[M_ID], &n)) ||
	    !proto_json_chars_ok(PROTO_JSON_ID, s, n, 1, PROTO_ID_MAX))
		return false;
	memcpy(ev->id, s, n);
	ev->id[n] = '\0';
	if (!(s = plain(buf, &m[M_ORG], &n)) || proto_topics_check_org_id(s, n, NULL, 0) < 0 ||
	    n >= sizeof(ev->org_id))
		return false;
	memcpy(ev->org_id, s, n);
	ev->org_id[n] = '\0';
	if (!(s = plain(buf, &m[M_STREAM], &n)) ||
	    !proto_json_chars_ok(PROTO_JSON_ID, s, n, 1, PROTO_STREAM_MAX))
		return false;
	memcpy(ev->stream, s, n);
	ev->stream[n] = '\0';
	if (!(s = plain(buf, &m[M_TS], &n)) ||
	    dl_time_parse_rfc3339(s, n, &ev->ts_ms, NULL, 0) < 0)
		return false;
	if (!(s = plain(buf, &m[M_RECEIVED], &n)) ||
	    dl_time_parse_rfc3339(s, n, &ev->received_at_ms, NULL, 0) < 0)
		return false;
	if (!(s = plain(buf, &m[M_SOURCE], &n)))
		return false;
	for (i = 0; source_names[i] != NULL; i++)
		if (strlen(source_names[i]) == n && memcmp(source_names[i], s, n) == 0)
			break;
	if (source_names[i] == NULL)
		return false;
	ev->source = (enum proto_event_source)i;
	return true;
}

/* The envelope is validated in one strict pass that also finds the payload; only the rest
 * (the payload replaced by null) becomes a cJSON tree. Building a tree of the payload too, to
 * copy its bytes out again, cost more than the detector spent on the event itself. */
int proto_event_decode(const char *buf, size_t len, struct proto_event *ret, char *errbuf,
		       size_t errlen)
{
	struct proto_json_scan_error se = { 0 };
	struct proto_json_member sm[M_COUNT], pm;
	struct proto_event *ev;
	size_t end, rlen;
	cJSON *root;
	char *rest;
	int rc;

	if (buf == NULL || len == 0) {
		proto_json_err(errbuf, errlen, "event: empty message");
		return -EINVAL;
	}
	if (len > PROTO_EVENT_MAX_BYTES) {
		proto_json_err(errbuf, errlen, "event: message of %zu bytes exceeds the limit of %d bytes",
			       len, PROTO_EVENT_MAX_BYTES);
		return -EMSGSIZE;
	}
	if (proto_json_scan_object((const unsigned char *)buf, 0, len, PROTO_EVENT_MAX_DEPTH,
				   scan_names, M_COUNT, sm, &end, &se) < 0) {
		/* The wording the other codecs use (proto_json_parse). */
		if (strcmp(se.code, "not_an_object") == 0)
			proto_json_err(errbuf, errlen, "event: must be a JSON object");
		else if (strcmp(se.code, "too_deep") == 0 ||
			 strncmp(se.why, "invalid UTF-8", 13) == 0 ||
			 strncmp(se.why, "control character", 17) == 0)
			proto_json_err(errbuf, errlen, "event: %s at byte %zu", se.why, se.pos);
		else
			proto_json_err(errbuf, errlen, "event: malformed JSON at byte %zu (%s)",
				       se.pos, se.why);
		return -EINVAL;
	}
	while (end < len && (buf[end] == ' ' || buf[end] == '\t' || buf[end] == '\n' ||
			     buf[end] == '\r'))
		end++;
	if (end != len) {
		proto_json_err(errbuf, errlen,
			       "event: unexpected data after the JSON value at byte %zu", end);
		return -EINVAL;
	}
	pm = sm[M_PAYLOAD];
	if (pm.seen) {
		/* The common case needs no tree at all. */
		struct event_head h;
		char *payload;

		if (event_from_spans(buf, sm, &h)) {
			payload = malloc(pm.vlen + 1);
			if (payload == NULL)
				return -ENOMEM;
			memcpy(payload, buf + pm.voff, pm.vlen);
			payload[pm.vlen] = '\0';
			proto_event_init(ret);
			memcpy(ret->id, h.id, sizeof(h.id));
			memcpy(ret->org_id, h.org_id, sizeof(h.org_id));
			memcpy(ret->stream, h.stream, sizeof(h.stream));
			ret->ts_ms = h.ts_ms;
			ret->received_at_ms = h.received_at_ms;
			ret->source = h.source;
			ret->payload = payload;
			ret->payload_len = pm.vlen;
			return 0;
		}
		rlen = len - pm.vlen + 4;
		rest = malloc(rlen);
		if (rest == NULL)
			return -ENOMEM;
		memcpy(rest, buf, pm.voff);
		memcpy(rest + pm.voff, "null", 4);
		memcpy(rest + pm.voff + 4, buf + pm.voff + pm.vlen, len - pm.voff - pm.vlen);
		root = cJSON_ParseWithLength(rest, rlen);
		free(rest);
	} else {
		/* event_from_json reports the missing payload in the order of the schema. */
		root = cJSON_ParseWithLength(buf, len);
	}
	if (root == NULL) /* valid JSON, so only memory can fail */
		return -ENOMEM;
	/* Decoded aside so *ret stays untouched on failure; only the header and the attributes in
	 * use are written and copied (see proto_event_init). */
	ev = malloc(sizeof(*ev));
	if (ev == NULL) {
		rc = -ENOMEM;
		goto out_delete_root;
	}
	proto_event_init(ev);
	rc = event_from_json(root, buf + pm.voff, pm.vlen, ev, errbuf, errlen);
	if (rc < 0)
		goto out_free_event;
	memcpy(ret, ev, event_used_size(ev));
	free(ev);
	cJSON_Delete(root);
	return 0;

out_free_event:
	proto_event_free(ev);
	free(ev);
out_delete_root:
	cJSON_Delete(root);
	return rc;
}

static int event_to_json(const struct proto_event *ev, cJSON *root, char *errbuf, size_t errlen)
{
	cJSON *attrs;
	size_t i;
	int rc;

	if ((rc = proto_json_put_string(root, "schema", PROTO_EVENT_SCHEMA)) < 0 ||
	    (rc = proto_json_put_string(root, "id", ev->id)) < 0 ||
	    (rc = proto_json_put_string(root, "org_id", ev->org_id)) < 0 ||
	    (rc = proto_json_put_string(root, "stream", ev->stream)) < 0 ||
	    (rc = proto_json_put_time(root, "event", "ts", ev->ts_ms, errbuf, errlen)) < 0 ||
	    (rc = proto_json_put_time(root, "event", "received_at", ev->received_at_ms, errbuf,
				      errlen)) < 0 ||
	    (rc = proto_json_put_enum(root, "event", "source", source_names, (int)ev->source,
				      errbuf, errlen)) < 0)
		return rc;
	if (cJSON_AddRawToObject(root, "payload", ev->payload) == NULL)
		return -ENOMEM;
	if (ev->nattributes == 0)
		return 0;
	if (ev->nattributes > PROTO_EVENT_ATTRS_MAX) {
		proto_json_err(errbuf, errlen, "event.attributes: must have at most %d members",
			       PROTO_EVENT_ATTRS_MAX);
		return -EINVAL;
	}
	attrs = cJSON_AddObjectToObject(root, "attributes");
	if (attrs == NULL)
		return -ENOMEM;
	for (i = 0; i < ev->nattributes; i++)
		if ((rc = proto_json_put_string(attrs, ev->attributes[i].key,
						ev->attributes[i].value)) < 0)
			return rc;
	return 0;
}

/* The decoder as the encoder's check (the struct is large: on the heap). */
static int event_validate(const char *json, size_t len, char *errbuf, size_t errlen)
{
	struct proto_event *check = malloc(sizeof(*check));
	int rc;

	if (check == NULL)
		return -ENOMEM;
	rc = proto_event_decode(json, len, check, errbuf, errlen);
	if (rc == 0)
		proto_event_free(check);
	free(check);
	return rc;
}

int proto_event_encode(const struct proto_event *ev, char **ret_json, size_t *ret_len,
		       char *errbuf, size_t errlen)
{
	cJSON *root, *payload;
	int rc;

	if (ev == NULL || ev->payload == NULL) {
		proto_json_err(errbuf, errlen, "event.payload: is required");
		return -EINVAL;
	}
	/* The payload goes out verbatim, so it must be one well-formed JSON value by itself. */
	if (strlen(ev->payload) != ev->payload_len) {
		proto_json_err(errbuf, errlen, "event.payload: payload_len does not match the text");
		return -EINVAL;
	}
	rc = proto_json_parse(ev->payload, ev->payload_len, "event.payload", PROTO_EVENT_MAX_BYTES,
			      PROTO_EVENT_MAX_DEPTH - 1, false, &payload, errbuf, errlen);
	if (rc < 0)
		return rc;
	cJSON_Delete(payload);

	root = cJSON_CreateObject();
	if (root == NULL)
		return -ENOMEM;
	rc = event_to_json(ev, root, errbuf, errlen);
	if (rc < 0)
		goto out_delete_root;
	return proto_json_emit(root, event_validate, ret_json, ret_len, errbuf, errlen);

out_delete_root:
	cJSON_Delete(root);
	return rc;
}

void proto_event_free(struct proto_event *ev)
{
	if (ev == NULL)
		return;
	free(ev->payload);
	/* Valid even after a failed decode: attributes_from_json counts only what it filled. */
	memset(ev, 0, event_used_size(ev) < sizeof(*ev) ? event_used_size(ev) : sizeof(*ev));
}
