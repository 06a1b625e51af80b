/* SPDX-License-Identifier: Apache-2.0 */
/* proto_anomaly: JSON codec of the anomaly message with its explanation and evidence. */
#include "proto/proto_anomaly.h"

#include <errno.h>
#include <stddef.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "proto/proto_json.h"

static const char *const kind_names[] = { "event", "window", "value", "entity", "rate", NULL };
static const char *const severity_names[] = { "low", "medium", "high", "critical", NULL };

const char *const proto_anomaly_required_fields[] = {
	"schema", "id", "org_id", "stream", "event_id", "event_ts", "detected_at", "kind", "score",
	"p_value", "severity", "signals", "explanation", "explanation.summary",
	"explanation.signal", "explanation.value", "explanation.baseline",
	"explanation.baseline.low", "explanation.baseline.median", "explanation.baseline.high",
	"explanation.evidence", "explanation.evidence[].name", "excerpt", "detector",
	"detector.version", "detector.sensitivity", "window.start_ts", "window.end_ts",
	"window.events", "entity.field", "entity.value", NULL,
};

#define P "anomaly"

static int signals_from_json(const cJSON *obj, struct proto_anomaly *a, char *errbuf,
			     size_t errlen)
{
	const cJSON *it;
	size_t n = 0, i, klen;
	int rc;

	for (it = obj->child; it != NULL; it = it->next) {
		if (n == PROTO_ANOMALY_SIGNALS_MAX) {
			proto_json_err(errbuf, errlen, P ".signals: must have at most %d members",
				       PROTO_ANOMALY_SIGNALS_MAX);
			return -EINVAL;
		}
		klen = strlen(it->string);
		if (klen > PROTO_ANOMALY_NAME_MAX || proto_topics_check_id(it->string, klen, NULL, 0)) {
			proto_json_err(errbuf, errlen,
				       P ".signals: names must be 1-%d characters of A-Za-z0-9._:-",
				       PROTO_ANOMALY_NAME_MAX);
			return -EINVAL;
		}
		for (i = 0; i < n; i++) {
			if (strcmp(a->signals[i].name, it->string) == 0) {
				proto_json_err(errbuf, errlen, P ".signals: duplicate name \"%s\"",
					       it->string);
				return -EINVAL;
			}
		}
		rc = proto_json_number(obj, P ".signals", it->string, true, -DBL_MAX, DBL_MAX,
				       &a->signals[n].value, NULL, errbuf, errlen);
		if (rc < 0)
			return rc;
		memcpy(a->signals[n].name, it->string, klen + 1);
		n++;
	}
	a->nsignals = n;
	return 0;
}

static int evidence_from_json(const cJSON *arr, struct proto_anomaly *a, char *errbuf,
			      size_t errlen)
{
	const cJSON *it;
	char path[64];
	size_t n = 0;
	int rc;

	for (it = arr->child; it != NULL; it = it->next, n++) {
		struct proto_anomaly_evidence *e = &a->explanation.evidence[n];

		if (n == PROTO_ANOMALY_EVIDENCE_MAX) {
			proto_json_err(errbuf, errlen,
				       P ".explanation.evidence: must have at most %d items",
				       PROTO_ANOMALY_EVIDENCE_MAX);
			return -EINVAL;
		}
		snprintf(path, sizeof(path), P ".explanation.evidence[%zu]", n);
		if (!cJSON_IsObject(it)) {
			proto_json_err(errbuf, errlen, "%s: must be an object", path);
			return -EINVAL;
		}
		if ((rc = proto_json_string(it, path, "name", true, PROTO_JSON_ID, 1,
					    PROTO_ANOMALY_NAME_MAX, e->name, sizeof(e->name), NULL,
					    errbuf, errlen)) < 0 ||
		    (rc = proto_json_number(it, path, "value", false, -DBL_MAX, DBL_MAX, &e->value,
					    &e->has_value, errbuf, errlen)) < 0 ||
		    (rc = proto_json_number(it, path, "bits", false, 0, INFINITY, &e->bits,
					    &e->has_bits, errbuf, errlen)) < 0 ||
		    (rc = proto_json_string(it, path, "detail", false, PROTO_JSON_TEXT, 0,
					    PROTO_ANOMALY_DETAIL_MAX, e->detail, sizeof(e->detail),
					    &e->has_detail, errbuf, errlen)) < 0)
			return rc;
	}
	a->explanation.nevidence = n;
	return 0;
}

