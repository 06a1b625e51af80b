/* SPDX-License-Identifier: Apache-2.0 */
/* Unit suite for services/detector/det_anomaly: a CBAD verdict becomes a valid anomaly message. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto_anomaly.h"
#include "proto/proto_event.h"
#include "services/detector/det_anomaly.h"

#define ORG "0b7e4f3c-5a1d-4c8e-9f2a-1d3e5b7c9a0f"

static void event(struct proto_event *ev, const char *id)
{
	memset(ev, 0, sizeof(*ev));
	strcpy(ev->id, id);
	strcpy(ev->org_id, ORG);
	strcpy(ev->stream, "checkout-api.logs");
	ev->ts_ms = INT64_C(1795715707123);
}

static cbad_result *verdict(cbad_kind kind)
{
	cbad_result *r = calloc(1, sizeof(*r));

	ck_assert_ptr_nonnull(r);
	r->anomaly = true;
	r->kind = kind;
	r->severity = CBAD_SEVERITY_HIGH;
	r->score = 0.61;
	r->p_value = 0.0004;
	r->nsignals = 2;
	strcpy(r->signals[0].name, "novelty");
	r->signals[0].value = 42.5;
	strcpy(r->signals[1].name, "value:latency ms"); /* a space is not a name character */
	r->signals[1].value = NAN;
	strcpy(r->signal, "novelty");
	r->value = 42.5;
	r->base_low = 3, r->base_median = 1, r->base_high = 2; /* out of order */
	strcpy(r->summary, "The event compresses 61% worse than its baseline.");
	r->nevidence = 2;
	strcpy(r->evidence[0].name, "status");
	strcpy(r->evidence[0].value, "402");
	strcpy(r->evidence[0].detail, "status 402 is rare");
	strcpy(r->evidence[1].name, "new_token");
	strcpy(r->evidence[1].value, "card declined");
	r->evidence[1].bits = 18.25;
	strcpy(r->excerpt, "{\"msg\":\"card declined\"}");
	r->window_start_ts = 2000, r->window_end_ts = 1000;
	r->window_events = 200;
	return r;
}

/* Every field a consumer reads survives the encoder's own validation and a decode. */
START_TEST(test_anomaly_encodes_and_decodes)
{
	struct proto_event ev;
	cbad_result *r = verdict(CBAD_KIND_WINDOW);
	struct proto_anomaly *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
	char *json = NULL, err[256] = "";
	size_t len = 0;

	event(&ev, "0193a6c2-7f1e-7b3a-9c4d-5e6f7a8b9c0d");
	ck_assert_int_eq(det_anomaly_from_result(&ev, r, 0.7, 1795715707402, a), 0);
	ck_assert_int_eq(proto_anomaly_encode(a, &json, &len, err, sizeof(err)), 0);
	ck_assert_int_eq(proto_anomaly_decode(json, len, b, err, sizeof(err)), 0);
	ck_assert_str_eq(b->org_id, ORG);
	ck_assert_str_eq(b->stream, "checkout-api.logs");
	ck_assert_str_eq(b->event_id, "0193a6c2-7f1e-7b3a-9c4d-5e6f7a8b9c0d");
	ck_assert_int_eq(b->event_ts_ms, INT64_C(1795715707123));
	ck_assert_int_eq(b->kind, PROTO_ANOMALY_KIND_WINDOW);
	ck_assert_int_eq(b->severity, PROTO_ANOMALY_SEVERITY_HIGH);
	ck_assert(b->has_window);
	ck_assert_int_eq(b->window.start_ts_ms, 2000);
	ck_assert_int_ge(b->window.end_ts_ms, b->window.start_ts_ms);
	ck_assert_int_eq(b->window.events, 200);
	ck_assert_uint_eq(b->nsignals, 2);
	ck_assert_str_eq(b->signals[1].name, "value:latency_ms");
	ck_assert(b->signals[1].value == 0.0);
	ck_assert(b->explanation.baseline_low <= b->explanation.baseline_median);
	ck_assert(b->explanation.baseline_median <= b->explanation.baseline_high);
	ck_assert_str_eq(b->explanation.summary, r->summary);
	ck_assert(b->explanation.evidence[0].has_value);
	ck_assert(b->explanation.evidence[0].value == 402.0);
	ck_assert(!b->explanation.evidence[1].has_value);
	ck_assert_str_eq(b->explanation.evidence[1].detail, "card declined");
	ck_assert(b->explanation.evidence[1].bits == 18.25);
	ck_assert_str_eq(b->excerpt, r->excerpt);
	ck_assert_str_eq(b->detector.version, CBAD_VERSION);
	ck_assert(b->detector.sensitivity == 0.7);
	free(json);
	free(a);
	free(b);
	free(r);
}
END_TEST

