/* SPDX-License-Identifier: Apache-2.0 */
/* Unit suite for services/ingest/ingest_body: formats, encodings, limits and every reject. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>
#include <zstd.h>

#include "common/dl_metrics.h"
#include "common/dl_time.h"
#include "proto/proto_event.h"
#include "services/ingest/ingest_body.h"

#define JSON "application/json"
#define NDJSON "application/x-ndjson"
#define NOW INT64_C(1795715707123) /* 2026-11-26T17:55:07.123Z */
#define ORG "0b7e4f3c-5a1d-4c8e-9f2a-1d3e5b7c9a0f"

static const ingest_body_limits LIM = {
	.max_event_bytes = INGEST_BODY_DEFAULT_MAX_EVENT_BYTES,
	.max_body_bytes = INGEST_BODY_DEFAULT_MAX_BODY_BYTES,
	.max_events = INGEST_BODY_DEFAULT_MAX_EVENTS,
	.max_depth = INGEST_BODY_DEFAULT_MAX_DEPTH,
};

/* The outcome of one parse, with what a failure reported. */
struct res {
	int rc;
	int status;
	char code[64];
	char err[256];
	ingest_body_batch b;
};

static void run_lim(struct res *r, const char *ct, const char *ce, const char *body, size_t len,
		    const char *def, const ingest_body_limits *lim)
{
	/* An exact-size heap copy: a read past the end is caught by AddressSanitizer. */
	char *copy = malloc(len ? len : 1);

	ck_assert_ptr_nonnull(copy);
	memcpy(copy, body, len);
	memset(r, 0, sizeof(*r));
	r->status = -1;
	r->rc = ingest_body_parse(ct, ce, copy, len, def, NOW, lim, &r->b, &r->status, r->code,
				  sizeof(r->code), r->err, sizeof(r->err));
	free(copy);
	if (r->rc == 0) {
		ck_assert_int_eq(r->status, -1); /* untouched on success */
		ck_assert_ptr_nonnull(r->b.decoded);
		ck_assert_int_eq(r->b.decoded[r->b.decoded_len], '\0');
	} else {
		ck_assert_ptr_null(r->b.decoded);
		ck_assert_ptr_null(r->b.events);
		ck_assert_int_eq(r->b.nevents, 0);
	}
}

static void run(struct res *r, const char *ct, const char *ce, const char *body, const char *def)
{
	run_lim(r, ct, ce, body, strlen(body), def, &LIM);
}

static void expect_refused(const struct res *r, int status, const char *code)
{
	ck_assert_msg(r->rc < 0, "expected %d %s, got rc %d", status, code, r->rc);
	ck_assert_int_eq(r->status, status);
	ck_assert_str_eq(r->code, code);
	ck_assert_msg(strlen(r->err) > 0, "no message");
}

/* Checks one accepted event: its index, exact payload bytes and stream. */
static void expect_event(const struct res *r, size_t i, size_t index, const char *payload,
			 const char *stream)
{
	const ingest_body_event *ev;

	ck_assert_int_eq(r->rc, 0);
	ck_assert_uint_gt(r->b.nevents, i);
	ev = &r->b.events[i];
	ck_assert_uint_eq(ev->index, index);
	ck_assert_uint_eq(ev->payload_len, strlen(payload));
	ck_assert_msg(memcmp(ev->payload, payload, ev->payload_len) == 0, "payload %.*s",
		      (int)ev->payload_len, ev->payload);
	ck_assert_str_eq(ev->stream, stream);
}

static void expect_reject(const struct res *r, size_t i, size_t index, const char *code,
			  const char *in_message)
{
	ck_assert_int_eq(r->rc, 0);
	ck_assert_uint_gt(r->b.nrejects, i);
	ck_assert_uint_eq(r->b.rejects[i].index, index);
	ck_assert_msg(strcmp(r->b.rejects[i].code, code) == 0, "code %s (%s), want %s",
		      r->b.rejects[i].code, r->b.rejects[i].message, code);
	if (in_message != NULL)
		ck_assert_msg(strstr(r->b.rejects[i].message, in_message) != NULL,
			      "message \"%s\" lacks \"%s\"", r->b.rejects[i].message, in_message);
}

/* One object body and its single reject. */
static void expect_one_reject(const char *body, const char *code, const char *in_message)
{
	struct res r;

	run(&r, JSON, NULL, body, NULL);
	ck_assert_msg(r.rc == 0, "%s: refused %s %s", body, r.code, r.err);
	ck_assert_msg(r.b.nevents == 0 && r.b.nrejects == 1, "%s: %zu events %zu rejects", body,
		      r.b.nevents, r.b.nrejects);
	expect_reject(&r, 0, 0, code, in_message);
	ingest_body_batch_free(&r.b);
}

static void expect_one_event(const char *body)
{
	struct res r;

	run(&r, JSON, NULL, body, "dflt");
	ck_assert_msg(r.rc == 0 && r.b.nevents == 1, "%s: rc %d %s, rejects %zu: %s", body, r.rc,
		      r.err, r.b.nrejects, r.b.nrejects ? r.b.rejects[0].message : "");
	ingest_body_batch_free(&r.b);
}

static char *gzip_of(const char *in, size_t len, size_t *ret_len)
{
	z_stream zs;
	size_t cap = compressBound(len) + 64;
	char *out = malloc(cap);

	ck_assert_ptr_nonnull(out);
	memset(&zs, 0, sizeof(zs));
	ck_assert_int_eq(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY),
			 Z_OK);
	zs.next_in = (Bytef *)in;
	zs.avail_in = (uInt)len;
	zs.next_out = (Bytef *)out;
	zs.avail_out = (uInt)cap;
	ck_assert_int_eq(deflate(&zs, Z_FINISH), Z_STREAM_END);
	*ret_len = cap - zs.avail_out;
	deflateEnd(&zs);
	return out;
}

static char *zstd_of(const char *in, size_t len, size_t *ret_len)
{
	size_t cap = ZSTD_compressBound(len);
	char *out = malloc(cap);

	ck_assert_ptr_nonnull(out);
	*ret_len = ZSTD_compress(out, cap, in, len, 3);
	ck_assert(!ZSTD_isError(*ret_len));
	return out;
}

static char *repeat(const char *unit, size_t n)
{
	size_t ul = strlen(unit);
	char *s = malloc(ul * n + 1);

	ck_assert_ptr_nonnull(s);
	for (size_t i = 0; i < n; i++)
		memcpy(s + i * ul, unit, ul);
	s[ul * n] = '\0';
	return s;
}

