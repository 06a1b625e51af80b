/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_read_params: the read API's query parameters, request bodies and opaque page cursors. */
#include "services/ingest/ingest_read_params.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/dl_time.h"
#include "proto/proto_topics.h"
#include "services/detector/cbad/cbad.h"

const char *const ingest_read_statuses[] = {
	"new", "acknowledged", "investigating", "resolved", "dismissed", NULL,
};

const char *const ingest_read_severities[] = { "low", "medium", "high", "critical", NULL };

static int bad(char *param, size_t paramlen, const char *name, char *errbuf, size_t errlen,
	       const char *rule)
{
	if (param && paramlen)
		snprintf(param, paramlen, "%s", name);
	if (errbuf && errlen)
		snprintf(errbuf, errlen, "%s: %s", name, rule);
	return -EINVAL;
}

static int enum_index(const char *const *names, const char *s, size_t len)
{
	for (int i = 0; names[i]; i++)
		if (strlen(names[i]) == len && !memcmp(names[i], s, len))
			return i;
	return -1;
}

/* Counts the code points of s when it is valid UTF-8 (no overlongs, surrogates or values
 * beyond U+10FFFF); -1 otherwise. */
static long utf8_chars(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	long n = 0;

	while (*p) {
		unsigned c = *p, need;
		uint32_t cp;

		if (c < 0x80) {
			p++;
			n++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			need = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			need = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3;
			cp = c & 0x07;
		} else {
			return -1;
		}
		for (unsigned i = 1; i <= need; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return -1;
			cp = (cp << 6) | (p[i] & 0x3f);
		}
		if ((need == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
		    (need == 3 && (cp < 0x10000 || cp > 0x10ffff)))
			return -1;
		p += need + 1;
		n++;
	}
	return n;
}

static int parse_limit(ingest_read_get_fn get, void *src, int *ret, char *param, size_t paramlen,
		       char *errbuf, size_t errlen)
{
	const char *v = get(src, "limit");
	char *end;
	long n;

	*ret = INGEST_READ_LIMIT_DEFAULT;
	if (!v)
		return 0;
	errno = 0;
	n = strtol(v, &end, 10);
	if (!*v || *end || errno || n < 1 || n > INGEST_READ_LIMIT_MAX || v[0] == '+' ||
	    v[0] == ' ')
		return bad(param, paramlen, "limit", errbuf, errlen,
			   "must be an integer from 1 to 500");
	*ret = (int)n;
	return 0;
}

static int parse_cursor(ingest_read_get_fn get, void *src, char tag, bool *has,
			ingest_read_cursor *c, char *param, size_t paramlen, char *errbuf,
			size_t errlen)
{
	const char *v = get(src, "cursor");

	*has = false;
	if (!v)
		return 0;
	if (ingest_read_cursor_decode(tag, v, c) < 0)
		return bad(param, paramlen, "cursor", errbuf, errlen,
			   "must be the next_cursor of a previous page of this list");
	*has = true;
	return 0;
}

static int parse_time(ingest_read_get_fn get, void *src, const char *name, bool *has,
		      int64_t *ms, char *param, size_t paramlen, char *errbuf, size_t errlen)
{
	const char *v = get(src, name);
	char why[128];

	*has = false;
	if (!v)
		return 0;
	if (dl_time_parse_rfc3339(v, strlen(v), ms, why, sizeof(why)) < 0) {
		char rule[192];

		snprintf(rule, sizeof(rule), "must be an RFC 3339 date-time (%s)", why);
		return bad(param, paramlen, name, errbuf, errlen, rule);
	}
	*has = true;
	return 0;
}

int ingest_read_parse_anomaly_query(ingest_read_get_fn get, void *src, ingest_anomaly_query *q,
				    char *param, size_t paramlen, char *errbuf, size_t errlen)
{
	const char *v;
	int r;

	memset(q, 0, sizeof(*q));
	v = get(src, "stream");
	if (v) {
		if (proto_topics_check_stream(v, strlen(v), NULL, 0) < 0)
			return bad(param, paramlen, "stream", errbuf, errlen,
				   "must be 1-128 characters of A-Za-z0-9._:-");
		snprintf(q->stream, sizeof(q->stream), "%s", v);
		q->has_stream = true;
	}
	v = get(src, "severity");
	if (v) {
		const char *p = v;

		/* A comma-separated list; an empty item (",high" or "") is a mistake, not "all". */
		for (;;) {
			size_t len = strcspn(p, ",");
			int i = enum_index(ingest_read_severities, p, len);

			if (i < 0)
				return bad(param, paramlen, "severity", errbuf, errlen,
					   "must be a comma-separated list of low, medium, high, "
					   "critical");
			q->severity_mask |= 1u << i;
			if (!p[len])
				break;
			p += len + 1;
		}
	}
	v = get(src, "status");
	if (v) {
		if (enum_index(ingest_read_statuses, v, strlen(v)) < 0)
			return bad(param, paramlen, "status", errbuf, errlen,
				   "must be one of new, acknowledged, investigating, resolved, "
				   "dismissed");
		snprintf(q->status, sizeof(q->status), "%s", v);
		q->has_status = true;
	}
	r = parse_time(get, src, "from", &q->has_from, &q->from_ms, param, paramlen, errbuf,
		       errlen);
	if (r < 0)
		return r;
	r = parse_time(get, src, "to", &q->has_to, &q->to_ms, param, paramlen, errbuf, errlen);
	if (r < 0)
		return r;
	if (q->has_from && q->has_to && q->to_ms <= q->from_ms)
		return bad(param, paramlen, "to", errbuf, errlen, "must be later than from");
	v = get(src, "min_score");
	if (v) {
		char *end;
		double d;

		errno = 0;
		d = strtod(v, &end);
		/* strtod also reads "inf", "nan" and hex floats: only plain decimals are numbers. */
		if (!*v || *end || errno || !isfinite(d) || d < 0 ||
		    strspn(v, "0123456789.eE+-") != strlen(v))
			return bad(param, paramlen, "min_score", errbuf, errlen,
				   "must be a number >= 0");
		q->min_score = d;
		q->has_min_score = true;
	}
	r = parse_cursor(get, src, 'a', &q->has_cursor, &q->cursor, param, paramlen, errbuf,
			 errlen);
	if (r < 0)
		return r;
	return parse_limit(get, src, &q->limit, param, paramlen, errbuf, errlen);
}

int ingest_read_parse_stream_query(ingest_read_get_fn get, void *src, ingest_stream_query *q,
				   char *param, size_t paramlen, char *errbuf, size_t errlen)
{
	int r;

	memset(q, 0, sizeof(*q));
	r = parse_cursor(get, src, 's', &q->has_cursor, &q->cursor, param, paramlen, errbuf,
			 errlen);
	if (r < 0)
		return r;
	return parse_limit(get, src, &q->limit, param, paramlen, errbuf, errlen);
}

/* A cursor is base64url (no padding) of "<tag>1:<key>:<id>": opaque to clients, versioned so
 * its form can change, and checked field by field when it comes back. */
int ingest_read_cursor_encode(char tag, const ingest_read_cursor *c, char *buf, size_t buflen)
{
	char plain[200];
	unsigned char b64[4 * (sizeof(plain) + 2) / 3 + 1];
	int n, m;

	if (proto_topics_check_id(c->id, strlen(c->id), NULL, 0) < 0)
		return -EINVAL;
	n = snprintf(plain, sizeof(plain), "%c1:%" PRId64 ":%s", tag, c->key, c->id);
	if (n < 0 || (size_t)n >= sizeof(plain))
		return -EINVAL;
	m = EVP_EncodeBlock(b64, (const unsigned char *)plain, n);
	while (m > 0 && b64[m - 1] == '=')
		m--;
	if ((size_t)m >= buflen)
		return -ENOSPC;
	for (int i = 0; i < m; i++)
		buf[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : (char)b64[i];
	buf[m] = '\0';
	return 0;
}

int ingest_read_cursor_decode(char tag, const char *text, ingest_read_cursor *ret)
{
	unsigned char b64[INGEST_READ_CURSOR_MAX + 4], plain[INGEST_READ_CURSOR_MAX];
	size_t len = strnlen(text, INGEST_READ_CURSOR_MAX + 1), padded;
	ingest_read_cursor c;
	const char *p, *colon;
	char *end;
	int n, pad;

	if (len == 0 || len > INGEST_READ_CURSOR_MAX || len % 4 == 1)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		char ch = text[i];

		if (ch == '-')
			ch = '+';
		else if (ch == '_')
			ch = '/';
		else if (ch == '+' || ch == '/' || ch == '=')
			return -EINVAL;
		b64[i] = (unsigned char)ch;
	}
	padded = (len + 3) / 4 * 4;
	pad = (int)(padded - len);
	memset(b64 + len, '=', (size_t)pad);
	/* EVP_DecodeBlock refuses characters outside the alphabet and counts padding as zero
	 * bytes, which are removed here. */
	n = EVP_DecodeBlock(plain, b64, (int)padded);
	if (n < 0 || n < pad)
		return -EINVAL;
	n -= pad;
	plain[n] = '\0';
	if ((int)strlen((char *)plain) != n)
		return -EINVAL;
	p = (const char *)plain;
	if (n < 4 || p[0] != tag || p[1] != '1' || p[2] != ':')
		return -EINVAL;
	p += 3;
	colon = strchr(p, ':');
	if (!colon || colon == p || (p[0] == '-' && colon == p + 1))
		return -EINVAL;
	if (strspn(p[0] == '-' ? p + 1 : p, "0123456789") !=
	    (size_t)(colon - p) - (p[0] == '-' ? 1 : 0))
		return -EINVAL;
	errno = 0;
	c.key = strtoll(p, &end, 10);
	if (errno || end != colon)
		return -EINVAL;
	if (proto_topics_check_id(colon + 1, strlen(colon + 1), NULL, 0) < 0)
		return -EINVAL;
	snprintf(c.id, sizeof(c.id), "%s", colon + 1);
	*ret = c;
	return 0;
}

int ingest_read_parse_anomaly_patch(const cJSON *body, ingest_anomaly_patch *ret, char *errbuf,
				    size_t errlen)
{
	ingest_anomaly_patch p;
	const cJSON *m;
	bool has_status = false;

	memset(&p, 0, sizeof(p));
	if (!cJSON_IsObject(body))
		return bad(NULL, 0, "body", errbuf, errlen, "must be a JSON object");
	cJSON_ArrayForEach(m, body) {
		if (!strcmp(m->string, "status")) {
			if (!cJSON_IsString(m) ||
			    enum_index(ingest_read_statuses, m->valuestring,
				       strlen(m->valuestring)) < 0)
				return bad(NULL, 0, "status", errbuf, errlen,
					   "must be one of new, acknowledged, investigating, "
					   "resolved, dismissed");
			snprintf(p.status, sizeof(p.status), "%s", m->valuestring);
			has_status = true;
		} else if (!strcmp(m->string, "note")) {
			long chars;

			p.has_note = true;
			if (cJSON_IsNull(m)) {
				p.note_null = true;
				continue;
			}
			if (!cJSON_IsString(m))
				return bad(NULL, 0, "note", errbuf, errlen,
					   "must be a string or null");
			chars = utf8_chars(m->valuestring);
			if (chars < 0)
				return bad(NULL, 0, "note", errbuf, errlen, "must be valid UTF-8");
			if (chars > INGEST_READ_NOTE_MAX ||
			    strlen(m->valuestring) >= sizeof(p.note))
				return bad(NULL, 0, "note", errbuf, errlen,
					   "must be at most 1024 characters");
			snprintf(p.note, sizeof(p.note), "%s", m->valuestring);
		} else {
			char rule[160];

			snprintf(rule, sizeof(rule), "unknown member \"%.64s\" (allowed: status, note)",
				 m->string);
			return bad(NULL, 0, "body", errbuf, errlen, rule);
		}
	}
	if (!has_status)
		return bad(NULL, 0, "status", errbuf, errlen, "is required");
	*ret = p;
	return 0;
}

int ingest_read_parse_stream_put(const cJSON *body, ingest_stream_put *ret, char *errbuf,
				 size_t errlen)
{
	ingest_stream_put p;
	const cJSON *m;
	int r = -EINVAL;

	memset(&p, 0, sizeof(p));
	if (!cJSON_IsObject(body))
		return bad(NULL, 0, "body", errbuf, errlen, "must be a JSON object");
	cJSON_ArrayForEach(m, body) {
		if (!strcmp(m->string, "sensitivity")) {
			p.has_sensitivity = true;
			if (cJSON_IsNull(m)) {
				p.sensitivity_null = true;
				continue;
			}
			if (!cJSON_IsNumber(m) || !(m->valuedouble >= 0 && m->valuedouble <= 1)) {
				bad(NULL, 0, "sensitivity", errbuf, errlen,
				    "must be a number from 0.0 to 1.0, or null for the org's");
				goto out_clear;
			}
			p.sensitivity = m->valuedouble;
		} else if (!strcmp(m->string, "settings")) {
			cbad_settings s;
			char why[160], rule[200];

			if (!cJSON_IsObject(m)) {
				bad(NULL, 0, "settings", errbuf, errlen, "must be a JSON object");
				goto out_clear;
			}
			if (cJSON_GetObjectItemCaseSensitive(m, "sensitivity")) {
				bad(NULL, 0, "settings.sensitivity", errbuf, errlen,
				    "is set with the top-level \"sensitivity\"");
				goto out_clear;
			}
			free(p.settings_json);
			p.settings_json = cJSON_PrintUnformatted(m);
			if (!p.settings_json) {
				r = -ENOMEM;
				goto out_clear;
			}
			if (strlen(p.settings_json) > INGEST_READ_SETTINGS_MAX) {
				bad(NULL, 0, "settings", errbuf, errlen,
				    "must be at most 16384 bytes as JSON");
				goto out_clear;
			}
			/* The engine is the judge of what it accepts: the same function the
			 * detector applies the stored object with. */
			cbad_settings_default(&s);
			if (cbad_settings_apply_json(&s, p.settings_json, strlen(p.settings_json),
						     why, sizeof(why)) < 0) {
				snprintf(rule, sizeof(rule), "%s", why);
				if (errbuf && errlen)
					snprintf(errbuf, errlen, "settings.%s", rule);
				goto out_clear;
			}
		} else {
			char rule[160];

			snprintf(rule, sizeof(rule),
				 "unknown member \"%.64s\" (allowed: sensitivity, settings)",
				 m->string);
			bad(NULL, 0, "body", errbuf, errlen, rule);
			goto out_clear;
		}
	}
	if (!p.has_sensitivity && !p.settings_json) {
		bad(NULL, 0, "body", errbuf, errlen, "must set sensitivity, settings or both");
		goto out_clear;
	}
	*ret = p;
	return 0;

out_clear:
	ingest_stream_put_clear(&p);
	return r;
}

void ingest_stream_put_clear(ingest_stream_put *p)
{
	if (!p)
		return;
	free(p->settings_json);
	memset(p, 0, sizeof(*p));
}
