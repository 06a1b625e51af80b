/* SPDX-License-Identifier: Apache-2.0 */
/* ingest_body: decodes and splits a POST /v1/events body into validated events in one pass. */
#include "services/ingest/ingest_body.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "common/dl_id.h"
#include "common/dl_time.h"
#include "proto/proto_json.h"
#include "proto/proto_json_scan.h"

_Static_assert(INGEST_BODY_MAX_DEPTH_CAP <= 64, "the container stack is one 64-bit word");

/* First size of the decompression buffer, before doubling up to the cap. */
#define DECODE_MIN_ALLOC (16 * 1024)
/* zstd's smallest window log and the largest its decoder accepts by default (zstd.h defines
 * them only for static linking). */
#define ZSTD_WLOG_MIN 10
#define ZSTD_WLOG_MAX 27

const char *const ingest_body_reject_codes[] = {
	"invalid_json",	  "not_an_object", "event_too_large", "too_deep", "missing_stream",
	"invalid_stream", "invalid_ts",	   "ts_out_of_range", "invalid_id", NULL,
};

enum body_format { FMT_JSON, FMT_NDJSON };
enum body_encoding { ENC_IDENTITY, ENC_GZIP, ENC_ZSTD };

/* A body-level failure: what ingest_body_parse reports. */
struct refusal {
	int status;
	const char *code;
	char message[256];
};

/* Why one event was rejected. */
struct verdict {
	const char *code;
	char message[256];
};

/* The members of an event's top level that DriftLock reads (the first occurrence wins). */
enum { MEMBER_STREAM, MEMBER_TS, MEMBER_ID, MEMBER_COUNT, MEMBER_NONE = -1 };

static const char *const member_names[MEMBER_COUNT] = { "stream", "ts", "id" };

struct parser {
	const unsigned char *p;
	size_t len;
	const ingest_body_limits *lim;
	size_t max_event_bytes;
	int max_depth;
	const char *default_stream;
	int64_t now_ms;
	ingest_body_batch *b;
	size_t cap_events, cap_rejects;
	struct refusal *ref;
};