START_TEST(test_single_object)
{
	static const char ev[] = "{\"stream\":\"checkout-api.logs\",\"ts\":\"2026-11-26T18:55:07.5+01:00\","
				 "\"id\":\"evt-1\",\"msg\":\"card declined\",\"status\":402}";
	char body[512];
	struct res r;

	snprintf(body, sizeof(body), " \r\n\t%s \n", ev);
	run(&r, JSON, NULL, body, NULL);
	expect_event(&r, 0, 0, ev, "checkout-api.logs");
	ck_assert_uint_eq(r.b.nevents, 1);
	ck_assert_uint_eq(r.b.nrejects, 0);
	ck_assert_int_eq(r.b.events[0].ts_ms, INT64_C(1795715707500));
	ck_assert_str_eq(r.b.events[0].client_id, "evt-1");
	ck_assert_str_eq(r.b.format, "object");
	ck_assert_str_eq(r.b.encoding, "identity");
	ingest_body_batch_free(&r.b);
	ck_assert_ptr_null(r.b.decoded);
	ck_assert_uint_eq(r.b.nevents, 0);
	ingest_body_batch_free(&r.b);
	ingest_body_batch_free(NULL);
}
END_TEST

START_TEST(test_array_keeps_exact_bytes)
{
	/* Spacing, escapes, number spelling and UTF-8 inside the objects survive byte for byte. */
	static const char e0[] = "{ \"stream\" : \"a\", \"msg\": \"caf\\u00e9 \xe2\x82\xac \\\"q\\\"\" }";
	static const char e1[] = "{\"stream\":\"b\",\"n\":[1e3,-0,0.5E-2,{\"x\":null}],\"t\":true}";
	static const char e2[] = "{}";
	char body[512];
	struct res r;

	snprintf(body, sizeof(body), "[\n  %s,\n\t%s ,%s\r\n]\n", e0, e1, e2);
	run(&r, JSON "; charset=UTF-8", NULL, body, "dflt");
	ck_assert_str_eq(r.b.format, "array");
	ck_assert_uint_eq(r.b.nevents, 3);
	expect_event(&r, 0, 0, e0, "a");
	expect_event(&r, 1, 1, e1, "b");
	expect_event(&r, 2, 2, e2, "dflt");
	ck_assert_int_eq(r.b.events[2].ts_ms, NOW);
	ck_assert_str_eq(r.b.events[2].client_id, "");
	ingest_body_batch_free(&r.b);
}
END_TEST

START_TEST(test_ndjson_lines)
{
	/* Blank lines, whitespace-only lines and CRLF are skipped, but counted in the indices. */
	static const char body[] = "{\"stream\":\"a\",\"n\":1}\r\n"
				   "\n"
				   "   \t\r\n"
				   "  {\"stream\":\"b\",\"n\":2}  \n"
				   "{\"stream\":\"c\",\"n\":3}";
	struct res r;

	run(&r, "Application/X-NDJSON", NULL, body, NULL);
	ck_assert_str_eq(r.b.format, "ndjson");
	ck_assert_uint_eq(r.b.nevents, 3);
	ck_assert_uint_eq(r.b.nrejects, 0);
	expect_event(&r, 0, 0, "{\"stream\":\"a\",\"n\":1}", "a");
	expect_event(&r, 1, 3, "{\"stream\":\"b\",\"n\":2}", "b");
	expect_event(&r, 2, 4, "{\"stream\":\"c\",\"n\":3}", "c");
	ingest_body_batch_free(&r.b);

	/* A trailing newline does not make an extra line. */
	run(&r, NDJSON, NULL, "{\"stream\":\"a\"}\n{\"stream\":\"b\"}\n", NULL);
	ck_assert_uint_eq(r.b.nevents, 2);
	ck_assert_uint_eq(r.b.nrejects, 0);
	ingest_body_batch_free(&r.b);
}
END_TEST

START_TEST(test_partial_acceptance)
{
	static const char body[] = "{\"stream\":\"a\",\"n\":0}\n"
				   "{\"stream\":\"a\",\"n\":}\n"
				   "{\"stream\":\"a\",\"n\":2}\n"
				   "[1,2]\n"
				   "{\"stream\":\"bad stream\"}\n"
				   "{\"stream\":\"a\",\"n\":5} trailing\n"
				   "{\"stream\":\"a\",\"n\":6}\n"
				   "garbage\n";
	struct res r;

	run(&r, NDJSON, NULL, body, NULL);
	ck_assert_uint_eq(r.b.nevents, 3);
	expect_event(&r, 0, 0, "{\"stream\":\"a\",\"n\":0}", "a");
	expect_event(&r, 1, 2, "{\"stream\":\"a\",\"n\":2}", "a");
	expect_event(&r, 2, 6, "{\"stream\":\"a\",\"n\":6}", "a");
	ck_assert_uint_eq(r.b.nrejects, 5);
	expect_reject(&r, 0, 1, "invalid_json", "expected a JSON value at byte 18");
	expect_reject(&r, 1, 3, "not_an_object", "must be a JSON object");
	expect_reject(&r, 2, 4, "invalid_stream", "event.stream:");
	expect_reject(&r, 3, 5, "invalid_json", "unexpected data after the JSON object");
	expect_reject(&r, 4, 7, "invalid_json", NULL);
	ingest_body_batch_free(&r.b);

	/* In an array too: a bad element between good ones is rejected alone. */
	run(&r, JSON, NULL,
	    "[{\"stream\":\"a\"},{\"stream\":\"b\",},\"x\",7,[{}],{\"stream\":\"c\"}]", NULL);
	ck_assert_uint_eq(r.b.nevents, 2);
	expect_event(&r, 0, 0, "{\"stream\":\"a\"}", "a");
	expect_event(&r, 1, 5, "{\"stream\":\"c\"}", "c");
	ck_assert_uint_eq(r.b.nrejects, 4);
	expect_reject(&r, 0, 1, "invalid_json", "expected a member name");
	expect_reject(&r, 1, 2, "not_an_object", NULL);
	expect_reject(&r, 2, 3, "not_an_object", NULL);
	expect_reject(&r, 3, 4, "not_an_object", NULL);
	ingest_body_batch_free(&r.b);
}
END_TEST

START_TEST(test_all_rejected_is_still_a_batch)
{
	struct res r;

	run(&r, NDJSON, NULL, "{\"n\":1}\n{\"n\":2}\n", NULL);
	ck_assert_int_eq(r.rc, 0);
	ck_assert_uint_eq(r.b.nevents, 0);
	ck_assert_uint_eq(r.b.nrejects, 2);
	expect_reject(&r, 0, 0, "missing_stream", "event.stream: is required");
	expect_reject(&r, 1, 1, "missing_stream", NULL);
	ingest_body_batch_free(&r.b);
}
END_TEST