/* The id depends on the event's identity only: a replay gives the same id, another event or
 * another stream a different one. */
START_TEST(test_anomaly_id_derived)
{
	struct proto_event ev;
	cbad_result *r = verdict(CBAD_KIND_EVENT);
	struct proto_anomaly *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
	char other[PROTO_ID_MAX + 1];

	event(&ev, "evt-1");
	ck_assert_int_eq(det_anomaly_from_result(&ev, r, 0.5, 1, a), 0);
	r->score = 0.9; /* a replay judged differently still names the same anomaly */
	ck_assert_int_eq(det_anomaly_from_result(&ev, r, 0.5, 99, b), 0);
	ck_assert_str_eq(a->id, b->id);
	ck_assert_uint_eq(strlen(a->id), 36);
	det_anomaly_id(ORG, "checkout-api.logs", "evt-2", other);
	ck_assert_str_ne(a->id, other);
	det_anomaly_id(ORG, "checkout-api.log", "sevt-1", other); /* same bytes, other split */
	ck_assert_str_ne(a->id, other);
	free(a);
	free(b);
	free(r);
}
END_TEST

/* An entity verdict without a field still satisfies the schema; a non-anomaly is refused. */
START_TEST(test_anomaly_entity_and_refusal)
{
	struct proto_event ev;
	cbad_result *r = verdict(CBAD_KIND_ENTITY);
	struct proto_anomaly *a = calloc(1, sizeof(*a));
	char *json = NULL, err[256] = "";
	size_t len = 0;

	event(&ev, "evt-1");
	ck_assert_int_eq(det_anomaly_from_result(&ev, r, 0.5, 1, a), 0);
	ck_assert(a->has_entity);
	ck_assert_int_eq(proto_anomaly_encode(a, &json, &len, err, sizeof(err)), 0);
	free(json);
	strcpy(a->id, "untouched");
	r->anomaly = false;
	ck_assert_int_eq(det_anomaly_from_result(&ev, r, 0.5, 1, a), -EINVAL);
	ck_assert_str_eq(a->id, "untouched");
	free(a);
	free(r);
}
END_TEST

/* Text is cut on character boundaries, never inside a UTF-8 sequence. */
START_TEST(test_anomaly_utf8_cut)
{
	struct proto_event ev;
	cbad_result *r = verdict(CBAD_KIND_EVENT);
	struct proto_anomaly *a = calloc(1, sizeof(*a));
	char *json = NULL, err[256] = "";
	size_t len = 0, i;

	event(&ev, "evt-1");
	/* 127 bytes of two-byte characters plus a detail: over 256 characters together */
	for (i = 0; i + 2 < sizeof(r->evidence[1].value); i += 2)
		memcpy(r->evidence[1].value + i, "\xc3\xa9", 2);
	r->evidence[1].value[i] = '\0';
	memset(r->evidence[1].detail, 'x', sizeof(r->evidence[1].detail) - 1);
	r->evidence[1].detail[sizeof(r->evidence[1].detail) - 1] = '\0';
	ck_assert_int_eq(det_anomaly_from_result(&ev, r, 0.5, 1, a), 0);
	ck_assert_int_eq(proto_anomaly_encode(a, &json, &len, err, sizeof(err)), 0);
	free(json);
	free(a);
	free(r);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("det_anomaly");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_anomaly_encodes_and_decodes);
	tcase_add_test(tc, test_anomaly_id_derived);
	tcase_add_test(tc, test_anomaly_entity_and_refusal);
	tcase_add_test(tc, test_anomaly_utf8_cut);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