static int refuse(struct refusal *r, int status, const char *code, int err, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

/* Fills r and returns err, so callers can `return refuse(...)`. */
static int refuse(struct refusal *r, int status, const char *code, int err, const char *fmt, ...)
{
	va_list ap;

	r->status = status;
	r->code = code;
	va_start(ap, fmt);
	vsnprintf(r->message, sizeof(r->message), fmt, ap);
	va_end(ap);
	return err;
}

static int reject(struct verdict *v, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Fills v and returns -EINVAL. */
static int reject(struct verdict *v, const char *code, const char *fmt, ...)
{
	va_list ap;

	v->code = code;
	va_start(ap, fmt);
	vsnprintf(v->message, sizeof(v->message), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* Copies at most 32 bytes of a client's header value for an error message, printable ASCII
 * only, so the reply stays valid UTF-8 and short. */
static const char *quote_header(const char *s, char *dst, size_t dstsz)
{
	size_t i;

	for (i = 0; s[i] != '\0' && i < 32 && i + 1 < dstsz; i++)
		dst[i] = (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"') ? s[i] : '?';
	dst[i] = '\0';
	return dst;
}

static bool is_ows(char c)
{
	return c == ' ' || c == '\t';
}

/* Reads "type/subtype; charset=utf-8" (media type case-insensitive, other parameters
 * ignored) into *ret. Returns 0 or -ENOTSUP with r filled. */
static int read_content_type(const char *ct, enum body_format *ret, struct refusal *r)
{
	static const char hint[] = "use application/json or application/x-ndjson";
	char shown[40];
	const char *s, *e, *param;
	size_t n;

	if (ct == NULL)
		return refuse(r, 415, "unsupported_media_type", -ENOTSUP,
			      "Content-Type is missing: %s", hint);
	for (s = ct; is_ows(*s); s++)
		;
	for (e = s; *e != '\0' && *e != ';' && !is_ows(*e); e++)
		;
	n = (size_t)(e - s);
	if (n == strlen("application/json") && strncasecmp(s, "application/json", n) == 0)
		*ret = FMT_JSON;
	else if (n == strlen("application/x-ndjson") &&
		 strncasecmp(s, "application/x-ndjson", n) == 0)
		*ret = FMT_NDJSON;
	else
		return refuse(r, 415, "unsupported_media_type", -ENOTSUP,
			      "Content-Type \"%s\" is not supported: %s",
			      quote_header(ct, shown, sizeof(shown)), hint);
	for (param = strchr(e, ';'); param != NULL; param = strchr(param + 1, ';')) {
		const char *v = param + 1;

		while (is_ows(*v))
			v++;
		if (strncasecmp(v, "charset=", 8) != 0)
			continue;
		v += 8;
		if (*v == '"')
			v++;
		if (strncasecmp(v, "utf-8", 5) != 0 ||
		    (v[5] != '\0' && v[5] != ';' && v[5] != '"' && !is_ows(v[5])))
			return refuse(r, 415, "unsupported_media_type", -ENOTSUP,
				      "Content-Type charset must be utf-8");
	}
	return 0;
}

/* Reads one content coding (identity, gzip, x-gzip, zstd; case-insensitive, NULL or empty =
 * identity). Returns 0 or -ENOTSUP with r filled. */
static int read_content_encoding(const char *ce, enum body_encoding *ret, struct refusal *r)
{
	char shown[40];
	const char *s, *e;
	size_t n;

	if (ce == NULL) {
		*ret = ENC_IDENTITY;
		return 0;
	}
	for (s = ce; is_ows(*s); s++)
		;
	for (e = s + strlen(s); e > s && is_ows(e[-1]); e--)
		;
	n = (size_t)(e - s);
	if (n == 0 || (n == 8 && strncasecmp(s, "identity", 8) == 0))
		*ret = ENC_IDENTITY;
	else if ((n == 4 && strncasecmp(s, "gzip", 4) == 0) ||
		 (n == 6 && strncasecmp(s, "x-gzip", 6) == 0))
		*ret = ENC_GZIP;
	else if (n == 4 && strncasecmp(s, "zstd", 4) == 0)
		*ret = ENC_ZSTD;
	else
		return refuse(r, 415, "unsupported_media_type", -ENOTSUP,
			      "Content-Encoding \"%s\" is not supported: use gzip, zstd or none",
			      quote_header(ce, shown, sizeof(shown)));
	return 0;
}

/* Grows the decode buffer (doubling, never past cap bytes). Returns 0 or -ENOMEM. */
static int grow(char **buf, size_t *size, size_t cap)
{
	size_t want = *size < DECODE_MIN_ALLOC ? DECODE_MIN_ALLOC : *size * 2;
	char *nb;

	if (want > cap || want < *size)
		want = cap;
	nb = realloc(*buf, want);
	if (nb == NULL)
		return -ENOMEM;
	*buf = nb;
	*size = want;
	return 0;
}

static int too_large(struct refusal *r, size_t max)
{
	return refuse(r, 413, "payload_too_large", -EMSGSIZE,
		      "body: more than %zu bytes after decompression", max);
}

/* Inflates gzip members into a new buffer (*ret, caller frees, with room for a NUL after
 * *ret_len bytes). The buffer never grows past max + 1 bytes: one more than allowed, so that
 * going over is seen without decoding further. */
static int inflate_gzip(const char *in, size_t len, size_t max, char **ret, size_t *ret_len,
			struct refusal *r)
{
	z_stream zs;
	char *out = NULL;
	size_t size = 0, cap = max + 1, used = 0, off = 0;
	int zr = Z_OK, err;

	memset(&zs, 0, sizeof(zs));
	if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
		return refuse(r, 500, "internal_error", -ENOMEM, "body: cannot start gzip decoding");
	for (;;) {
		size_t in_chunk = len - off < UINT_MAX ? len - off : UINT_MAX;
		size_t out_room;

		if (used == size) {
			if (size == cap) {
				err = too_large(r, max);
				goto out_end;
			}
			if (grow(&out, &size, cap) < 0) {
				err = refuse(r, 500, "internal_error", -ENOMEM, "out of memory");
				goto out_end;
			}
		}
		out_room = size - used < UINT_MAX ? size - used : UINT_MAX;
		zs.next_in = (Bytef *)(in + off);
		zs.avail_in = (uInt)in_chunk;
		zs.next_out = (Bytef *)(out + used);
		zs.avail_out = (uInt)out_room;
		zr = inflate(&zs, Z_NO_FLUSH);
		off += in_chunk - zs.avail_in;
		used += out_room - zs.avail_out;
		if (zr == Z_STREAM_END) {
			if (off == len)
				break;
			/* Another gzip member follows (as `cat a.gz b.gz` makes). */
			if (inflateReset(&zs) != Z_OK) {
				err = refuse(r, 400, "invalid_body", -EBADMSG,
					     "body: corrupt gzip data");
				goto out_end;
			}
			continue;
		}
		if (zr == Z_MEM_ERROR) {
			err = refuse(r, 500, "internal_error", -ENOMEM, "out of memory");
			goto out_end;
		}
		if (zr != Z_OK && zr != Z_BUF_ERROR) {
			err = refuse(r, 400, "invalid_body", -EBADMSG, "body: corrupt gzip data (%s)",
				     zs.msg != NULL ? zs.msg : "inflate failed");
			goto out_end;
		}
		if (off == len && used < size) {
			err = refuse(r, 400, "invalid_body", -EBADMSG, "body: gzip data is truncated");
			goto out_end;
		}
	}
	if (used > max) {
		err = too_large(r, max);
		goto out_end;
	}
	if (used == size) {
		/* Room for the NUL the caller adds. */
		char *nb = realloc(out, used + 1);

		if (nb == NULL) {
			err = refuse(r, 500, "internal_error", -ENOMEM, "out of memory");
			goto out_end;
		}
		out = nb;
	}
	inflateEnd(&zs);
	*ret = out;
	*ret_len = used;
	return 0;

out_end:
	inflateEnd(&zs);
	free(out);
	return err;
}

/* The smallest window log that covers max bytes, within what zstd accepts. */
static int zstd_window_log(size_t max)
{
	int wlog = ZSTD_WLOG_MIN;

	while (wlog < ZSTD_WLOG_MAX && ((size_t)1 << wlog) < max)
		wlog++;
	return wlog;
}

/* Decompresses zstd frames into a new buffer like inflate_gzip's. A frame that declares a
 * window larger than max is refused before its window is allocated. */
static int decompress_zstd(const char *in, size_t len, size_t max, char **ret, size_t *ret_len,
			   struct refusal *r)
{
	ZSTD_DCtx *dctx = ZSTD_createDCtx();
	ZSTD_inBuffer zin = { in, len, 0 };
	ZSTD_outBuffer zout = { NULL, 0, 0 };
	char *out = NULL;
	size_t size = 0, cap = max + 1, zr = 1;
	int err;

	if (dctx == NULL)
		return refuse(r, 500, "internal_error", -ENOMEM, "out of memory");
	if (ZSTD_isError(ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, zstd_window_log(max)))) {
		err = refuse(r, 500, "internal_error", -ENOMEM, "body: cannot start zstd decoding");
		goto out_free_dctx;
	}
	for (;;) {
		if (zout.pos == size) {
			if (size == cap) {
				err = too_large(r, max);
				goto out_free_out;
			}
			if (grow(&out, &size, cap) < 0) {
				err = refuse(r, 500, "internal_error", -ENOMEM, "out of memory");
				goto out_free_out;
			}
			zout.dst = out;
			zout.size = size;
		}
		zr = ZSTD_decompressStream(dctx, &zout, &zin);
		if (ZSTD_isError(zr)) {
			if (ZSTD_getErrorCode(zr) == ZSTD_error_frameParameter_windowTooLarge)
				err = refuse(r, 413, "payload_too_large", -EMSGSIZE,
					     "body: the zstd frame needs a window larger than %zu "
					     "bytes (the body limit); compress with a lower level",
					     max);
			else if (ZSTD_getErrorCode(zr) == ZSTD_error_memory_allocation)
				err = refuse(r, 500, "internal_error", -ENOMEM, "out of memory");
			else
				err = refuse(r, 400, "invalid_body", -EBADMSG,
					     "body: corrupt zstd data (%s)", ZSTD_getErrorName(zr));
			goto out_free_out;
		}
		if (zin.pos == zin.size && zout.pos < zout.size) {
			/* All input read and all output flushed: done unless a frame is unfinished. */
			if (zr != 0) {
				err = refuse(r, 400, "invalid_body", -EBADMSG,
					     "body: zstd data is truncated");
				goto out_free_out;
			}
			break;
		}
	}
	/* The loop ends with zout.pos < zout.size: there is room for the caller's NUL. */
	ZSTD_freeDCtx(dctx);
	*ret = out;
	*ret_len = zout.pos;
	return 0;

out_free_out:
	free(out);
out_free_dctx:
	ZSTD_freeDCtx(dctx);
	return err;
}

/* ---- JSON scanning ---------------------------------------------------------------------- */

static bool is_ws(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* Finds the end of the value at p[i] without validating it (strings and brackets only), to
 * step over a rejected array element. Returns 0 with *ret_end, or -EINVAL when no end can be
 * told before `end`. */
static int skip_value(const unsigned char *p, size_t i, size_t end, size_t *ret_end)
{
	size_t start = i;
	long depth = 0;

	do {
		unsigned char c = p[i];

		if (c == '"') {
			for (i++; i < end && p[i] != '"'; i++)
				if (p[i] == '\\')
					i++;
			if (i >= end)
				return -EINVAL;
		} else if (c == '{' || c == '[') {
			depth++;
		} else if (c == '}' || c == ']') {
			if (--depth < 0)
				return -EINVAL;
		} else if (depth == 0 && (c == ',' || is_ws(c))) {
			break;
		}
		i++;
	} while (i < end && depth > 0);
	if (depth > 0 || i == start)
		return -EINVAL;
	/* A scalar runs until a delimiter. */
	if (p[start] != '{' && p[start] != '[' && p[start] != '"')
		while (i < end && p[i] != ',' && p[i] != ']' && p[i] != '}' && !is_ws(p[i]))
			i++;
	*ret_end = i;
	return 0;
}

/* ---- events ----------------------------------------------------------------------------- */

static int add_reject(struct parser *ps, size_t index, const char *code, const char *message)
{
	ingest_body_batch *b = ps->b;
	ingest_body_reject *rj;

	if (b->nrejects == ps->cap_rejects) {
		size_t n = ps->cap_rejects ? ps->cap_rejects * 2 : 16;
		ingest_body_reject *nr = realloc(b->rejects, n * sizeof(*nr));

		if (nr == NULL)
			return refuse(ps->ref, 500, "internal_error", -ENOMEM, "out of memory");
		b->rejects = nr;
		ps->cap_rejects = n;
	}
	rj = &b->rejects[b->nrejects++];
	rj->index = index;
	snprintf(rj->code, sizeof(rj->code), "%s", code);
	snprintf(rj->message, sizeof(rj->message), "%s", message);
	return 0;
}

static ingest_body_event *new_event(struct parser *ps)
{
	ingest_body_batch *b = ps->b;

	if (b->nevents == ps->cap_events) {
		/* First guess: an event per 128 bytes, so a batch rarely grows the array. */
		size_t n = ps->cap_events ? ps->cap_events * 2 : ps->len / 128 + 4;
		ingest_body_event *ne;

		if (ps->cap_events == 0 && n > ps->lim->max_events + 1)
			n = ps->lim->max_events + 1;
		ne = realloc(b->events, n * sizeof(*ne));

		if (ne == NULL)
			return NULL;
		b->events = ne;
		ps->cap_events = n;
	}
	return &b->events[b->nevents];
}

/* Reads stream, ts and id from the members the scan found into ev, or rejects with v. */
static int read_members(const struct parser *ps, const struct proto_json_member m[MEMBER_COUNT],
			ingest_body_event *ev, struct verdict *v)
{
	const unsigned char *p = ps->p;
	char text[DL_TIME_RFC3339_BUFSZ + 64], why[128];
	int n;

	if (!m[MEMBER_STREAM].seen) {
		if (ps->default_stream == NULL)
			return reject(v, "missing_stream",
				      "event.stream: is required (or give ?stream= on the request)");
		snprintf(ev->stream, sizeof(ev->stream), "%s", ps->default_stream);
	} else {
		const struct proto_json_member *s = &m[MEMBER_STREAM];

		if (s->type != 's')
			return reject(v, "invalid_stream", "event.stream: must be a string");
		n = s->len > 6 * 128 ? -1 : proto_json_unescape_ascii(p + s->off, s->len, ev->stream,
							   sizeof(ev->stream));
		if (n < 0 || !dl_id_is_valid_token(ev->stream, PROTO_STREAM_MAX))
			return reject(v, "invalid_stream",
				      "event.stream: must be 1-128 characters of A-Za-z0-9._:-");
	}

	ev->ts_ms = ps->now_ms;
	if (m[MEMBER_TS].seen) {
		const struct proto_json_member *t = &m[MEMBER_TS];
		int64_t ms;

		if (t->type == 's') {
			n = t->len > sizeof(text) ? -1 :
						    proto_json_unescape_ascii(p + t->off, t->len, text,
								   sizeof(text));
			if (n < 0)
				return reject(v, "invalid_ts",
					      "event.ts: not an RFC 3339 date-time (too long)");
			if (dl_time_parse_rfc3339(text, (size_t)n, &ms, why, sizeof(why)) < 0)
				return reject(v, "invalid_ts", "event.ts: %s", why);
		} else if (t->type == 'n') {
			size_t k = p[t->off] == '-' ? 1 : 0;

			while (k < t->len && is_digit(p[t->off + k]))
				k++;
			if (k != t->len)
				return reject(v, "invalid_ts",
					      "event.ts: must be whole epoch milliseconds (no "
					      "fraction or exponent) or an RFC 3339 string");
			if (dl_time_parse_epoch_ms((const char *)p + t->off, t->len, &ms, why,
						   sizeof(why)) < 0)
				return reject(v, "ts_out_of_range", "event.ts: %s", why);
		} else {
			return reject(v, "invalid_ts",
				      "event.ts: must be an RFC 3339 string or epoch milliseconds");
		}
		if (ms < INGEST_BODY_TS_MIN_MS)
			return reject(v, "ts_out_of_range",
				      "event.ts: %lld is before 2000-01-01T00:00:00Z (numbers are "
				      "epoch milliseconds, not seconds)",
				      (long long)ms);
		if (ms > ps->now_ms + INGEST_BODY_TS_MAX_AHEAD_MS)
			return reject(v, "ts_out_of_range",
				      "event.ts: more than 24 hours after the time it was received");
		ev->ts_ms = ms;
	}

	ev->client_id[0] = '\0';
	if (m[MEMBER_ID].seen) {
		const struct proto_json_member *d = &m[MEMBER_ID];

		if (d->type != 's')
			return reject(v, "invalid_id", "event.id: must be a string");
		n = d->len > 6 * DL_ID_TOKEN_MAX ?
			    -1 :
			    proto_json_unescape_ascii(p + d->off, d->len, ev->client_id, sizeof(ev->client_id));
		if (n < 0 || !dl_id_is_valid_token(ev->client_id, DL_ID_TOKEN_MAX)) {
			ev->client_id[0] = '\0';
			return reject(v, "invalid_id",
				      "event.id: must be 1-128 characters of A-Za-z0-9._:-");
		}
	}
	return 0;
}

/* Validates the event object at [start, lim) and accepts or rejects it as number `index`.
 * whole: the object must fill the span (an NDJSON line). *ret_scanned tells whether the object
 * could be scanned to its end, *ret_end (then set) is after it. Returns 0, or -ENOMEM with
 * ps->ref filled. */
static int take_event(struct parser *ps, size_t index, size_t start, size_t lim, bool whole,
		      size_t *ret_end, bool *ret_scanned)
{
	struct proto_json_member m[MEMBER_COUNT];
	struct proto_json_scan_error sc = { 0 };
	struct verdict v = { 0 };
	ingest_body_event *ev;
	char msg[256];
	size_t end = start, scan_lim = lim;

	memset(m, 0, sizeof(m));
	*ret_scanned = false;
	if (lim - start > ps->max_event_bytes) {
		if (whole)
			goto out_too_large;
		/* The scan stops at the limit, so a huge event costs no more than a legal one. */
		scan_lim = start + ps->max_event_bytes;
	}
	if (proto_json_scan_object(ps->p, start, scan_lim, ps->max_depth, member_names,
				   MEMBER_COUNT, m, &end, &sc) < 0) {
		if (scan_lim < lim && skip_value(ps->p, start, lim, &end) == 0 &&
		    end - start > ps->max_event_bytes)
			goto out_too_large;
		snprintf(msg, sizeof(msg), "event: %s at byte %zu", sc.why, sc.pos - start);
		return add_reject(ps, index, sc.code, msg);
	}
	*ret_scanned = true;
	*ret_end = end;
	if (whole && end != lim) {
		snprintf(msg, sizeof(msg), "event: unexpected data after the JSON object at byte %zu",
			 end - start);
		return add_reject(ps, index, "invalid_json", msg);
	}
	ev = new_event(ps);
	if (ev == NULL)
		return refuse(ps->ref, 500, "internal_error", -ENOMEM, "out of memory");
	if (read_members(ps, m, ev, &v) < 0)
		return add_reject(ps, index, v.code, v.message);
	ev->index = index;
	ev->payload = (const char *)ps->p + start;
	ev->payload_len = end - start;
	ps->b->nevents++;
	return 0;

out_too_large:
	snprintf(msg, sizeof(msg), "event: larger than %zu bytes", ps->max_event_bytes);
	return add_reject(ps, index, "event_too_large", msg);
}

/* Rejects a value that is not an object (or not JSON) as number `index`. */
static int take_non_object(struct parser *ps, size_t index, size_t start)
{
	unsigned char c = ps->p[start];
	bool value = c == '[' || c == '"' || c == '-' || is_digit(c) || c == 't' || c == 'f' ||
		     c == 'n';

	if (value)
		return add_reject(ps, index, "not_an_object", "event: must be a JSON object");
	return add_reject(ps, index, "invalid_json", "event: not JSON");
}

static int too_many(struct parser *ps)
{
	return refuse(ps->ref, 413, "too_many_events", -E2BIG,
		      "body: more than %zu events in one request", ps->lim->max_events);
}

static size_t skip_ws(const unsigned char *p, size_t i, size_t end)
{
	while (i < end && is_ws(p[i]))
		i++;
	return i;
}

/* One event per line; blank lines are skipped but counted in the line numbers. */
static int parse_ndjson(struct parser *ps, size_t pos)
{
	const unsigned char *p = ps->p;
	size_t line = 0, seen = 0, end;
	int rc;

	for (; pos < ps->len; pos = end + 1, line++) {
		const unsigned char *nl = memchr(p + pos, '\n', ps->len - pos);
		size_t s = pos, e;
		size_t ev_end;
		bool scanned;

		end = nl != NULL ? (size_t)(nl - p) : ps->len;
		e = end;
		while (s < e && is_ws(p[s]))
			s++;
		while (e > s && is_ws(p[e - 1]))
			e--;
		if (s == e)
			continue;
		if (seen++ == ps->lim->max_events)
			return too_many(ps);
		if (p[s] == '{')
			rc = take_event(ps, line, s, e, true, &ev_end, &scanned);
		else
			rc = take_non_object(ps, line, s);
		if (rc < 0)
			return rc;
	}
	if (seen == 0)
		return refuse(ps->ref, 400, "invalid_json", -EINVAL, "body: holds no events");
	return 0;
}

static int bad_array(struct parser *ps, size_t at)
{
	return refuse(ps->ref, 400, "invalid_json", -EINVAL,
		      "body: malformed JSON array at byte %zu", at);
}

/* A JSON array of objects; p[pos] is '['. */
static int parse_array(struct parser *ps, size_t pos)
{
	const unsigned char *p = ps->p;
	size_t i = skip_ws(p, pos + 1, ps->len), index;
	int rc;

	if (i < ps->len && p[i] == ']')
		return refuse(ps->ref, 400, "invalid_json", -EINVAL,
			      "body: the array holds no events");
	for (index = 0;; index++) {
		size_t start, end = 0;
		bool scanned = false;

		i = skip_ws(p, i, ps->len);
		if (i >= ps->len)
			return bad_array(ps, i);
		if (index == ps->lim->max_events)
			return too_many(ps);
		start = i;
		if (p[i] == '{')
			rc = take_event(ps, index, start, ps->len, false, &end, &scanned);
		else
			rc = take_non_object(ps, index, start);
		if (rc < 0)
			return rc;
		if (!scanned && skip_value(p, start, ps->len, &end) < 0)
			return bad_array(ps, start);
		i = skip_ws(p, end, ps->len);
		if (i < ps->len && p[i] == ',') {
			i++;
			continue;
		}
		if (i < ps->len && p[i] == ']')
			break;
		return bad_array(ps, i);
	}
	i = skip_ws(p, i + 1, ps->len);
	if (i != ps->len)
		return refuse(ps->ref, 400, "invalid_json", -EINVAL,
			      "body: unexpected data after the JSON array at byte %zu", i);
	return 0;
}

static int parse_json(struct parser *ps, size_t pos)
{
	const unsigned char *p = ps->p;
	size_t i = skip_ws(p, pos, ps->len), end = 0;
	bool scanned;
	int rc;

	if (i == ps->len)
		return refuse(ps->ref, 400, "invalid_json", -EINVAL, "body: holds no events");
	if (p[i] == '[') {
		ps->b->format = "array";
		return parse_array(ps, i);
	}
	if (p[i] != '{')
		return refuse(ps->ref, 400, "invalid_json", -EINVAL,
			      "body: must be a JSON object or an array of objects");
	rc = take_event(ps, 0, i, ps->len, false, &end, &scanned);
	if (rc < 0 || !scanned)
		return rc;
	end = skip_ws(p, end, ps->len);
	if (end != ps->len) {
		/* Nothing of a body with trailing data is taken: it may be NDJSON sent as JSON. */
		ps->b->nevents = 0;
		ps->b->nrejects = 0;
		return refuse(ps->ref, 400, "invalid_json", -EINVAL,
			      "body: unexpected data after the JSON object at byte %zu; send "
			      "several events as a JSON array or as NDJSON (Content-Type: "
			      "application/x-ndjson)",
			      end);
	}
	return 0;
}

void ingest_body_batch_free(ingest_body_batch *b)
{
	if (b == NULL)
		return;
	free(b->decoded);
	free(b->events);
	free(b->rejects);
	memset(b, 0, sizeof(*b));
}

int ingest_body_parse(const char *content_type, const char *content_encoding, const char *body,
		      size_t len, const char *default_stream, int64_t now_ms,
		      const ingest_body_limits *limits, ingest_body_batch *out, int *ret_status,
		      char *code, size_t codelen, char *errbuf, size_t errlen)
{
	static const char *const enc_names[] = { "identity", "gzip", "zstd" };
	struct refusal ref = { 0 };
	ingest_body_batch b = { 0 };
	struct parser ps = { 0 };
	enum body_format fmt = FMT_JSON;
	enum body_encoding enc = ENC_IDENTITY;
	size_t pos = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = read_content_type(content_type, &fmt, &ref);
	if (rc < 0)
		goto out_refuse;
	rc = read_content_encoding(content_encoding, &enc, &ref);
	if (rc < 0)
		goto out_refuse;
	if (default_stream != NULL && !dl_id_is_valid_token(default_stream, PROTO_STREAM_MAX)) {
		rc = refuse(&ref, 400, "invalid_parameter", -EINVAL,
			    "stream: must be 1-128 characters of A-Za-z0-9._:-");
		goto out_refuse;
	}
	if (len == 0) {
		rc = refuse(&ref, 400, "invalid_json", -EINVAL, "body: is empty");
		goto out_refuse;
	}
	if (enc == ENC_GZIP)
		rc = inflate_gzip(body, len, limits->max_body_bytes, &b.decoded, &b.decoded_len,
				  &ref);
	else if (enc == ENC_ZSTD)
		rc = decompress_zstd(body, len, limits->max_body_bytes, &b.decoded,
				     &b.decoded_len, &ref);
	else if (len > limits->max_body_bytes)
		rc = too_large(&ref, limits->max_body_bytes);
	else if ((b.decoded = malloc(len + 1)) == NULL)
		rc = refuse(&ref, 500, "internal_error", -ENOMEM, "out of memory");
	else {
		memcpy(b.decoded, body, len);
		b.decoded_len = len;
	}
	if (rc < 0)
		goto out_refuse;
	b.decoded[b.decoded_len] = '\0';
	b.encoding = enc_names[enc];
	b.format = fmt == FMT_NDJSON ? "ndjson" : "object";

	ps.p = (const unsigned char *)b.decoded;
	ps.len = b.decoded_len;
	ps.lim = limits;
	ps.max_event_bytes = limits->max_event_bytes < INGEST_BODY_EVENT_BYTES_CAP ?
				     limits->max_event_bytes :
				     INGEST_BODY_EVENT_BYTES_CAP;
	ps.max_depth = limits->max_depth < INGEST_BODY_MAX_DEPTH_CAP ? limits->max_depth :
								       INGEST_BODY_MAX_DEPTH_CAP;
	ps.default_stream = default_stream;
	ps.now_ms = now_ms;
	ps.b = &b;
	ps.ref = &ref;
	/* A UTF-8 byte order mark is not part of the JSON text (RFC 8259 lets parsers skip it). */
	if (ps.len >= 3 && memcmp(ps.p, "\xEF\xBB\xBF", 3) == 0)
		pos = 3;
	rc = fmt == FMT_NDJSON ? parse_ndjson(&ps, pos) : parse_json(&ps, pos);
	if (rc < 0)
		goto out_refuse;
	*out = b;
	return 0;

out_refuse:
	ingest_body_batch_free(&b);
	if (ret_status != NULL)
		*ret_status = ref.status;
	if (code != NULL && codelen > 0)
		snprintf(code, codelen, "%s", ref.code);
	if (errbuf != NULL && errlen > 0)
		snprintf(errbuf, errlen, "%s", ref.message);
	return rc;
}

int ingest_body_metrics_init(ingest_body_metrics *m, dl_metrics_registry *reg)
{
	static const char *const encodings[] = { "identity", "gzip", "zstd" };
	ingest_body_metrics nm;

	nm.bytes = dl_metrics_counter(reg, "driftlock_ingest_body_bytes_total",
				      "Bytes of readable POST /v1/events bodies by content encoding, "
				      "as sent (stage wire) and decompressed (stage decoded).",
				      2, "encoding", "stage");
	if (nm.bytes == NULL)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(encodings) / sizeof(encodings[0]); i++) {
		const char *wire[] = { encodings[i], "wire" }, *dec[] = { encodings[i], "decoded" };

		dl_metric_inc(nm.bytes, wire, 0);
		dl_metric_inc(nm.bytes, dec, 0);
	}
	*m = nm;
	return 0;
}

void ingest_body_metrics_batch(const ingest_body_metrics *m, const ingest_body_batch *b,
			       size_t wire_len)
{
	const char *wire[2], *dec[2];

	if (m == NULL || b == NULL || b->encoding == NULL)
		return;
	wire[0] = dec[0] = b->encoding;
	wire[1] = "wire";
	dec[1] = "decoded";
	dl_metric_inc(m->bytes, wire, (double)wire_len);
	dl_metric_inc(m->bytes, dec, (double)b->decoded_len);
}