START_TEST(test_content_types)
{
	struct res r;

	run(&r, "application/json;charset=\"utf-8\"", NULL, "{\"stream\":\"a\"}", NULL);
	ck_assert_uint_eq(r.b.nevents, 1);
	ingest_body_batch_free(&r.b);
	run(&r, "  APPLICATION/JSON ; foo=bar", NULL, "{\"stream\":\"a\"}", NULL);
	ck_assert_uint_eq(r.b.nevents, 1);
	ingest_body_batch_free(&r.b);

	run(&r, NULL, NULL, "{\"stream\":\"a\"}", NULL);
	expect_refused(&r, 415, "unsupported_media_type");
	ck_assert_ptr_nonnull(strstr(r.err, "missing"));
	run(&r, "text/plain", NULL, "{\"stream\":\"a\"}", NULL);
	expect_refused(&r, 415, "unsupported_media_type");
	ck_assert_ptr_nonnull(strstr(r.err, "text/plain"));
	run(&r, "application/x-www-form-urlencoded", NULL, "{\"stream\":\"a\"}", NULL);
	expect_refused(&r, 415, "unsupported_media_type");
	run(&r, "application/jsonx", NULL, "{\"stream\":\"a\"}", NULL);
	expect_refused(&r, 415, "unsupported_media_type");
	run(&r, "application/json; charset=iso-8859-1", NULL, "{\"stream\":\"a\"}", NULL);
	expect_refused(&r, 415, "unsupported_media_type");
	ck_assert_ptr_nonnull(strstr(r.err, "utf-8"));
	/* A client's header text is quoted printable and bounded. */
	run(&r, "text/\xff\"\x01", NULL, "{}", NULL);
	expect_refused(&r, 415, "unsupported_media_type");
	ck_assert_ptr_nonnull(strstr(r.err, "text/???"));
}
END_TEST

START_TEST(test_encodings_refused)
{
	struct res r;

	run(&r, JSON, "br", "{\"stream\":\"a\"}", NULL);
	expect_refused(&r, 415, "unsupported_media_type");
	ck_assert_ptr_nonnull(strstr(r.err, "\"br\""));
	run(&r, JSON, "gzip, zstd", "{\"stream\":\"a\"}", NULL);
	expect_refused(&r, 415, "unsupported_media_type");
	run(&r, JSON, "deflate", "{\"stream\":\"a\"}", NULL);
	expect_refused(&r, 415, "unsupported_media_type");
	run(&r, JSON, "identity", "{\"stream\":\"a\"}", NULL);
	ck_assert_uint_eq(r.b.nevents, 1);
	ingest_body_batch_free(&r.b);
	run(&r, JSON, "", "{\"stream\":\"a\"}", NULL);
	ck_assert_uint_eq(r.b.nevents, 1);
	ingest_body_batch_free(&r.b);
}
END_TEST

START_TEST(test_gzip)
{
	static const char plain[] = "{\"stream\":\"a\",\"n\":1}\n{\"stream\":\"b\",\"n\":2}\n";
	size_t zl, zl2;
	char *z = gzip_of(plain, strlen(plain), &zl);
	char *z2 = gzip_of("{\"stream\":\"c\"}\n", 15, &zl2);
	char *both = malloc(zl + zl2);
	struct res r;

	ck_assert_ptr_nonnull(both);
	run_lim(&r, NDJSON, "gzip", z, zl, NULL, &LIM);
	ck_assert_str_eq(r.b.encoding, "gzip");
	ck_assert_uint_eq(r.b.decoded_len, strlen(plain));
	ck_assert_uint_eq(r.b.nevents, 2);
	expect_event(&r, 1, 1, "{\"stream\":\"b\",\"n\":2}", "b");
	ingest_body_batch_free(&r.b);
	run_lim(&r, NDJSON, " X-GZIP ", z, zl, NULL, &LIM);
	ck_assert_uint_eq(r.b.nevents, 2);
	ingest_body_batch_free(&r.b);

	/* Concatenated members are one body. */
	memcpy(both, z, zl);
	memcpy(both + zl, z2, zl2);
	run_lim(&r, NDJSON, "gzip", both, zl + zl2, NULL, &LIM);
	ck_assert_uint_eq(r.b.nevents, 3);
	expect_event(&r, 2, 2, "{\"stream\":\"c\"}", "c");
	ingest_body_batch_free(&r.b);

	/* Truncated, corrupt, not gzip at all, garbage after a member. */
	run_lim(&r, NDJSON, "gzip", z, zl - 5, NULL, &LIM);
	expect_refused(&r, 400, "invalid_body");
	ck_assert_ptr_nonnull(strstr(r.err, "truncated"));
	z[zl / 2] ^= 0x55;
	run_lim(&r, NDJSON, "gzip", z, zl, NULL, &LIM);
	expect_refused(&r, 400, "invalid_body");
	run(&r, NDJSON, "gzip", "{\"stream\":\"a\"}", NULL);
	expect_refused(&r, 400, "invalid_body");
	memcpy(both + zl2, "garbage", 7);
	run_lim(&r, NDJSON, "gzip", both, zl2 + 7, NULL, &LIM);
	expect_refused(&r, 400, "invalid_body");
	free(both);
	free(z);
	free(z2);
}
END_TEST

START_TEST(test_zstd)
{
	static const char plain[] = "[{\"stream\":\"a\",\"n\":1},{\"stream\":\"b\",\"n\":2}]";
	static const char line[] = "{\"stream\":\"c\"}\n";
	size_t zl, zl1, zl2;
	char *z = zstd_of(plain, strlen(plain), &zl);
	char *z1 = zstd_of(line, strlen(line), &zl1);
	char *z2 = zstd_of(line, strlen(line), &zl2);
	char *both = malloc(zl1 + zl2);
	struct res r;

	ck_assert_ptr_nonnull(both);
	run_lim(&r, JSON, "zstd", z, zl, NULL, &LIM);
	ck_assert_str_eq(r.b.encoding, "zstd");
	ck_assert_uint_eq(r.b.nevents, 2);
	expect_event(&r, 0, 0, "{\"stream\":\"a\",\"n\":1}", "a");
	ingest_body_batch_free(&r.b);

	/* Several frames are one body. */
	memcpy(both, z1, zl1);
	memcpy(both + zl1, z2, zl2);
	run_lim(&r, NDJSON, "ZSTD", both, zl1 + zl2, NULL, &LIM);
	ck_assert_uint_eq(r.b.nevents, 2);
	expect_event(&r, 1, 1, "{\"stream\":\"c\"}", "c");
	ingest_body_batch_free(&r.b);

	run_lim(&r, JSON, "zstd", z, zl - 3, NULL, &LIM);
	expect_refused(&r, 400, "invalid_body");
	ck_assert_ptr_nonnull(strstr(r.err, "truncated"));
	run(&r, JSON, "zstd", "{\"stream\":\"a\"}", NULL);
	expect_refused(&r, 400, "invalid_body");
	memcpy(both + zl1, "garbage!", 8);
	run_lim(&r, NDJSON, "zstd", both, zl1 + 8, NULL, &LIM);
	expect_refused(&r, 400, "invalid_body");
	free(both);
	free(z);
	free(z1);
	free(z2);
}
END_TEST

