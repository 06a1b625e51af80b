/* SPDX-License-Identifier: Apache-2.0 */
/* test_det_state: snapshot keys, header encode/decode, and corrupt, foreign, other-version or oversized values refused. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "services/detector/cbad/cbad.h"
#include "services/detector/det_state.h"

#define ORG "0b7e4f3c-5a1d-4c8e-9f2a-1d3e5b7c9a0f"
#define OTHER_ORG "1c8f5a4d-6b2e-4d9f-8a3b-2e4f6c8d0b1a"

/* A detector that saw n small events, saved by the engine into *ret / *ret_len. */
static void engine_state(int n, void **ret, size_t *ret_len)
{
	cbad_settings s;
	cbad_detector *d = NULL;
	cbad_result r;
	char err[256] = "", ev[160];

	cbad_settings_default(&s);
	ck_assert_int_eq(cbad_detector_new(&s, &d, err, sizeof(err)), 0);
	for (int i = 0; i < n; i++) {
		int len = snprintf(ev, sizeof(ev), "{\"user\":\"u%03d\",\"action\":\"%s\",\"ms\":%d}",
				   i % 37, i % 3 ? "view" : "edit", 20 + i % 11);
		ck_assert_int_eq(cbad_detector_process(d, ev, (size_t)len, 1710000000000 + i * 100,
						       &r), 0);
	}
	ck_assert_msg(cbad_detector_save(d, ret, ret_len, err, sizeof(err)) == 0, "%s", err);
	cbad_detector_free(d);
}

static det_state_header header(const char *identity, int32_t partition, int64_t offset)
{
	det_state_header h;

	memset(&h, 0, sizeof(h));
	snprintf(h.identity, sizeof(h.identity), "%s", identity);
	h.partition = partition;
	h.next_offset = offset;
	h.saved_at_ms = 1764200000123;
	return h;
}

/* The CRC of a value whose bytes from offset 8 were changed on purpose, so that only the
 * check under test can refuse it. */
static void fix_crc(uint8_t *v, size_t len)
{
	uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), v + 8, (uInt)(len - 8));

	v[4] = (uint8_t)(crc >> 24);
	v[5] = (uint8_t)(crc >> 16);
	v[6] = (uint8_t)(crc >> 8);
	v[7] = (uint8_t)crc;
}

START_TEST(test_key_layout)
{
	char key[DET_STATE_KEY_MAX], err[256] = "", stream[129];

	ck_assert_int_eq(det_state_key(ORG, "web.access:eu-1", key, sizeof(key), err, sizeof(err)),
			 (int)strlen("dl:det:{" ORG "}:web.access:eu-1"));
	ck_assert_str_eq(key, "dl:det:{" ORG "}:web.access:eu-1");

	/* The longest stream fits the documented bound. */
	memset(stream, 'x', 128);
	stream[128] = '\0';
	ck_assert_int_gt(det_state_key(ORG, stream, key, sizeof(key), err, sizeof(err)), 0);
	ck_assert_uint_lt(strlen(key), DET_STATE_KEY_MAX);

	/* Names that could split or merge keys are refused, not escaped. */
	ck_assert_int_eq(det_state_key("0B7E4F3C-5A1D-4C8E-9F2A-1D3E5B7C9A0F", "s", key, sizeof(key),
				       err, sizeof(err)), -EINVAL);
	ck_assert_msg(strstr(err, "org id") != NULL, "%s", err);
	ck_assert_int_eq(det_state_key(ORG, "a}b", key, sizeof(key), err, sizeof(err)), -EINVAL);
	ck_assert_msg(strstr(err, "stream") != NULL, "%s", err);
	ck_assert_int_eq(det_state_key(ORG, "", key, sizeof(key), err, sizeof(err)), -EINVAL);
	ck_assert_int_eq(det_state_key(NULL, "s", key, sizeof(key), err, sizeof(err)), -EINVAL);
	stream[128] = 'x';
	stream[127] = '\0';
	ck_assert_int_gt(det_state_key(ORG, stream, key, sizeof(key), err, sizeof(err)), 0);
}
END_TEST

