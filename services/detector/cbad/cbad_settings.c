/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_settings: the documented defaults of a stream's detector, their validation and JSON form. */
#include "services/detector/cbad/cbad.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

/* Bounds of every setting; docs/algorithm.md explains the defaults. */
#define BASELINE_EVENTS_MIN 32u
#define BASELINE_EVENTS_MAX 65536u
#define BASELINE_BYTES_MIN 1024u
#define BASELINE_BYTES_MAX (1u << 20)
#define WINDOW_MIN 16u
#define WINDOW_MAX 65536u
#define HOP_MIN 1u
#define EVENT_BYTES_MIN 64u
#define EVENT_BYTES_MAX (1u << 20)
#define ENTITIES_MIN 1u
#define ENTITIES_MAX 1000000u

void cbad_settings_default(cbad_settings *s)
{
	memset(s, 0, sizeof(*s));
	s->baseline_events = 1000;
	s->baseline_bytes = 48 * 1024;
	s->window_events = 200;
	s->hop_events = 100;
	s->sensitivity = 0.5;
	s->zstd_level = 1;
	s->mask = CBAD_MASK_ALL;
	s->max_event_bytes = 4096;
	s->max_entities = 256;
	s->seed = 0x5eed;
}

static int fail(char *errbuf, size_t errlen, const char *msg)
{
	if (errbuf && errlen)
		snprintf(errbuf, errlen, "%s", msg);
	return -EINVAL;
}

static bool field_ok(const char *f)
{
	size_t n = strnlen(f, CBAD_FIELD_NAME_MAX);

	return n > 0 && n < CBAD_FIELD_NAME_MAX;
}

int cbad_settings_validate(const cbad_settings *s, char *errbuf, size_t errlen)
{
	if (!s)
		return fail(errbuf, errlen, "settings: NULL");
	if (s->baseline_events < BASELINE_EVENTS_MIN || s->baseline_events > BASELINE_EVENTS_MAX)
		return fail(errbuf, errlen, "baseline_events: must be 32..65536");
	if (s->baseline_bytes < BASELINE_BYTES_MIN || s->baseline_bytes > BASELINE_BYTES_MAX)
		return fail(errbuf, errlen, "baseline_bytes: must be 1024..1048576");
	if (s->window_events < WINDOW_MIN || s->window_events > WINDOW_MAX)
		return fail(errbuf, errlen, "window_events: must be 16..65536");
	if (s->hop_events < HOP_MIN || s->hop_events > s->baseline_events)
		return fail(errbuf, errlen, "hop_events: must be 1..baseline_events");
	if (!(s->sensitivity >= 0.0 && s->sensitivity <= 1.0))
		return fail(errbuf, errlen, "sensitivity: must be 0.0..1.0");
	if (s->zstd_level < 1 || s->zstd_level > 19)
		return fail(errbuf, errlen, "zstd_level: must be 1..19");
	if (s->mask & ~(uint32_t)CBAD_MASK_ALL)
		return fail(errbuf, errlen, "mask: unknown bits");
	if (s->max_event_bytes < EVENT_BYTES_MIN || s->max_event_bytes > EVENT_BYTES_MAX)
		return fail(errbuf, errlen, "max_event_bytes: must be 64..1048576");
	if (s->max_entities < ENTITIES_MIN || s->max_entities > ENTITIES_MAX)
		return fail(errbuf, errlen, "max_entities: must be 1..1000000");
	if (s->nentity_fields > CBAD_MAX_ENTITY_FIELDS)
		return fail(errbuf, errlen, "entity_fields: at most 4");
	if (s->nvalue_fields > CBAD_MAX_VALUE_FIELDS)
		return fail(errbuf, errlen, "value_fields: at most 16");
	for (size_t i = 0; i < s->nentity_fields; i++)
		if (!field_ok(s->entity_fields[i]))
			return fail(errbuf, errlen, "entity_fields: names must be 1..63 bytes");
	for (size_t i = 0; i < s->nvalue_fields; i++)
		if (!field_ok(s->value_fields[i]))
			return fail(errbuf, errlen, "value_fields: names must be 1..63 bytes");
	return 0;
}

static const char *const mask_names[] = {"timestamps", "uuids", "hex", "numbers", "ips", "emails"};