/* A bomb: far more zeros than the limit, then corrupt data. Stopping at the limit gives 413;
 * decoding on to the end would find the corruption and give 400. */
START_TEST(test_bombs_stop_at_the_limit)
{
	const size_t big = 64u << 20;
	ingest_body_limits lim = LIM;
	char *zeros = calloc(1, big), *zb, *gb, *bomb;
	size_t zl, gl;
	struct res r;

	ck_assert_ptr_nonnull(zeros);
	lim.max_body_bytes = 1u << 20;
	zb = zstd_of(zeros, big, &zl);
	gb = gzip_of(zeros, big, &gl);
	free(zeros);
	ck_assert_uint_lt(zl, 64 * 1024);
	ck_assert_uint_lt(gl, 128 * 1024);

	bomb = malloc((zl > gl ? zl : gl) + 16);
	ck_assert_ptr_nonnull(bomb);
	memcpy(bomb, zb, zl);
	memcpy(bomb + zl, "\x28\xb5\x2f\xfd garbage", 12);
	run_lim(&r, JSON, "zstd", bomb, zl + 12, NULL, &lim);
	expect_refused(&r, 413, "payload_too_large");
	ck_assert_int_eq(r.rc, -EMSGSIZE);
	ck_assert_ptr_nonnull(strstr(r.err, "1048576"));

	memcpy(bomb, gb, gl);
	bomb[gl - 12] ^= 0x5a; /* corrupt the deflate stream's end */
	run_lim(&r, JSON, "gzip", bomb, gl, NULL, &lim);
	expect_refused(&r, 413, "payload_too_large");
	free(bomb);
	free(zb);
	free(gb);
}
END_TEST

START_TEST(test_zstd_window_over_the_limit)
{
	static const char plain[] = "{\"stream\":\"a\"}";
	ZSTD_CCtx *cctx = ZSTD_createCCtx();
	ZSTD_inBuffer in = { plain, strlen(plain), 0 };
	char out[256];
	ZSTD_outBuffer zo = { out, sizeof(out), 0 };
	ZSTD_inBuffer none = { NULL, 0, 0 };
	struct res r;

	/* Streamed without a pledged size, the frame declares a 16 MiB window. */
	ck_assert(!ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, 24)));
	ck_assert(!ZSTD_isError(ZSTD_compressStream2(cctx, &zo, &in, ZSTD_e_continue)));
	ck_assert_int_eq(ZSTD_compressStream2(cctx, &zo, &none, ZSTD_e_end), 0);
	ZSTD_freeCCtx(cctx);
	run_lim(&r, JSON, "zstd", out, zo.pos, NULL, &LIM);
	expect_refused(&r, 413, "payload_too_large");
	ck_assert_ptr_nonnull(strstr(r.err, "window"));
}
END_TEST

START_TEST(test_body_limit)
{
	ingest_body_limits lim = LIM;
	char *body = malloc(4097 + 1), *z;
	size_t zl;
	struct res r;

	ck_assert_ptr_nonnull(body);
	lim.max_body_bytes = 4096;
	memset(body, ' ', 4097);
	memcpy(body, "{\"stream\":\"a\"}", 14);
	run_lim(&r, JSON, NULL, body, 4096, NULL, &lim);
	ck_assert_uint_eq(r.b.nevents, 1);
	ingest_body_batch_free(&r.b);
	run_lim(&r, JSON, NULL, body, 4097, NULL, &lim);
	expect_refused(&r, 413, "payload_too_large");

	/* The same limits apply after decompression, to the byte. */
	z = gzip_of(body, 4096, &zl);
	run_lim(&r, JSON, "gzip", z, zl, NULL, &lim);
	ck_assert_uint_eq(r.b.nevents, 1);
	ingest_body_batch_free(&r.b);
	free(z);
	z = gzip_of(body, 4097, &zl);
	run_lim(&r, JSON, "gzip", z, zl, NULL, &lim);
	expect_refused(&r, 413, "payload_too_large");
	free(z);
	z = zstd_of(body, 4096, &zl);
	run_lim(&r, JSON, "zstd", z, zl, NULL, &lim);
	ck_assert_uint_eq(r.b.nevents, 1);
	ingest_body_batch_free(&r.b);
	free(z);
	z = zstd_of(body, 4097, &zl);
	run_lim(&r, JSON, "zstd", z, zl, NULL, &lim);
	expect_refused(&r, 413, "payload_too_large");
	free(z);
	free(body);
}
END_TEST

/* An object of exactly n bytes: {"stream":"a","p":"xxx..."}. */
static char *object_of(size_t n)
{
	static const char head[] = "{\"stream\":\"a\",\"p\":\"";
	size_t hl = strlen(head);
	char *s = malloc(n + 1);

	ck_assert_ptr_nonnull(s);
	ck_assert_uint_ge(n, hl + 2);
	memcpy(s, head, hl);
	memset(s + hl, 'x', n - hl - 2);
	memcpy(s + n - 2, "\"}", 2);
	s[n] = '\0';
	return s;
}

START_TEST(test_event_size_limit)
{
	ingest_body_limits lim = LIM;
	char *ok, *big, *body;
	struct res r;

	lim.max_event_bytes = 100;
	ok = object_of(100);
	big = object_of(101);
	body = malloc(512);
	ck_assert_ptr_nonnull(body);

	snprintf(body, 512, "%s\n%s\n%s", ok, big, ok);
	run_lim(&r, NDJSON, NULL, body, strlen(body), NULL, &lim);
	ck_assert_uint_eq(r.b.nevents, 2);
	expect_event(&r, 0, 0, ok, "a");
	expect_event(&r, 1, 2, ok, "a");
	expect_reject(&r, 0, 1, "event_too_large", "larger than 100 bytes");
	ingest_body_batch_free(&r.b);

	snprintf(body, 512, "[%s,%s,%s]", ok, big, ok);
	run_lim(&r, JSON, NULL, body, strlen(body), NULL, &lim);
	ck_assert_uint_eq(r.b.nevents, 2);
	expect_event(&r, 1, 2, ok, "a");
	ck_assert_uint_eq(r.b.nrejects, 1);
	expect_reject(&r, 0, 1, "event_too_large", NULL);
	ingest_body_batch_free(&r.b);

	run_lim(&r, JSON, NULL, big, strlen(big), NULL, &lim);
	ck_assert_uint_eq(r.b.nevents, 0);
	expect_reject(&r, 0, 0, "event_too_large", NULL);
	ingest_body_batch_free(&r.b);

	/* A small bad element before a large rest of body is reported for what it is. */
	snprintf(body, 512, "[{\"stream\":\"a\",\"p\":tru},%s]", ok);
	run_lim(&r, JSON, NULL, body, strlen(body), NULL, &lim);
	expect_reject(&r, 0, 0, "invalid_json", NULL);
	ck_assert_uint_eq(r.b.nevents, 1);
	ingest_body_batch_free(&r.b);
	free(ok);
	free(big);
	free(body);
}
END_TEST

