/* SPDX-License-Identifier: Apache-2.0 */
/* proto_event: JSON codec of the event envelope, keeping the payload's original bytes. */
#include "proto/proto_event.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "proto/proto_json.h"

static const char *const source_names[] = { "http", "kafka", NULL };

const char *const proto_event_required_fields[] = {
	"schema", "id", "org_id", "stream", "ts", "received_at", "source", "payload", NULL,
};

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

static int event_from_json(const char *buf, size_t len, const cJSON *root, struct proto_event *ev,
			   char *errbuf, size_t errlen)
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
	rc = proto_json_raw_member(buf, len, root, "payload", &ev->payload, &ev->payload_len);
	if (rc == -ENOENT) {
		proto_json_err(errbuf, errlen, "event.payload: is required");
		return -EINVAL;
	}
	return rc;
}

int proto_event_decode(const char *buf, size_t len, struct proto_event *ret, char *errbuf,
		       size_t errlen)
{
	struct proto_event *ev;
	cJSON *root;
	int rc;

	rc = proto_json_parse(buf, len, "event", PROTO_EVENT_MAX_BYTES, PROTO_EVENT_MAX_DEPTH, true,
			      &root, errbuf, errlen);
	if (rc < 0)
		return rc;
	ev = calloc(1, sizeof(*ev));
	if (ev == NULL) {
		rc = -ENOMEM;
		goto out_delete_root;
	}
	rc = event_from_json(buf, len, root, ev, errbuf, errlen);
	if (rc < 0)
		goto out_free_event;
	*ret = *ev;
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
	memset(ev, 0, sizeof(*ev));
}