static int explanation_from_json(const cJSON *ex, struct proto_anomaly *a, char *errbuf,
				 size_t errlen)
{
	const char *path = P ".explanation";
	const cJSON *baseline, *evidence;
	int rc;

	if ((rc = proto_json_string(ex, path, "summary", true, PROTO_JSON_TEXT, 1,
				    PROTO_ANOMALY_SUMMARY_MAX, a->explanation.summary,
				    sizeof(a->explanation.summary), NULL, errbuf, errlen)) < 0 ||
	    (rc = proto_json_string(ex, path, "signal", true, PROTO_JSON_ID, 1,
				    PROTO_ANOMALY_NAME_MAX, a->explanation.signal,
				    sizeof(a->explanation.signal), NULL, errbuf, errlen)) < 0 ||
	    (rc = proto_json_number(ex, path, "value", true, -DBL_MAX, DBL_MAX,
				    &a->explanation.value, NULL, errbuf, errlen)) < 0 ||
	    (rc = proto_json_container(ex, path, "baseline", true, cJSON_Object, &baseline, errbuf,
				       errlen)) < 0 ||
	    (rc = proto_json_number(baseline, P ".explanation.baseline", "low", true, -DBL_MAX,
				    DBL_MAX, &a->explanation.baseline_low, NULL, errbuf,
				    errlen)) < 0 ||
	    (rc = proto_json_number(baseline, P ".explanation.baseline", "median", true, -DBL_MAX,
				    DBL_MAX, &a->explanation.baseline_median, NULL, errbuf,
				    errlen)) < 0 ||
	    (rc = proto_json_number(baseline, P ".explanation.baseline", "high", true, -DBL_MAX,
				    DBL_MAX, &a->explanation.baseline_high, NULL, errbuf,
				    errlen)) < 0)
		return rc;
	if (a->explanation.baseline_low > a->explanation.baseline_median ||
	    a->explanation.baseline_median > a->explanation.baseline_high) {
		proto_json_err(errbuf, errlen, P ".explanation.baseline: must have low <= median <= high");
		return -EINVAL;
	}
	rc = proto_json_container(ex, path, "evidence", true, cJSON_Array, &evidence, errbuf, errlen);
	if (rc < 0)
		return rc;
	return evidence_from_json(evidence, a, errbuf, errlen);
}