START_TEST(test_events_per_request_limit)
{
	ingest_body_limits lim = LIM;
	char *nd = repeat("{\"stream\":\"a\"}\n", 5), *arr;
	struct res r;

	lim.max_events = 4;
	run_lim(&r, NDJSON, NULL, nd, strlen(nd), NULL, &lim);
	expect_refused(&r, 413, "too_many_events");
	ck_assert_int_eq(r.rc, -E2BIG);
	ck_assert_ptr_nonnull(strstr(r.err, "more than 4 events"));
	/* Exactly the limit, blank lines not counted. */
	nd[strlen(nd) - 16] = '\0';
	strcat(nd, "\n\n\n");
	run_lim(&r, NDJSON, NULL, nd, strlen(nd), NULL, &lim);
	ck_assert_uint_eq(r.b.nevents, 4);
	ingest_body_batch_free(&r.b);
	free(nd);

	/* Rejected events count too. */
	run_lim(&r, JSON, NULL, "[{},{},{},{},{}]", 16, NULL, &lim);
	expect_refused(&r, 413, "too_many_events");
	run_lim(&r, JSON, NULL, "[{},{},{},{}]", 13, NULL, &lim);
	ck_assert_uint_eq(r.b.nrejects, 4);
	ingest_body_batch_free(&r.b);

	arr = malloc(10001 * 3 + 2);
	ck_assert_ptr_nonnull(arr);
	arr[0] = '[';
	for (size_t i = 0; i < 10001; i++)
		memcpy(arr + 1 + 3 * i, "{},", 3);
	arr[10001 * 3] = ']';
	run_lim(&r, JSON, NULL, arr, 10001 * 3 + 1, "s", &LIM);
	expect_refused(&r, 413, "too_many_events");
	arr[10000 * 3] = ']';
	run_lim(&r, JSON, NULL, arr, 10000 * 3 + 1, "s", &LIM);
	ck_assert_uint_eq(r.b.nevents, 10000);
	ck_assert_uint_eq(r.b.events[9999].index, 9999);
	ingest_body_batch_free(&r.b);
	free(arr);
}
END_TEST

/* Builds a valid event whose nesting is exactly `levels` (the event object = 1). */
static char *deep_event(int levels)
{
	static const char head[] = "{\"stream\":\"a\",\"d\":";
	size_t cap = (size_t)levels * 8 + 64, n = strlen(head);
	char *s = malloc(cap);

	ck_assert_ptr_nonnull(s);
	memcpy(s, head, n);
	for (int i = 2; i <= levels; i++) {
		const char *open = i % 2 ? "{\"k\":" : "[";

		memcpy(s + n, open, strlen(open));
		n += strlen(open);
	}
	s[n++] = '1';
	for (int i = levels; i >= 2; i--)
		s[n++] = i % 2 ? '}' : ']';
	s[n++] = '}';
	s[n] = '\0';
	return s;
}

START_TEST(test_depth_limit)
{
	ingest_body_limits lim = LIM;
	char *ok = deep_event(31), *deep = deep_event(32), *small;
	struct res r;

	run(&r, JSON, NULL, ok, NULL);
	ck_assert_uint_eq(r.b.nevents, 1);
	ingest_body_batch_free(&r.b);
	expect_one_reject(deep, "too_deep", "deeper than 31 levels");

	/* A configured depth above the envelope's cap acts as the cap. */
	lim.max_depth = 100;
	run_lim(&r, JSON, NULL, deep, strlen(deep), NULL, &lim);
	expect_reject(&r, 0, 0, "too_deep", NULL);
	ingest_body_batch_free(&r.b);

	lim.max_depth = 3;
	small = deep_event(3);
	run_lim(&r, JSON, NULL, small, strlen(small), NULL, &lim);
	ck_assert_uint_eq(r.b.nevents, 1);
	ingest_body_batch_free(&r.b);
	free(small);
	small = deep_event(4);
	run_lim(&r, JSON, NULL, small, strlen(small), NULL, &lim);
	expect_reject(&r, 0, 0, "too_deep", "deeper than 3 levels");
	ingest_body_batch_free(&r.b);
	free(small);

	/* Far deeper than any stack: refused, never recursed into. */
	small = malloc(200001);
	ck_assert_ptr_nonnull(small);
	memset(small, '[', 100000);
	memset(small + 100000, ']', 100000);
	small[0] = '{';
	small[200000] = '\0';
	lim.max_event_bytes = 1u << 20;
	lim.max_depth = LIM.max_depth;
	run_lim(&r, JSON, NULL, small, 200000, NULL, &lim);
	expect_reject(&r, 0, 0, "invalid_json", NULL);
	ingest_body_batch_free(&r.b);
	memcpy(small, "{\"a\":", 5);
	run_lim(&r, JSON, NULL, small, 200000, NULL, &lim);
	expect_reject(&r, 0, 0, "too_deep", NULL);
	ingest_body_batch_free(&r.b);
	free(small);
	free(ok);
	free(deep);
}
END_TEST

