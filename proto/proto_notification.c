/* SPDX-License-Identifier: Apache-2.0 */
/* proto_notification: JSON codec of notifications, keeping the data object's original bytes. */
#include "proto/proto_notification.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "proto/proto_json.h"

const char *const proto_notification_required_fields[] = {
	"schema", "id", "org_id", "kind", "data", "created_at", NULL,
};

#define P "notification"

static int notification_from_json(const char *buf, size_t len, const cJSON *root,
				  struct proto_notification *n, char *errbuf, size_t errlen)
{
	const cJSON *data;
	int rc;

	if ((rc = proto_json_schema(root, P, PROTO_NOTIFICATION_SCHEMA, errbuf, errlen)) < 0 ||
	    (rc = proto_json_string(root, P, "id", true, PROTO_JSON_ID, 1, PROTO_ID_MAX, n->id,
				    sizeof(n->id), NULL, errbuf, errlen)) < 0 ||
	    (rc = proto_json_string(root, P, "org_id", true, PROTO_JSON_UUID, 0, 0, n->org_id,
				    sizeof(n->org_id), NULL, errbuf, errlen)) < 0 ||
	    (rc = proto_json_string(root, P, "kind", true, PROTO_JSON_SNAKE, 1,
				    PROTO_NOTIFICATION_KIND_MAX, n->kind, sizeof(n->kind), NULL,
				    errbuf, errlen)) < 0 ||
	    (rc = proto_json_container(root, P, "data", true, cJSON_Object, &data, errbuf,
				       errlen)) < 0 ||
	    (rc = proto_json_time(root, P, "created_at", true, &n->created_at_ms, NULL, errbuf,
				  errlen)) < 0)
		return rc;
	return proto_json_raw_member(buf, len, root, "data", &n->data, &n->data_len);
}

int proto_notification_decode(const char *buf, size_t len, struct proto_notification *ret,
			      char *errbuf, size_t errlen)
{
	struct proto_notification n;
	cJSON *root;
	int rc;

	rc = proto_json_parse(buf, len, P, PROTO_NOTIFICATION_MAX_BYTES,
			      PROTO_NOTIFICATION_MAX_DEPTH, true, &root, errbuf, errlen);
	if (rc < 0)
		return rc;
	memset(&n, 0, sizeof(n));
	rc = notification_from_json(buf, len, root, &n, errbuf, errlen);
	if (rc == 0)
		*ret = n;
	cJSON_Delete(root);
	return rc;
}

/* The decoder as the encoder's check. */
static int notification_validate(const char *json, size_t len, char *errbuf, size_t errlen)
{
	struct proto_notification check;
	int rc = proto_notification_decode(json, len, &check, errbuf, errlen);

	if (rc == 0)
		proto_notification_free(&check);
	return rc;
}

int proto_notification_encode(const struct proto_notification *n, char **ret_json,
			      size_t *ret_len, char *errbuf, size_t errlen)
{
	cJSON *root, *data;
	int rc;

	if (n == NULL || n->data == NULL) {
		proto_json_err(errbuf, errlen, P ".data: is required");
		return -EINVAL;
	}
	if (strlen(n->data) != n->data_len) {
		proto_json_err(errbuf, errlen, P ".data: data_len does not match the text");
		return -EINVAL;
	}
	rc = proto_json_parse(n->data, n->data_len, P ".data", PROTO_NOTIFICATION_MAX_BYTES,
			      PROTO_NOTIFICATION_MAX_DEPTH - 1, true, &data, errbuf, errlen);
	if (rc < 0)
		return rc;
	cJSON_Delete(data);
	root = cJSON_CreateObject();
	if (root == NULL)
		return -ENOMEM;
	if ((rc = proto_json_put_string(root, "schema", PROTO_NOTIFICATION_SCHEMA)) < 0 ||
	    (rc = proto_json_put_string(root, "id", n->id)) < 0 ||
	    (rc = proto_json_put_string(root, "org_id", n->org_id)) < 0 ||
	    (rc = proto_json_put_string(root, "kind", n->kind)) < 0 ||
	    (rc = cJSON_AddRawToObject(root, "data", n->data) != NULL ? 0 : -ENOMEM) < 0 ||
	    (rc = proto_json_put_time(root, P, "created_at", n->created_at_ms, errbuf, errlen)) < 0)
		goto out_delete_root;
	return proto_json_emit(root, notification_validate, ret_json, ret_len, errbuf, errlen);

out_delete_root:
	cJSON_Delete(root);
	return rc;
}

void proto_notification_free(struct proto_notification *n)
{
	if (n == NULL)
		return;
	free(n->data);
	memset(n, 0, sizeof(*n));
}