static int anomaly_from_json(const cJSON *root, struct proto_anomaly *a, char *errbuf,
			     size_t errlen)
{
	const cJSON *signals, *window, *entity, *explanation, *detector;
	int kind, severity, rc;

	if ((rc = proto_json_schema(root, P, PROTO_ANOMALY_SCHEMA, errbuf, errlen)) < 0 ||
	    (rc = proto_json_string(root, P, "id", true, PROTO_JSON_ID, 1, PROTO_ID_MAX, a->id,
				    sizeof(a->id), NULL, errbuf, errlen)) < 0 ||
	    (rc = proto_json_string(root, P, "org_id", true, PROTO_JSON_UUID, 0, 0, a->org_id,
				    sizeof(a->org_id), NULL, errbuf, errlen)) < 0 ||
	    (rc = proto_json_string(root, P, "stream", true, PROTO_JSON_ID, 1, PROTO_STREAM_MAX,
				    a->stream, sizeof(a->stream), NULL, errbuf, errlen)) < 0 ||
	    (rc = proto_json_string(root, P, "event_id", true, PROTO_JSON_ID, 1, PROTO_ID_MAX,
				    a->event_id, sizeof(a->event_id), NULL, errbuf, errlen)) < 0 ||
	    (rc = proto_json_time(root, P, "event_ts", true, &a->event_ts_ms, NULL, errbuf,
				  errlen)) < 0 ||
	    (rc = proto_json_time(root, P, "detected_at", true, &a->detected_at_ms, NULL, errbuf,
				  errlen)) < 0 ||
	    (rc = proto_json_enum(root, P, "kind", true, kind_names, &kind, NULL, errbuf,
				  errlen)) < 0 ||
	    (rc = proto_json_number(root, P, "score", true, 0, INFINITY, &a->score, NULL, errbuf,
				    errlen)) < 0 ||
	    (rc = proto_json_number(root, P, "p_value", true, 0, 1, &a->p_value, NULL, errbuf,
				    errlen)) < 0 ||
	    (rc = proto_json_enum(root, P, "severity", true, severity_names, &severity, NULL,
				  errbuf, errlen)) < 0 ||
	    (rc = proto_json_container(root, P, "signals", true, cJSON_Object, &signals, errbuf,
				       errlen)) < 0 ||
	    (rc = signals_from_json(signals, a, errbuf, errlen)) < 0 ||
	    (rc = proto_json_container(root, P, "window", false, cJSON_Object, &window, errbuf,
				       errlen)) < 0 ||
	    (rc = proto_json_container(root, P, "entity", false, cJSON_Object, &entity, errbuf,
				       errlen)) < 0 ||
	    (rc = proto_json_container(root, P, "explanation", true, cJSON_Object, &explanation,
				       errbuf, errlen)) < 0 ||
	    (rc = explanation_from_json(explanation, a, errbuf, errlen)) < 0 ||
	    (rc = proto_json_string(root, P, "excerpt", true, PROTO_JSON_TEXT, 0,
				    PROTO_ANOMALY_EXCERPT_MAX, a->excerpt, sizeof(a->excerpt), NULL,
				    errbuf, errlen)) < 0 ||
	    (rc = proto_json_container(root, P, "detector", true, cJSON_Object, &detector, errbuf,
				       errlen)) < 0 ||
	    (rc = proto_json_string(detector, P ".detector", "version", true, PROTO_JSON_ID, 1,
				    PROTO_ANOMALY_NAME_MAX, a->detector.version,
				    sizeof(a->detector.version), NULL, errbuf, errlen)) < 0 ||
	    (rc = proto_json_number(detector, P ".detector", "sensitivity", true, 0, 1,
				    &a->detector.sensitivity, NULL, errbuf, errlen)) < 0)
		return rc;
	a->kind = (enum proto_anomaly_kind)kind;
	a->severity = (enum proto_anomaly_severity)severity;

	if (window != NULL) {
		if ((rc = proto_json_time(window, P ".window", "start_ts", true,
					  &a->window.start_ts_ms, NULL, errbuf, errlen)) < 0 ||
		    (rc = proto_json_time(window, P ".window", "end_ts", true, &a->window.end_ts_ms,
					  NULL, errbuf, errlen)) < 0 ||
		    (rc = proto_json_int(window, P ".window", "events", true, 0, PROTO_JSON_INT_MAX,
					 &a->window.events, NULL, errbuf, errlen)) < 0)
			return rc;
		if (a->window.end_ts_ms < a->window.start_ts_ms) {
			proto_json_err(errbuf, errlen, P ".window.end_ts: must not be before start_ts");
			return -EINVAL;
		}
		a->has_window = true;
	} else if (a->kind == PROTO_ANOMALY_KIND_WINDOW) {
		proto_json_err(errbuf, errlen, P ".window: is required when kind is \"window\"");
		return -EINVAL;
	}
	if (entity != NULL) {
		if ((rc = proto_json_string(entity, P ".entity", "field", true, PROTO_JSON_ID, 1,
					    PROTO_ANOMALY_NAME_MAX, a->entity.field,
					    sizeof(a->entity.field), NULL, errbuf, errlen)) < 0 ||
		    (rc = proto_json_string(entity, P ".entity", "value", true, PROTO_JSON_TEXT, 0,
					    PROTO_ANOMALY_ENTITY_VALUE_MAX, a->entity.value,
					    sizeof(a->entity.value), NULL, errbuf, errlen)) < 0)
			return rc;
		a->has_entity = true;
	} else if (a->kind == PROTO_ANOMALY_KIND_ENTITY) {
		proto_json_err(errbuf, errlen, P ".entity: is required when kind is \"entity\"");
		return -EINVAL;
	}
	return 0;
}

/* Copies what a decoded anomaly uses: the signal and evidence slots past nsignals and
 * nevidence (most of the ~30 KiB) are left as they were; nothing reads them. A whole-struct
 * copy per message was the largest single cost of metering's decoding. */