START_TEST(test_text_rules)
{
	/* Invalid UTF-8: overlong, surrogate, past U+10FFFF, truncated, a stray continuation. */
	expect_one_reject("{\"stream\":\"a\",\"m\":\"\xc0\xaf\"}", "invalid_json", "invalid UTF-8");
	expect_one_reject("{\"stream\":\"a\",\"m\":\"\xed\xa0\x80\"}", "invalid_json", "UTF-8");
	expect_one_reject("{\"stream\":\"a\",\"m\":\"\xf4\x90\x80\x80\"}", "invalid_json", "UTF-8");
	expect_one_reject("{\"stream\":\"a\",\"m\":\"\xe2\x82\"}", "invalid_json", "UTF-8");
	expect_one_reject("{\"stream\":\"a\",\"m\":\"\x80\"}", "invalid_json", "UTF-8");
	expect_one_reject("{\"stream\":\"a\",\"\xff\":1}", "invalid_json", "UTF-8");
	/* Raw control characters inside strings, a NUL included. */
	expect_one_reject("{\"stream\":\"a\",\"m\":\"tab\there\"}", "invalid_json",
			  "control character");
	{
		static const char nul[] = "{\"stream\":\"a\",\"m\":\"x\0y\"}";
		struct res r;

		run_lim(&r, JSON, NULL, nul, sizeof(nul) - 1, NULL, &LIM);
		expect_reject(&r, 0, 0, "invalid_json", "control character");
		ingest_body_batch_free(&r.b);
	}
	/* Escapes: surrogate pairs only as pairs (cJSON downstream refuses the others). */
	expect_one_event("{\"m\":\"\\ud83d\\ude00 \\u00e9 \\n\\t\\/\\\\\\\"\"}");
	expect_one_reject("{\"m\":\"\\ud83d\"}", "invalid_json", "surrogate");
	expect_one_reject("{\"m\":\"\\ud83dx\"}", "invalid_json", "surrogate");
	expect_one_reject("{\"m\":\"\\ude00\"}", "invalid_json", "surrogate");
	expect_one_reject("{\"m\":\"\\ud83d\\u0041\"}", "invalid_json", "surrogate");
	expect_one_reject("{\"m\":\"\\u12G4\"}", "invalid_json", "escape");
	expect_one_reject("{\"m\":\"\\x41\"}", "invalid_json", "escape");
	/* Special bytes are found at every offset of the 8-byte blocks strings are scanned in. */
	for (int k = 0; k < 20; k++) {
		char body[96];

		snprintf(body, sizeof(body), "{\"stream\":\"a\",\"m\":\"%.*s\x01" "zbcdefghijklmn\"}", k,
			 "aaaaaaaaaaaaaaaaaaaaaaaa");
		expect_one_reject(body, "invalid_json", "control character");
		snprintf(body, sizeof(body), "{\"stream\":\"a\",\"m\":\"%.*s\xc3" "zbcdefghijklmn\"}", k,
			 "aaaaaaaaaaaaaaaaaaaaaaaa");
		expect_one_reject(body, "invalid_json", "UTF-8");
		snprintf(body, sizeof(body), "{\"m\":\"%.*s\\\"\xc3\xa9\\n\x7f~\"}", k,
			 "aaaaaaaaaaaaaaaaaaaaaaaa");
		expect_one_event(body);
		snprintf(body, sizeof(body), "{\"m\":\"%.*s\"}  ", k, "aaaaaaaaaaaaaaaaaaaaaaaa");
		expect_one_event(body);
	}
	/* Valid multi-byte text passes. */
	expect_one_event("{\"m\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\"}");
}
END_TEST

START_TEST(test_grammar)
{
	expect_one_event("{\"n\":[0,-0,1.5,-2e10,3E+2,4e-1,12345678901234567890],\"b\":[true,false,null]}");
	expect_one_event("{ }");
	expect_one_reject("{\"n\":01}", "invalid_json", NULL);
	expect_one_reject("{\"n\":1.}", "invalid_json", "malformed number");
	expect_one_reject("{\"n\":.5}", "invalid_json", NULL);
	expect_one_reject("{\"n\":+1}", "invalid_json", NULL);
	expect_one_reject("{\"n\":1e}", "invalid_json", "malformed number");
	expect_one_reject("{\"n\":-}", "invalid_json", "malformed number");
	expect_one_reject("{\"n\":tru}", "invalid_json", NULL);
	expect_one_reject("{\"n\":NaN}", "invalid_json", NULL);
	expect_one_reject("{\"n\":1,}", "invalid_json", "expected a member name");
	expect_one_reject("{\"n\" 1}", "invalid_json", "expected ':'");
	expect_one_reject("{n:1}", "invalid_json", NULL);
	expect_one_reject("{'n':1}", "invalid_json", NULL);
	expect_one_reject("{\"n\":[1,]}", "invalid_json", NULL);
	expect_one_reject("{\"n\":[1}", "invalid_json", "expected ',' or ']'");
	expect_one_reject("{\"n\":{\"a\":1]}", "invalid_json", "expected ',' or '}'");
	expect_one_reject("{\"n\":\"abc}", "invalid_json", NULL);
	expect_one_reject("{\"n\":1", "invalid_json", "unexpected end");
	{
		struct res r;

		run(&r, JSON, NULL, "{\"n\":1}}", NULL);
		expect_refused(&r, 400, "invalid_json");
	}
}
END_TEST

START_TEST(test_body_level_errors)
{
	struct res r;

	run(&r, JSON, NULL, "", NULL);
	expect_refused(&r, 400, "invalid_json");
	run(&r, NDJSON, NULL, "", NULL);
	expect_refused(&r, 400, "invalid_json");
	run(&r, JSON, NULL, " \r\n\t ", NULL);
	expect_refused(&r, 400, "invalid_json");
	run(&r, NDJSON, NULL, "\n\r\n  \n", NULL);
	expect_refused(&r, 400, "invalid_json");
	run(&r, JSON, NULL, "[ ]", NULL);
	expect_refused(&r, 400, "invalid_json");
	run(&r, JSON, NULL, "42", NULL);
	expect_refused(&r, 400, "invalid_json");
	run(&r, JSON, NULL, "\"text\"", NULL);
	expect_refused(&r, 400, "invalid_json");
	/* Trailing data after the object or the array. */
	run(&r, JSON, NULL, "{\"stream\":\"a\"} x", NULL);
	expect_refused(&r, 400, "invalid_json");
	run(&r, JSON, NULL, "{\"stream\":\"a\"}\n{\"stream\":\"b\"}\n", NULL);
	expect_refused(&r, 400, "invalid_json");
	ck_assert_ptr_nonnull(strstr(r.err, "application/x-ndjson"));
	run(&r, JSON, NULL, "[{\"stream\":\"a\"}] ]", NULL);
	expect_refused(&r, 400, "invalid_json");
	ck_assert_ptr_nonnull(strstr(r.err, "after the JSON array"));
	/* Arrays whose structure cannot be followed. */
	run(&r, JSON, NULL, "[{\"stream\":\"a\"} {\"stream\":\"b\"}]", NULL);
	expect_refused(&r, 400, "invalid_json");
	run(&r, JSON, NULL, "[{\"stream\":\"a\"},", NULL);
	expect_refused(&r, 400, "invalid_json");
	run(&r, JSON, NULL, "[{\"stream\":\"a\"}", NULL);
	expect_refused(&r, 400, "invalid_json");
	run(&r, JSON, NULL, "[1,]", NULL);
	expect_refused(&r, 400, "invalid_json");
	run(&r, JSON, NULL, "[,1]", NULL);
	expect_refused(&r, 400, "invalid_json");
	run(&r, JSON, NULL, "[{\"a\":\"unterminated}]", NULL);
	expect_refused(&r, 400, "invalid_json");
	/* A UTF-8 byte order mark is skipped. */
	run(&r, JSON, NULL, "\xef\xbb\xbf{\"stream\":\"a\"}", NULL);
	expect_event(&r, 0, 0, "{\"stream\":\"a\"}", "a");
	ingest_body_batch_free(&r.b);
	run(&r, NDJSON, NULL, "\xef\xbb\xbf{\"stream\":\"a\"}\n", NULL);
	expect_event(&r, 0, 0, "{\"stream\":\"a\"}", "a");
	ingest_body_batch_free(&r.b);
}
END_TEST

