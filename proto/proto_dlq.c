/* SPDX-License-Identifier: Apache-2.0 */
/* proto_dlq: JSON codec of dead letters, with the base64 (RFC 4648, padded) of raw bytes. */
#include "proto/proto_dlq.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "proto/proto_json.h"

const char *const proto_dlq_required_fields[] = {
	"schema", "source_topic", "source_partition", "source_offset", "key", "value", "headers",
	"headers[].key", "headers[].value_b64", "reason", "reason.code", "reason.message",
	"service", "failed_at", NULL,
};

#define P "dlq"

static const char b64_chars[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Returns a malloc'ed string, or NULL when out of memory. */
static char *b64_encode(const uint8_t *src, size_t len)
{
	char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;
	size_t i;

	if (out == NULL)
		return NULL;
	for (i = 0; i + 2 < len; i += 3) {
		*o++ = b64_chars[src[i] >> 2];
		*o++ = b64_chars[((src[i] & 3) << 4) | (src[i + 1] >> 4)];
		*o++ = b64_chars[((src[i + 1] & 15) << 2) | (src[i + 2] >> 6)];
		*o++ = b64_chars[src[i + 2] & 63];
	}
	if (i < len) {
		*o++ = b64_chars[src[i] >> 2];
		if (i + 1 < len) {
			*o++ = b64_chars[((src[i] & 3) << 4) | (src[i + 1] >> 4)];
			*o++ = b64_chars[(src[i + 1] & 15) << 2];
		} else {
			*o++ = b64_chars[(src[i] & 3) << 4];
			*o++ = '=';
		}
		*o++ = '=';
	}
	*o = '\0';
	return out;
}

/* Strict decoding: length a multiple of 4, '=' only as final padding, unused bits zero.
 * -EINVAL for bad text, -EMSGSIZE past max_out, -ENOMEM; outputs untouched on failure. */
static int b64_decode(const char *s, size_t max_out, uint8_t **ret, size_t *ret_len)
{
	size_t len = strlen(s), pad = 0, out_len, i, o = 0;
	uint8_t *out;
	int v[4], j;

	if (len % 4 != 0)
		return -EINVAL;
	if (len > 0 && s[len - 1] == '=')
		pad = (len > 1 && s[len - 2] == '=') ? 2 : 1;
	out_len = len / 4 * 3 - pad;
	if (out_len > max_out)
		return -EMSGSIZE;
	out = malloc(out_len + 1);
	if (out == NULL)
		return -ENOMEM;
	for (i = 0; i < len; i += 4) {
		bool last = i + 4 == len;

		for (j = 0; j < 4; j++) {
			v[j] = b64_value((unsigned char)s[i + j]);
			if (v[j] < 0 && !(last && j >= 4 - (int)pad))
				goto out_invalid;
			if (v[j] < 0)
				v[j] = 0;
		}
		if ((last && pad == 2 && (v[1] & 15)) || (last && pad == 1 && (v[2] & 3)))
			goto out_invalid;
		out[o++] = (uint8_t)((v[0] << 2) | (v[1] >> 4));
		if (o < out_len)
			out[o++] = (uint8_t)(((v[1] & 15) << 4) | (v[2] >> 2));
		if (o < out_len)
			out[o++] = (uint8_t)(((v[2] & 3) << 6) | v[3]);
	}
	*ret = out;
	*ret_len = out_len;
	return 0;

out_invalid:
	free(out);
	return -EINVAL;
}

/* A required member holding base64 (or null when nullable). *ret_present is false for null. */
static int bytes_from_json(const cJSON *obj, const char *path, const char *name, bool nullable,
			   size_t max, uint8_t **ret, size_t *ret_len, bool *ret_present,
			   char *errbuf, size_t errlen)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
	int rc;

	if (it == NULL) {
		proto_json_err(errbuf, errlen, "%s.%s: is required", path, name);
		return -EINVAL;
	}
	if (nullable && cJSON_IsNull(it)) {
		*ret_present = false;
		return 0;
	}
	if (!cJSON_IsString(it) || it->valuestring == NULL) {
		proto_json_err(errbuf, errlen, "%s.%s: must be a base64 string%s", path, name,
			       nullable ? " or null" : "");
		return -EINVAL;
	}
	rc = b64_decode(it->valuestring, max, ret, ret_len);
	if (rc == -EINVAL)
		proto_json_err(errbuf, errlen, "%s.%s: must be padded base64 (RFC 4648)", path, name);
	else if (rc == -EMSGSIZE)
		proto_json_err(errbuf, errlen, "%s.%s: must decode to at most %zu bytes", path, name,
			       max);
	if (rc < 0)
		return rc == -EMSGSIZE ? -EINVAL : rc;
	*ret_present = true;
	return 0;
}