static int get_u32(const cJSON *v, const char *name, uint32_t *out, char *errbuf, size_t errlen)
{
	if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 4294967295.0 ||
	    v->valuedouble != floor(v->valuedouble)) {
		if (errbuf && errlen)
			snprintf(errbuf, errlen, "%s: must be a non-negative integer", name);
		return -EINVAL;
	}
	*out = (uint32_t)v->valuedouble;
	return 0;
}

static int get_names(const cJSON *v, const char *name, char out[][CBAD_FIELD_NAME_MAX],
		     size_t max, size_t *n, char *errbuf, size_t errlen)
{
	const cJSON *it;
	size_t k = 0;

	if (!cJSON_IsArray(v))
		goto bad;
	cJSON_ArrayForEach(it, v) {
		if (!cJSON_IsString(it) || k >= max || strlen(it->valuestring) == 0 ||
		    strlen(it->valuestring) >= CBAD_FIELD_NAME_MAX)
			goto bad;
		snprintf(out[k++], CBAD_FIELD_NAME_MAX, "%s", it->valuestring);
	}
	*n = k;
	return 0;
bad:
	if (errbuf && errlen)
		snprintf(errbuf, errlen, "%s: must be an array of at most %zu names of 1..63 bytes",
			 name, max);
	return -EINVAL;
}

int cbad_settings_apply_json(cbad_settings *s, const char *json, size_t len, char *errbuf,
			     size_t errlen)
{
	cbad_settings t = *s;
	cJSON *root, *v;
	int rc = 0;

	root = cJSON_ParseWithLength(json, len);
	if (!root || !cJSON_IsObject(root)) {
		rc = fail(errbuf, errlen, "settings: not a JSON object");
		goto out_free;
	}
	cJSON_ArrayForEach(v, root) {
		const char *k = v->string;

		if (!strcmp(k, "baseline_events"))
			rc = get_u32(v, k, &t.baseline_events, errbuf, errlen);
		else if (!strcmp(k, "baseline_bytes"))
			rc = get_u32(v, k, &t.baseline_bytes, errbuf, errlen);
		else if (!strcmp(k, "window_events"))
			rc = get_u32(v, k, &t.window_events, errbuf, errlen);
		else if (!strcmp(k, "hop_events"))
			rc = get_u32(v, k, &t.hop_events, errbuf, errlen);
		else if (!strcmp(k, "max_event_bytes"))
			rc = get_u32(v, k, &t.max_event_bytes, errbuf, errlen);
		else if (!strcmp(k, "max_entities"))
			rc = get_u32(v, k, &t.max_entities, errbuf, errlen);
		else if (!strcmp(k, "sensitivity")) {
			if (!cJSON_IsNumber(v))
				rc = fail(errbuf, errlen, "sensitivity: must be a number 0.0..1.0");
			else
				t.sensitivity = v->valuedouble;
		} else if (!strcmp(k, "zstd_level")) {
			uint32_t lv = 0;

			rc = get_u32(v, k, &lv, errbuf, errlen);
			t.zstd_level = lv > 100 ? 100 : (int)lv;
		} else if (!strcmp(k, "mask")) {
			const cJSON *it;

			t.mask = 0;
			if (!cJSON_IsArray(v))
				rc = fail(errbuf, errlen, "mask: must be an array of names");
			cJSON_ArrayForEach(it, v) {
				size_t i;

				for (i = 0; i < 6; i++)
					if (cJSON_IsString(it) && !strcmp(it->valuestring, mask_names[i]))
						break;
				if (i == 6) {
					rc = fail(errbuf, errlen,
						  "mask: names are timestamps, uuids, hex, numbers, ips, emails");
					break;
				}
				t.mask |= 1u << i;
			}
		} else if (!strcmp(k, "entity_fields"))
			rc = get_names(v, k, t.entity_fields, CBAD_MAX_ENTITY_FIELDS,
				       &t.nentity_fields, errbuf, errlen);
		else if (!strcmp(k, "value_fields"))
			rc = get_names(v, k, t.value_fields, CBAD_MAX_VALUE_FIELDS,
				       &t.nvalue_fields, errbuf, errlen);
		else {
			if (errbuf && errlen)
				snprintf(errbuf, errlen, "%s: unknown setting", k);
			rc = -EINVAL;
		}
		if (rc)
			goto out_free;
	}
	rc = cbad_settings_validate(&t, errbuf, errlen);
	if (rc == 0)
		*s = t;
out_free:
	cJSON_Delete(root);
	return rc;
}