START_TEST(test_stream)
{
	struct res r;
	char body[512];

	run(&r, JSON, NULL, "[{\"stream\":\"own\"},{\"n\":1}]", "web.access:v2_x-1");
	expect_event(&r, 0, 0, "{\"stream\":\"own\"}", "own");
	expect_event(&r, 1, 1, "{\"n\":1}", "web.access:v2_x-1");
	ingest_body_batch_free(&r.b);

	run(&r, JSON, NULL, "{}", "bad stream");
	expect_refused(&r, 400, "invalid_parameter");
	run(&r, JSON, NULL, "{}", "");
	expect_refused(&r, 400, "invalid_parameter");

	expect_one_reject("{\"n\":1}", "missing_stream", "?stream=");
	expect_one_reject("{\"stream\":\"\"}", "invalid_stream",
			  "event.stream: must be 1-128 characters of A-Za-z0-9._:-");
	expect_one_reject("{\"stream\":\"a/b\"}", "invalid_stream", NULL);
	expect_one_reject("{\"stream\":\"caf\xc3\xa9\"}", "invalid_stream", NULL);
	expect_one_reject("{\"stream\":\"a\\u0000b\"}", "invalid_stream", NULL);
	expect_one_reject("{\"stream\":\"a\\nb\"}", "invalid_stream", NULL);
	expect_one_reject("{\"stream\":7}", "invalid_stream", "must be a string");
	expect_one_reject("{\"stream\":null}", "invalid_stream", "must be a string");
	expect_one_reject("{\"stream\":{\"a\":1}}", "invalid_stream", "must be a string");
	/* 128 characters pass, 129 do not. */
	snprintf(body, sizeof(body), "{\"stream\":\"%0128d\"}", 0);
	run(&r, JSON, NULL, body, NULL);
	ck_assert_uint_eq(r.b.nevents, 1);
	ck_assert_uint_eq(strlen(r.b.events[0].stream), 128);
	ingest_body_batch_free(&r.b);
	snprintf(body, sizeof(body), "{\"stream\":\"%0129d\"}", 0);
	expect_one_reject(body, "invalid_stream", NULL);

	/* Escaped names and values mean what they decode to; the first "stream" wins; a nested
	 * one is not the event's. */
	run(&r, JSON, NULL, "{\"st\\u0072eam\":\"w\\u0065b\"}", NULL);
	expect_event(&r, 0, 0, "{\"st\\u0072eam\":\"w\\u0065b\"}", "web");
	ingest_body_batch_free(&r.b);
	run(&r, JSON, NULL, "{\"stream\":\"first\",\"stream\":\"second\"}", NULL);
	ck_assert_str_eq(r.b.events[0].stream, "first");
	ingest_body_batch_free(&r.b);
	run(&r, JSON, NULL, "{\"inner\":{\"stream\":\"no\",\"ts\":5,\"id\":\"no\"},\"x\":[{\"stream\":\"no\"}]}",
	    "dflt");
	ck_assert_str_eq(r.b.events[0].stream, "dflt");
	ck_assert_int_eq(r.b.events[0].ts_ms, NOW);
	ck_assert_str_eq(r.b.events[0].client_id, "");
	ingest_body_batch_free(&r.b);
	/* A member named like ours by a prefix or case is not ours. */
	run(&r, JSON, NULL, "{\"streams\":\"x\",\"Stream\":\"y\",\"tss\":1,\"ID\":2}", "dflt");
	ck_assert_uint_eq(r.b.nevents, 1);
	ck_assert_str_eq(r.b.events[0].stream, "dflt");
	ingest_body_batch_free(&r.b);
}
END_TEST

static int64_t ts_of(const char *body)
{
	struct res r;
	int64_t ts;

	run(&r, JSON, NULL, body, "s");
	ck_assert_msg(r.rc == 0 && r.b.nevents == 1, "%s: %s", body,
		      r.b.nrejects ? r.b.rejects[0].message : r.err);
	ts = r.b.events[0].ts_ms;
	ingest_body_batch_free(&r.b);
	return ts;
}

START_TEST(test_ts)
{
	char body[128];

	ck_assert_int_eq(ts_of("{\"ts\":\"2026-11-26T17:55:07.123Z\"}"), NOW);
	ck_assert_int_eq(ts_of("{\"ts\":\"2026-11-26t12:25:07.123456-05:30\"}"), NOW);
	ck_assert_int_eq(ts_of("{\"ts\":1795715707123}"), NOW);
	ck_assert_int_eq(ts_of("{\"ts\":\"2026-11-26T17:55:07.123\\u005a\"}"), NOW);
	ck_assert_int_eq(ts_of("{\"n\":1}"), NOW);
	ck_assert_int_eq(ts_of("{\"ts\":946684800000}"), INGEST_BODY_TS_MIN_MS);
	ck_assert_int_eq(ts_of("{\"ts\":\"2000-01-01T00:00:00Z\"}"), INGEST_BODY_TS_MIN_MS);
	/* Up to a day ahead of the receive time. */
	snprintf(body, sizeof(body), "{\"ts\":%lld}", (long long)(NOW + 86400000));
	ck_assert_int_eq(ts_of(body), NOW + 86400000);

	snprintf(body, sizeof(body), "{\"stream\":\"s\",\"ts\":%lld}", (long long)(NOW + 86400001));
	expect_one_reject(body, "ts_out_of_range", "24 hours");
	expect_one_reject("{\"stream\":\"s\",\"ts\":946684799999}", "ts_out_of_range",
			  "before 2000-01-01");
	expect_one_reject("{\"stream\":\"s\",\"ts\":1795715707}", "ts_out_of_range", "seconds");
	expect_one_reject("{\"stream\":\"s\",\"ts\":-5}", "ts_out_of_range", NULL);
	expect_one_reject("{\"stream\":\"s\",\"ts\":99999999999999999999999}", "ts_out_of_range",
			  NULL);
	expect_one_reject("{\"stream\":\"s\",\"ts\":1795715707123.5}", "invalid_ts",
			  "whole epoch milliseconds");
	expect_one_reject("{\"stream\":\"s\",\"ts\":1.795715707123e12}", "invalid_ts", NULL);
	expect_one_reject("{\"stream\":\"s\",\"ts\":\"2026-02-30T00:00:00Z\"}", "invalid_ts",
			  "event.ts: ");
	expect_one_reject("{\"stream\":\"s\",\"ts\":\"yesterday\"}", "invalid_ts", NULL);
	expect_one_reject("{\"stream\":\"s\",\"ts\":\"1795715707123\"}", "invalid_ts", NULL);
	expect_one_reject("{\"stream\":\"s\",\"ts\":\"\"}", "invalid_ts", NULL);
	expect_one_reject("{\"stream\":\"s\",\"ts\":true}", "invalid_ts", "RFC 3339");
	expect_one_reject("{\"stream\":\"s\",\"ts\":null}", "invalid_ts", NULL);
	expect_one_reject("{\"stream\":\"s\",\"ts\":[1]}", "invalid_ts", NULL);
	memset(body, 0, sizeof(body));
	strcpy(body, "{\"stream\":\"s\",\"ts\":\"2026-11-26T17:55:07.");
	memset(body + strlen(body), '1', 80);
	strcat(body, "Z\"}");
	expect_one_reject(body, "invalid_ts", NULL);
}
END_TEST