static void anomaly_copy_used(struct proto_anomaly *dst, const struct proto_anomaly *src)
{
	size_t a = offsetof(struct proto_anomaly, signals), b, e;

	memcpy(dst, src, a + src->nsignals * sizeof(src->signals[0]));
	b = offsetof(struct proto_anomaly, has_window);
	e = offsetof(struct proto_anomaly, explanation.evidence);
	memcpy((char *)dst + b, (const char *)src + b,
	       e - b + src->explanation.nevidence * sizeof(src->explanation.evidence[0]));
	b = offsetof(struct proto_anomaly, excerpt);
	memcpy((char *)dst + b, (const char *)src + b, sizeof(*src) - b);
}

int proto_anomaly_decode(const char *buf, size_t len, struct proto_anomaly *ret, char *errbuf,
			 size_t errlen)
{
	struct proto_anomaly *a;
	cJSON *root;
	int rc;

	rc = proto_json_parse(buf, len, P, PROTO_ANOMALY_MAX_BYTES, PROTO_ANOMALY_MAX_DEPTH, true,
			      &root, errbuf, errlen);
	if (rc < 0)
		return rc;
	/* About 30 KiB: on the heap, so decoding is safe on small thread stacks. */
	a = calloc(1, sizeof(*a));
	if (a == NULL) {
		rc = -ENOMEM;
		goto out_delete_root;
	}
	rc = anomaly_from_json(root, a, errbuf, errlen);
	if (rc < 0)
		goto out_free_anomaly;
	anomaly_copy_used(ret, a);

out_free_anomaly:
	free(a);
out_delete_root:
	cJSON_Delete(root);
	return rc;
}

static int explanation_to_json(const struct proto_anomaly *a, cJSON *root, char *errbuf,
			       size_t errlen)
{
	cJSON *ex, *baseline, *evidence, *e;
	size_t i;
	int rc;

	if ((ex = cJSON_AddObjectToObject(root, "explanation")) == NULL)
		return -ENOMEM;
	if ((rc = proto_json_put_string(ex, "summary", a->explanation.summary)) < 0 ||
	    (rc = proto_json_put_string(ex, "signal", a->explanation.signal)) < 0 ||
	    (rc = proto_json_put_number(ex, "value", a->explanation.value)) < 0)
		return rc;
	if ((baseline = cJSON_AddObjectToObject(ex, "baseline")) == NULL)
		return -ENOMEM;
	if ((rc = proto_json_put_number(baseline, "low", a->explanation.baseline_low)) < 0 ||
	    (rc = proto_json_put_number(baseline, "median", a->explanation.baseline_median)) < 0 ||
	    (rc = proto_json_put_number(baseline, "high", a->explanation.baseline_high)) < 0)
		return rc;
	if (a->explanation.nevidence > PROTO_ANOMALY_EVIDENCE_MAX) {
		proto_json_err(errbuf, errlen, P ".explanation.evidence: must have at most %d items",
			       PROTO_ANOMALY_EVIDENCE_MAX);
		return -EINVAL;
	}
	if ((evidence = cJSON_AddArrayToObject(ex, "evidence")) == NULL)
		return -ENOMEM;
	for (i = 0; i < a->explanation.nevidence; i++) {
		const struct proto_anomaly_evidence *ev = &a->explanation.evidence[i];

		if ((e = cJSON_CreateObject()) == NULL || !cJSON_AddItemToArray(evidence, e)) {
			cJSON_Delete(e);
			return -ENOMEM;
		}
		if ((rc = proto_json_put_string(e, "name", ev->name)) < 0 ||
		    (ev->has_value && (rc = proto_json_put_number(e, "value", ev->value)) < 0) ||
		    (ev->has_bits && (rc = proto_json_put_number(e, "bits", ev->bits)) < 0) ||
		    (ev->has_detail && (rc = proto_json_put_string(e, "detail", ev->detail)) < 0))
			return rc;
	}
	return 0;
}

