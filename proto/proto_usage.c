/* SPDX-License-Identifier: Apache-2.0 */
/* proto_usage: JSON codec of the usage record billing consumes. */
#include "proto/proto_usage.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "proto/proto_json.h"

static const char *const metric_names[] = { "anomalies", NULL };

const char *const proto_usage_required_fields[] = {
	"schema", "id", "org_id", "period_start", "period_end", "metric", "quantity", "overage",
	"plan", "recorded_at", NULL,
};

#define P "usage"

static int usage_from_json(const cJSON *root, struct proto_usage *u, char *errbuf, size_t errlen)
{
	int metric, rc;

	if ((rc = proto_json_schema(root, P, PROTO_USAGE_SCHEMA, errbuf, errlen)) < 0 ||
	    (rc = proto_json_string(root, P, "id", true, PROTO_JSON_ID, 1, PROTO_ID_MAX, u->id,
				    sizeof(u->id), NULL, errbuf, errlen)) < 0 ||
	    (rc = proto_json_string(root, P, "org_id", true, PROTO_JSON_UUID, 0, 0, u->org_id,
				    sizeof(u->org_id), NULL, errbuf, errlen)) < 0 ||
	    (rc = proto_json_time(root, P, "period_start", true, &u->period_start_ms, NULL, errbuf,
				  errlen)) < 0 ||
	    (rc = proto_json_time(root, P, "period_end", true, &u->period_end_ms, NULL, errbuf,
				  errlen)) < 0 ||
	    (rc = proto_json_enum(root, P, "metric", true, metric_names, &metric, NULL, errbuf,
				  errlen)) < 0 ||
	    (rc = proto_json_int(root, P, "quantity", true, 0, PROTO_JSON_INT_MAX, &u->quantity,
				 NULL, errbuf, errlen)) < 0 ||
	    (rc = proto_json_int(root, P, "overage", true, 0, PROTO_JSON_INT_MAX, &u->overage, NULL,
				 errbuf, errlen)) < 0 ||
	    (rc = proto_json_string(root, P, "plan", true, PROTO_JSON_SLUG, 1, PROTO_USAGE_PLAN_MAX,
				    u->plan, sizeof(u->plan), NULL, errbuf, errlen)) < 0 ||
	    (rc = proto_json_time(root, P, "recorded_at", true, &u->recorded_at_ms, NULL, errbuf,
				  errlen)) < 0)
		return rc;
	u->metric = (enum proto_usage_metric)metric;
	if (u->period_end_ms <= u->period_start_ms) {
		proto_json_err(errbuf, errlen, P ".period_end: must be after period_start");
		return -EINVAL;
	}
	if (u->overage > u->quantity) {
		proto_json_err(errbuf, errlen, P ".overage: must not exceed quantity");
		return -EINVAL;
	}
	return 0;
}

int proto_usage_decode(const char *buf, size_t len, struct proto_usage *ret, char *errbuf,
		       size_t errlen)
{
	struct proto_usage u;
	cJSON *root;
	int rc;

	rc = proto_json_parse(buf, len, P, PROTO_USAGE_MAX_BYTES, PROTO_USAGE_MAX_DEPTH, true, &root,
			      errbuf, errlen);
	if (rc < 0)
		return rc;
	memset(&u, 0, sizeof(u));
	rc = usage_from_json(root, &u, errbuf, errlen);
	if (rc == 0)
		*ret = u;
	cJSON_Delete(root);
	return rc;
}

static int usage_to_json(const struct proto_usage *u, cJSON *root, char *errbuf, size_t errlen)
{
	int rc;

	if ((rc = proto_json_put_string(root, "schema", PROTO_USAGE_SCHEMA)) < 0 ||
	    (rc = proto_json_put_string(root, "id", u->id)) < 0 ||
	    (rc = proto_json_put_string(root, "org_id", u->org_id)) < 0 ||
	    (rc = proto_json_put_time(root, P, "period_start", u->period_start_ms, errbuf,
				      errlen)) < 0 ||
	    (rc = proto_json_put_time(root, P, "period_end", u->period_end_ms, errbuf, errlen)) < 0 ||
	    (rc = proto_json_put_enum(root, P, "metric", metric_names, (int)u->metric, errbuf,
				      errlen)) < 0 ||
	    (rc = proto_json_put_number(root, "quantity", (double)u->quantity)) < 0 ||
	    (rc = proto_json_put_number(root, "overage", (double)u->overage)) < 0 ||
	    (rc = proto_json_put_string(root, "plan", u->plan)) < 0 ||
	    (rc = proto_json_put_time(root, P, "recorded_at", u->recorded_at_ms, errbuf,
				      errlen)) < 0)
		return rc;
	return 0;
}

/* The decoder as the encoder's check. */
static int usage_validate(const char *json, size_t len, char *errbuf, size_t errlen)
{
	struct proto_usage check;
	int rc = proto_usage_decode(json, len, &check, errbuf, errlen);

	if (rc == 0)
		proto_usage_free(&check);
	return rc;
}

int proto_usage_encode(const struct proto_usage *u, char **ret_json, size_t *ret_len,
		       char *errbuf, size_t errlen)
{
	cJSON *root;
	int rc;

	if (u == NULL) {
		proto_json_err(errbuf, errlen, P ": no usage record to encode");
		return -EINVAL;
	}
	/* Integers beyond 2^53 would silently lose precision as JSON numbers. */
	if (u->quantity > PROTO_JSON_INT_MAX || u->overage > PROTO_JSON_INT_MAX) {
		proto_json_err(errbuf, errlen, P ".%s: must be at most 9007199254740991",
			       u->quantity > PROTO_JSON_INT_MAX ? "quantity" : "overage");
		return -ERANGE;
	}
	root = cJSON_CreateObject();
	if (root == NULL)
		return -ENOMEM;
	rc = usage_to_json(u, root, errbuf, errlen);
	if (rc < 0)
		goto out_delete_root;
	return proto_json_emit(root, usage_validate, ret_json, ret_len, errbuf, errlen);

out_delete_root:
	cJSON_Delete(root);
	return rc;
}

void proto_usage_free(struct proto_usage *u)
{
	if (u != NULL)
		memset(u, 0, sizeof(*u));
}