START_TEST(test_encode_decode_round_trip)
{
	det_state_header h = header(ORG ":orders", 7, 123456789012LL), got;
	void *engine = NULL, *val = NULL;
	size_t elen = 0, vlen = 0, glen = 0;
	const void *gengine = NULL;
	cbad_detector *d = NULL;
	char err[256] = "";
	const uint8_t *v;

	engine_state(300, &engine, &elen);
	ck_assert_int_eq(det_state_encode(&h, engine, elen, DET_STATE_MAX_BYTES, &val, &vlen, err,
					  sizeof(err)), 0);
	v = val;
	ck_assert_uint_eq(vlen, DET_STATE_HEADER_BYTES + strlen(ORG ":orders") + elen);
	/* The documented layout, byte for byte. */
	ck_assert(memcmp(v, "DLDS", 4) == 0);
	ck_assert_int_eq(v[8], 0);
	ck_assert_int_eq(v[9], DET_STATE_FORMAT_VERSION);
	ck_assert_int_eq((v[10] << 8) | v[11], (int)strlen(ORG ":orders"));
	ck_assert_int_eq((v[12] << 24) | (v[13] << 16) | (v[14] << 8) | v[15], 7);
	ck_assert(memcmp(v + DET_STATE_HEADER_BYTES, ORG ":orders", strlen(ORG ":orders")) == 0);

	ck_assert_msg(det_state_decode(val, vlen, ORG ":orders", &got, &gengine, &glen, err,
				       sizeof(err)) == 0, "%s", err);
	ck_assert_uint_eq(got.version, DET_STATE_FORMAT_VERSION);
	ck_assert_int_eq(got.partition, 7);
	ck_assert_int_eq(got.next_offset, 123456789012LL);
	ck_assert_int_eq(got.saved_at_ms, 1764200000123LL);
	ck_assert_str_eq(got.identity, ORG ":orders");
	ck_assert_uint_eq(glen, elen);
	ck_assert(memcmp(gengine, engine, elen) == 0);
	/* What comes out is what the engine loads. */
	ck_assert_msg(cbad_detector_load(gengine, glen, &d, err, sizeof(err)) == 0, "%s", err);
	cbad_detector_free(d);

	/* identity NULL: any stream's snapshot decodes (for tools). */
	ck_assert_int_eq(det_state_decode(val, vlen, NULL, &got, &gengine, &glen, err, sizeof(err)),
			 0);
	free(val);
	free(engine);
}
END_TEST

START_TEST(test_corrupt_refused)
{
	det_state_header h = header(ORG ":orders", 2, 99), got, untouched;
	void *engine = NULL, *val = NULL;
	size_t elen = 0, vlen = 0, glen = 77;
	const void *gengine = &glen;
	char err[256] = "";
	uint8_t *v;

	engine_state(100, &engine, &elen);
	ck_assert_int_eq(det_state_encode(&h, engine, elen, DET_STATE_MAX_BYTES, &val, &vlen, err,
					  sizeof(err)), 0);
	v = val;
	memset(&got, 0x5a, sizeof(got));
	untouched = got;

	/* One flipped bit anywhere after the magic: header, identity, engine state, last byte. */
	const size_t where[] = { 4, 9, 13, 20, 27, 33, DET_STATE_HEADER_BYTES + 3,
				 DET_STATE_HEADER_BYTES + 50, vlen / 2, vlen - 1 };
	for (size_t i = 0; i < sizeof(where) / sizeof(where[0]); i++) {
		v[where[i]] ^= 0x10;
		err[0] = '\0';
		ck_assert_int_eq(det_state_decode(val, vlen, ORG ":orders", &got, &gengine, &glen,
						  err, sizeof(err)), -EBADMSG);
		ck_assert_msg(err[0] != '\0', "no reason for byte %zu", where[i]);
		v[where[i]] ^= 0x10;
	}
	/* Truncated at any length, and not a snapshot at all. */
	const size_t cut[] = { 0, 3, 35, 36, DET_STATE_HEADER_BYTES + 10, vlen - 1 };
	for (size_t i = 0; i < sizeof(cut) / sizeof(cut[0]); i++)
		ck_assert_int_eq(det_state_decode(val, cut[i], ORG ":orders", &got, &gengine,
						  &glen, err, sizeof(err)), -EBADMSG);
	ck_assert_int_eq(det_state_decode("{\"json\":true, \"padding\":\"........................\"}",
					  52, ORG ":orders", &got, &gengine, &glen, err,
					  sizeof(err)), -EBADMSG);
	ck_assert_msg(strstr(err, "not a detector snapshot") != NULL, "%s", err);
	ck_assert_int_eq(det_state_decode(NULL, 100, ORG ":orders", &got, &gengine, &glen, err,
					  sizeof(err)), -EBADMSG);

	/* Lengths that do not add up even with a valid CRC. */
	v[33] ^= 0x01;
	fix_crc(v, vlen);
	ck_assert_int_eq(det_state_decode(val, vlen, ORG ":orders", &got, &gengine, &glen, err,
					  sizeof(err)), -EBADMSG);
	ck_assert_msg(strstr(err, "lengths") != NULL, "%s", err);

	/* Outputs untouched by every failure. */
	ck_assert(memcmp(&got, &untouched, sizeof(got)) == 0);
	ck_assert_uint_eq(glen, 77);
	ck_assert_ptr_eq(gengine, &glen);
	free(val);
	free(engine);
}
END_TEST