static int anomaly_to_json(const struct proto_anomaly *a, cJSON *root, char *errbuf,
			   size_t errlen)
{
	cJSON *signals, *obj;
	size_t i;
	int rc;

	if ((rc = proto_json_put_string(root, "schema", PROTO_ANOMALY_SCHEMA)) < 0 ||
	    (rc = proto_json_put_string(root, "id", a->id)) < 0 ||
	    (rc = proto_json_put_string(root, "org_id", a->org_id)) < 0 ||
	    (rc = proto_json_put_string(root, "stream", a->stream)) < 0 ||
	    (rc = proto_json_put_string(root, "event_id", a->event_id)) < 0 ||
	    (rc = proto_json_put_time(root, P, "event_ts", a->event_ts_ms, errbuf, errlen)) < 0 ||
	    (rc = proto_json_put_time(root, P, "detected_at", a->detected_at_ms, errbuf,
				      errlen)) < 0 ||
	    (rc = proto_json_put_enum(root, P, "kind", kind_names, (int)a->kind, errbuf,
				      errlen)) < 0 ||
	    (rc = proto_json_put_number(root, "score", a->score)) < 0 ||
	    (rc = proto_json_put_number(root, "p_value", a->p_value)) < 0 ||
	    (rc = proto_json_put_enum(root, P, "severity", severity_names, (int)a->severity,
				      errbuf, errlen)) < 0)
		return rc;
	if (a->nsignals > PROTO_ANOMALY_SIGNALS_MAX) {
		proto_json_err(errbuf, errlen, P ".signals: must have at most %d members",
			       PROTO_ANOMALY_SIGNALS_MAX);
		return -EINVAL;
	}
	if ((signals = cJSON_AddObjectToObject(root, "signals")) == NULL)
		return -ENOMEM;
	for (i = 0; i < a->nsignals; i++)
		if ((rc = proto_json_put_number(signals, a->signals[i].name, a->signals[i].value)) < 0)
			return rc;
	if (a->has_window) {
		if ((obj = cJSON_AddObjectToObject(root, "window")) == NULL)
			return -ENOMEM;
		if ((rc = proto_json_put_time(obj, P ".window", "start_ts", a->window.start_ts_ms,
					      errbuf, errlen)) < 0 ||
		    (rc = proto_json_put_time(obj, P ".window", "end_ts", a->window.end_ts_ms, errbuf,
					      errlen)) < 0 ||
		    (rc = proto_json_put_number(obj, "events", (double)a->window.events)) < 0)
			return rc;
	}
	if (a->has_entity) {
		if ((obj = cJSON_AddObjectToObject(root, "entity")) == NULL)
			return -ENOMEM;
		if ((rc = proto_json_put_string(obj, "field", a->entity.field)) < 0 ||
		    (rc = proto_json_put_string(obj, "value", a->entity.value)) < 0)
			return rc;
	}
	if ((rc = explanation_to_json(a, root, errbuf, errlen)) < 0 ||
	    (rc = proto_json_put_string(root, "excerpt", a->excerpt)) < 0)
		return rc;
	if ((obj = cJSON_AddObjectToObject(root, "detector")) == NULL)
		return -ENOMEM;
	if ((rc = proto_json_put_string(obj, "version", a->detector.version)) < 0 ||
	    (rc = proto_json_put_number(obj, "sensitivity", a->detector.sensitivity)) < 0)
		return rc;
	return 0;
}

/* The decoder as the encoder's check (the struct is large: on the heap). */
static int anomaly_validate(const char *json, size_t len, char *errbuf, size_t errlen)
{
	struct proto_anomaly *check = malloc(sizeof(*check));
	int rc;

	if (check == NULL)
		return -ENOMEM;
	rc = proto_anomaly_decode(json, len, check, errbuf, errlen);
	if (rc == 0)
		proto_anomaly_free(check);
	free(check);
	return rc;
}

int proto_anomaly_encode(const struct proto_anomaly *a, char **ret_json, size_t *ret_len,
			 char *errbuf, size_t errlen)
{
	cJSON *root;
	int rc;

	if (a == NULL) {
		proto_json_err(errbuf, errlen, P ": no anomaly to encode");
		return -EINVAL;
	}
	root = cJSON_CreateObject();
	if (root == NULL)
		return -ENOMEM;
	rc = anomaly_to_json(a, root, errbuf, errlen);
	if (rc < 0)
		goto out_delete_root;
	return proto_json_emit(root, anomaly_validate, ret_json, ret_len, errbuf, errlen);

out_delete_root:
	cJSON_Delete(root);
	return rc;
}

void proto_anomaly_free(struct proto_anomaly *a)
{
	if (a != NULL)
		memset(a, 0, sizeof(*a));
}