static int headers_from_json(const cJSON *arr, struct proto_dlq *d, char *errbuf, size_t errlen)
{
	const cJSON *it;
	char path[32];
	size_t n = (size_t)cJSON_GetArraySize(arr), i = 0;
	int rc;

	if (n > PROTO_DLQ_HEADERS_MAX) {
		proto_json_err(errbuf, errlen, P ".headers: must have at most %d items",
			       PROTO_DLQ_HEADERS_MAX);
		return -EINVAL;
	}
	if (n == 0)
		return 0;
	d->headers = calloc(n, sizeof(*d->headers));
	if (d->headers == NULL)
		return -ENOMEM;
	for (it = arr->child; it != NULL; it = it->next, i++) {
		struct proto_dlq_header *h = &d->headers[i];

		snprintf(path, sizeof(path), P ".headers[%zu]", i);
		if (!cJSON_IsObject(it)) {
			proto_json_err(errbuf, errlen, "%s: must be an object", path);
			return -EINVAL;
		}
		rc = proto_json_string(it, path, "key", true, PROTO_JSON_TEXT, 1,
				       PROTO_DLQ_HEADER_KEY_MAX, h->key, sizeof(h->key), NULL, errbuf,
				       errlen);
		if (rc < 0)
			return rc;
		rc = bytes_from_json(it, path, "value_b64", true, PROTO_DLQ_HEADER_VALUE_MAX,
				     &h->value, &h->value_len, &h->has_value, errbuf, errlen);
		if (rc < 0)
			return rc;
		/* Counted as each one is complete, so proto_dlq_free releases exactly these. */
		d->nheaders = i + 1;
	}
	return 0;
}

static int dlq_from_json(const cJSON *root, struct proto_dlq *d, char *errbuf, size_t errlen)
{
	const cJSON *headers, *reason;
	bool present;
	int64_t partition;
	int rc;

	if ((rc = proto_json_schema(root, P, PROTO_DLQ_SCHEMA, errbuf, errlen)) < 0 ||
	    (rc = proto_json_string(root, P, "source_topic", true, PROTO_JSON_TOPIC, 1,
				    PROTO_DLQ_TOPIC_MAX, d->source_topic, sizeof(d->source_topic),
				    NULL, errbuf, errlen)) < 0 ||
	    (rc = proto_json_int(root, P, "source_partition", true, 0, INT32_MAX, &partition, NULL,
				 errbuf, errlen)) < 0 ||
	    (rc = proto_json_int(root, P, "source_offset", true, 0, PROTO_JSON_INT_MAX,
				 &d->source_offset, NULL, errbuf, errlen)) < 0 ||
	    (rc = bytes_from_json(root, P, "key", true, PROTO_DLQ_KEY_MAX, &d->key, &d->key_len,
				  &d->has_key, errbuf, errlen)) < 0 ||
	    (rc = bytes_from_json(root, P, "value", false, PROTO_DLQ_VALUE_MAX, &d->value,
				  &d->value_len, &present, errbuf, errlen)) < 0 ||
	    (rc = proto_json_container(root, P, "headers", true, cJSON_Array, &headers, errbuf,
				       errlen)) < 0 ||
	    (rc = headers_from_json(headers, d, errbuf, errlen)) < 0 ||
	    (rc = proto_json_container(root, P, "reason", true, cJSON_Object, &reason, errbuf,
				       errlen)) < 0 ||
	    (rc = proto_json_string(reason, P ".reason", "code", true, PROTO_JSON_SNAKE, 1,
				    PROTO_DLQ_NAME_MAX, d->reason_code, sizeof(d->reason_code), NULL,
				    errbuf, errlen)) < 0 ||
	    (rc = proto_json_string(reason, P ".reason", "message", true, PROTO_JSON_TEXT, 1,
				    PROTO_DLQ_MESSAGE_MAX, d->reason_message,
				    sizeof(d->reason_message), NULL, errbuf, errlen)) < 0 ||
	    (rc = proto_json_string(root, P, "service", true, PROTO_JSON_SLUG, 1,
				    PROTO_DLQ_NAME_MAX, d->service, sizeof(d->service), NULL, errbuf,
				    errlen)) < 0 ||
	    (rc = proto_json_time(root, P, "failed_at", true, &d->failed_at_ms, NULL, errbuf,
				  errlen)) < 0)
		return rc;
	d->source_partition = (int32_t)partition;
	return 0;
}

int proto_dlq_decode(const char *buf, size_t len, struct proto_dlq *ret, char *errbuf,
		     size_t errlen)
{
	struct proto_dlq d;
	cJSON *root;
	int rc;

	rc = proto_json_parse(buf, len, P, PROTO_DLQ_MAX_BYTES, PROTO_DLQ_MAX_DEPTH, true, &root,
			      errbuf, errlen);
	if (rc < 0)
		return rc;
	memset(&d, 0, sizeof(d));
	rc = dlq_from_json(root, &d, errbuf, errlen);
	if (rc < 0)
		goto out_free_dlq;
	*ret = d;
	cJSON_Delete(root);
	return 0;

out_free_dlq:
	proto_dlq_free(&d);
	cJSON_Delete(root);
	return rc;
}