START_TEST(test_client_id)
{
	struct res r;
	char body[512];

	run(&r, JSON, NULL, "{\"stream\":\"s\",\"id\":\"order-17:retry.2_A\"}", NULL);
	ck_assert_str_eq(r.b.events[0].client_id, "order-17:retry.2_A");
	ingest_body_batch_free(&r.b);
	expect_one_reject("{\"stream\":\"s\",\"id\":\"\"}", "invalid_id", "event.id: must be 1-128");
	expect_one_reject("{\"stream\":\"s\",\"id\":\"a b\"}", "invalid_id", NULL);
	expect_one_reject("{\"stream\":\"s\",\"id\":17}", "invalid_id", "must be a string");
	expect_one_reject("{\"stream\":\"s\",\"id\":null}", "invalid_id", NULL);
	snprintf(body, sizeof(body), "{\"stream\":\"s\",\"id\":\"%0128d\"}", 7);
	run(&r, JSON, NULL, body, NULL);
	ck_assert_uint_eq(strlen(r.b.events[0].client_id), 128);
	ingest_body_batch_free(&r.b);
	snprintf(body, sizeof(body), "{\"stream\":\"s\",\"id\":\"%0129d\"}", 7);
	expect_one_reject(body, "invalid_id", NULL);
}
END_TEST

/* Every accepted event, at the limits, fits the envelope its payload travels in. */
START_TEST(test_accepted_events_fit_the_envelope)
{
	ingest_body_limits lim = LIM;
	char *deep = deep_event(INGEST_BODY_MAX_DEPTH_CAP), *big, *body;
	struct res r;
	size_t n;

	lim.max_event_bytes = 1u << 30; /* capped */
	lim.max_body_bytes = 2u << 20;
	big = object_of(INGEST_BODY_EVENT_BYTES_CAP);
	n = strlen(deep) + strlen(big) + 64;
	body = malloc(n);
	ck_assert_ptr_nonnull(body);
	snprintf(body, n, "%s\n%s\n{\"stream\":\"s\",\"m\":\"\\ud83d\\ude00\\u0000\"}\n", deep, big);
	run_lim(&r, NDJSON, NULL, body, strlen(body), NULL, &lim);
	ck_assert_uint_eq(r.b.nevents, 3);
	for (size_t i = 0; i < r.b.nevents; i++) {
		struct proto_event ev = { 0 }, back;
		char err[256] = "", *json = NULL;
		size_t len = 0;

		strcpy(ev.id, "0193a6c2-7f1e-7b3a-9c4d-5e6f7a8b9c0d");
		strcpy(ev.org_id, ORG);
		strcpy(ev.stream, r.b.events[i].stream);
		ev.ts_ms = r.b.events[i].ts_ms;
		ev.received_at_ms = NOW;
		ev.payload = strndup(r.b.events[i].payload, r.b.events[i].payload_len);
		ev.payload_len = r.b.events[i].payload_len;
		ck_assert_msg(proto_event_encode(&ev, &json, &len, err, sizeof(err)) == 0,
			      "event %zu: %s", i, err);
		ck_assert_int_eq(proto_event_decode(json, len, &back, err, sizeof(err)), 0);
		ck_assert_uint_eq(back.payload_len, ev.payload_len);
		ck_assert(memcmp(back.payload, ev.payload, ev.payload_len) == 0);
		proto_event_free(&back);
		proto_event_free(&ev);
		free(json);
	}
	ingest_body_batch_free(&r.b);
	free(body);
	free(big);
	big = object_of(INGEST_BODY_EVENT_BYTES_CAP + 1);
	run_lim(&r, NDJSON, NULL, big, strlen(big), NULL, &lim);
	expect_reject(&r, 0, 0, "event_too_large", NULL);
	ingest_body_batch_free(&r.b);
	free(big);
	free(deep);
}
END_TEST

START_TEST(test_metrics)
{
	dl_metrics_registry *reg = dl_metrics_registry_new();
	ingest_body_metrics m, m2;
	const char *wire[] = { "gzip", "wire" }, *dec[] = { "gzip", "decoded" };
	static const char plain[] = "{\"stream\":\"a\"}\n{\"stream\":\"a\"}\n";
	double v = -1;
	size_t zl;
	char *z = gzip_of(plain, strlen(plain), &zl);
	struct res r;

	ck_assert_int_eq(ingest_body_metrics_init(&m, reg), 0);
	ck_assert_int_eq(dl_metric_get(m.bytes, dec, &v), 0);
	ck_assert(v == 0);
	run_lim(&r, NDJSON, "gzip", z, zl, NULL, &LIM);
	ingest_body_metrics_batch(&m, &r.b, zl);
	ingest_body_metrics_batch(NULL, &r.b, zl);
	ck_assert_int_eq(dl_metric_get(m.bytes, wire, &v), 0);
	ck_assert(v == (double)zl);
	ck_assert_int_eq(dl_metric_get(m.bytes, dec, &v), 0);
	ck_assert(v == (double)strlen(plain));
	ingest_body_batch_free(&r.b);
	/* Registering twice shares the family. */
	ck_assert_int_eq(ingest_body_metrics_init(&m2, reg), 0);
	ck_assert_ptr_eq(m2.bytes, m.bytes);
	dl_metrics_registry_free(reg);
	free(z);
}
END_TEST

static Suite *ingest_body_suite(void)
{
	Suite *s = suite_create("ingest_body");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_single_object);
	tcase_add_test(tc, test_array_keeps_exact_bytes);
	tcase_add_test(tc, test_ndjson_lines);
	tcase_add_test(tc, test_partial_acceptance);
	tcase_add_test(tc, test_all_rejected_is_still_a_batch);
	tcase_add_test(tc, test_content_types);
	tcase_add_test(tc, test_encodings_refused);
	tcase_add_test(tc, test_gzip);
	tcase_add_test(tc, test_zstd);
	tcase_add_test(tc, test_bombs_stop_at_the_limit);
	tcase_add_test(tc, test_zstd_window_over_the_limit);
	tcase_add_test(tc, test_body_limit);
	tcase_add_test(tc, test_event_size_limit);
	tcase_add_test(tc, test_events_per_request_limit);
	tcase_add_test(tc, test_depth_limit);
	tcase_add_test(tc, test_text_rules);
	tcase_add_test(tc, test_grammar);
	tcase_add_test(tc, test_body_level_errors);
	tcase_add_test(tc, test_stream);
	tcase_add_test(tc, test_ts);
	tcase_add_test(tc, test_client_id);
	tcase_add_test(tc, test_accepted_events_fit_the_envelope);
	tcase_add_test(tc, test_metrics);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(ingest_body_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