START_TEST(test_foreign_refused)
{
	det_state_header h = header(ORG ":orders", 0, 5), got;
	void *engine = NULL, *val = NULL;
	size_t elen = 0, vlen = 0, glen;
	const void *gengine;
	char err[256] = "";

	engine_state(50, &engine, &elen);
	ck_assert_int_eq(det_state_encode(&h, engine, elen, DET_STATE_MAX_BYTES, &val, &vlen, err,
					  sizeof(err)), 0);
	/* The same bytes asked for as another stream, or the same stream of another org. */
	ck_assert_int_eq(det_state_decode(val, vlen, ORG ":payments", &got, &gengine, &glen, err,
					  sizeof(err)), -EBADMSG);
	ck_assert_msg(strstr(err, "another stream") != NULL && strstr(err, ORG ":orders") != NULL,
		      "%s", err);
	ck_assert_int_eq(det_state_decode(val, vlen, OTHER_ORG ":orders", &got, &gengine, &glen,
					  err, sizeof(err)), -EBADMSG);
	/* A prefix is not the same stream. */
	ck_assert_int_eq(det_state_decode(val, vlen, ORG ":order", &got, &gengine, &glen, err,
					  sizeof(err)), -EBADMSG);
	free(val);
	free(engine);
}
END_TEST

START_TEST(test_other_versions_refused)
{
	det_state_header h = header(ORG ":orders", 1, 10), got;
	void *engine = NULL, *val = NULL;
	size_t elen = 0, vlen = 0, glen;
	const void *gengine;
	char err[256] = "";
	uint8_t *v;

	engine_state(50, &engine, &elen);
	ck_assert_int_eq(det_state_encode(&h, engine, elen, DET_STATE_MAX_BYTES, &val, &vlen, err,
					  sizeof(err)), 0);
	v = val;
	/* An older (0) and a newer (2, 256) format, each with a consistent CRC. */
	const unsigned versions[] = { 0, DET_STATE_FORMAT_VERSION + 1, 256 };
	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		v[8] = (uint8_t)(versions[i] >> 8);
		v[9] = (uint8_t)versions[i];
		fix_crc(v, vlen);
		ck_assert_int_eq(det_state_decode(val, vlen, ORG ":orders", &got, &gengine, &glen,
						  err, sizeof(err)), -EBADMSG);
		ck_assert_msg(strstr(err, "format version") != NULL, "%s", err);
	}
	free(val);
	free(engine);
}
END_TEST

START_TEST(test_encode_limits)
{
	det_state_header h = header(ORG ":orders", 0, 0);
	void *val = (void *)&h;
	size_t vlen = 5;
	char engine[2048], err[256] = "";

	memset(engine, 'e', sizeof(engine));
	/* Over the size limit by one byte: refused with the sizes, nothing made. */
	ck_assert_int_eq(det_state_encode(&h, engine, sizeof(engine),
					  DET_STATE_HEADER_BYTES + strlen(h.identity) + sizeof(engine) - 1,
					  &val, &vlen, err, sizeof(err)), -EMSGSIZE);
	ck_assert_msg(strstr(err, "over the limit") != NULL, "%s", err);
	ck_assert_ptr_eq(val, (void *)&h);
	ck_assert_uint_eq(vlen, 5);
	ck_assert_int_eq(det_state_encode(&h, engine, sizeof(engine),
					  DET_STATE_HEADER_BYTES + strlen(h.identity) + sizeof(engine),
					  &val, &vlen, err, sizeof(err)), 0);
	free(val);

	h.partition = -1;
	ck_assert_int_eq(det_state_encode(&h, engine, 10, DET_STATE_MAX_BYTES, &val, &vlen, err,
					  sizeof(err)), -EINVAL);
	h.partition = 0;
	h.next_offset = -1;
	ck_assert_int_eq(det_state_encode(&h, engine, 10, DET_STATE_MAX_BYTES, &val, &vlen, err,
					  sizeof(err)), -EINVAL);
	h.next_offset = 0;
	ck_assert_int_eq(det_state_encode(&h, engine, 0, DET_STATE_MAX_BYTES, &val, &vlen, err,
					  sizeof(err)), -EINVAL);
	h.identity[0] = '\0';
	ck_assert_int_eq(det_state_encode(&h, engine, 10, DET_STATE_MAX_BYTES, &val, &vlen, err,
					  sizeof(err)), -EINVAL);
}
END_TEST

START_TEST(test_new_and_limits_checked)
{
	det_state *s = (det_state *)&s;
	char err[256] = "";

	ck_assert_int_eq(det_state_new(NULL, NULL, &s, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_eq(s, (det_state *)&s);
	ck_assert_int_eq(det_state_set_limits(NULL, DET_STATE_MAX_BYTES, 0), -EINVAL);
	det_state_free(NULL);
}
END_TEST

int main(void)
{
	Suite *su = suite_create("det_state");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_key_layout);
	tcase_add_test(tc, test_encode_decode_round_trip);
	tcase_add_test(tc, test_corrupt_refused);
	tcase_add_test(tc, test_foreign_refused);
	tcase_add_test(tc, test_other_versions_refused);
	tcase_add_test(tc, test_encode_limits);
	tcase_add_test(tc, test_new_and_limits_checked);
	suite_add_tcase(su, tc);
	sr = srunner_create(su);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