static int put_bytes(cJSON *obj, const char *name, bool present, const uint8_t *src, size_t len)
{
	char *b64;
	int rc;

	if (!present)
		return cJSON_AddNullToObject(obj, name) != NULL ? 0 : -ENOMEM;
	b64 = b64_encode(src, len);
	if (b64 == NULL)
		return -ENOMEM;
	rc = proto_json_put_string(obj, name, b64);
	free(b64);
	return rc;
}

static int dlq_to_json(const struct proto_dlq *d, cJSON *root, char *errbuf, size_t errlen)
{
	cJSON *headers, *h, *reason;
	size_t i;
	int rc;

	if ((d->value == NULL && d->value_len > 0) || (d->has_key && d->key == NULL && d->key_len)) {
		proto_json_err(errbuf, errlen, P ": bytes missing for a non-zero length");
		return -EINVAL;
	}
	if (d->nheaders > PROTO_DLQ_HEADERS_MAX) {
		proto_json_err(errbuf, errlen, P ".headers: must have at most %d items",
			       PROTO_DLQ_HEADERS_MAX);
		return -EINVAL;
	}
	if ((rc = proto_json_put_string(root, "schema", PROTO_DLQ_SCHEMA)) < 0 ||
	    (rc = proto_json_put_string(root, "source_topic", d->source_topic)) < 0 ||
	    (rc = proto_json_put_number(root, "source_partition", d->source_partition)) < 0 ||
	    (rc = proto_json_put_number(root, "source_offset", (double)d->source_offset)) < 0 ||
	    (rc = put_bytes(root, "key", d->has_key, d->key, d->key_len)) < 0 ||
	    (rc = put_bytes(root, "value", true, d->value, d->value_len)) < 0)
		return rc;
	if ((headers = cJSON_AddArrayToObject(root, "headers")) == NULL)
		return -ENOMEM;
	for (i = 0; i < d->nheaders; i++) {
		if ((h = cJSON_CreateObject()) == NULL || !cJSON_AddItemToArray(headers, h)) {
			cJSON_Delete(h);
			return -ENOMEM;
		}
		if ((rc = proto_json_put_string(h, "key", d->headers[i].key)) < 0 ||
		    (rc = put_bytes(h, "value_b64", d->headers[i].has_value, d->headers[i].value,
				    d->headers[i].value_len)) < 0)
			return rc;
	}
	if ((reason = cJSON_AddObjectToObject(root, "reason")) == NULL)
		return -ENOMEM;
	if ((rc = proto_json_put_string(reason, "code", d->reason_code)) < 0 ||
	    (rc = proto_json_put_string(reason, "message", d->reason_message)) < 0 ||
	    (rc = proto_json_put_string(root, "service", d->service)) < 0 ||
	    (rc = proto_json_put_time(root, P, "failed_at", d->failed_at_ms, errbuf, errlen)) < 0)
		return rc;
	return 0;
}

/* The decoder as the encoder's check. */
static int dlq_validate(const char *json, size_t len, char *errbuf, size_t errlen)
{
	struct proto_dlq check;
	int rc = proto_dlq_decode(json, len, &check, errbuf, errlen);

	if (rc == 0)
		proto_dlq_free(&check);
	return rc;
}

int proto_dlq_encode(const struct proto_dlq *d, char **ret_json, size_t *ret_len, char *errbuf,
		     size_t errlen)
{
	cJSON *root;
	int rc;

	if (d == NULL) {
		proto_json_err(errbuf, errlen, P ": no dead letter to encode");
		return -EINVAL;
	}
	if (d->source_offset > PROTO_JSON_INT_MAX) {
		proto_json_err(errbuf, errlen, P ".source_offset: must be at most 9007199254740991");
		return -ERANGE;
	}
	root = cJSON_CreateObject();
	if (root == NULL)
		return -ENOMEM;
	rc = dlq_to_json(d, root, errbuf, errlen);
	if (rc < 0)
		goto out_delete_root;
	return proto_json_emit(root, dlq_validate, ret_json, ret_len, errbuf, errlen);

out_delete_root:
	cJSON_Delete(root);
	return rc;
}

void proto_dlq_free(struct proto_dlq *d)
{
	size_t i;

	if (d == NULL)
		return;
	for (i = 0; i < d->nheaders; i++)
		free(d->headers[i].value);
	free(d->headers);
	free(d->key);
	free(d->value);
	memset(d, 0, sizeof(*d));
}
