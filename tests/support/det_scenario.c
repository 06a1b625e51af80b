/* SPDX-License-Identifier: Apache-2.0 */
/* det_scenario: a labeled stream from ../shared/datasets/streams for the detector's suites. */
#include "tests/support/det_scenario.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <zlib.h>

#include "common/dl_id.h"
#include "common/dl_time.h"
#include "proto/proto_anomaly.h"
#include "proto/proto_event.h"
#include "proto/proto_topics.h"
#include "services/detector/cbad/cbad.h"
#include "tests/support/dl_itest.h"

void det_scenario_load(det_scenario *sc, const char *name, size_t n)
{
	char path[1024], buf[1 << 16];
	gzFile gz;
	FILE *f;
	size_t i = 0;

	sc->lines = calloc(n, sizeof(*sc->lines));
	sc->lens = calloc(n, sizeof(*sc->lens));
	sc->ts = calloc(n, sizeof(*sc->ts));
	sc->label = calloc(n, sizeof(*sc->label));
	ck_assert(sc->lines && sc->lens && sc->ts && sc->label);
	/* A slice of the labelled stream kept in the repository (tests/data/README.md), so the
	 * suites need nothing beside it. */
	snprintf(path, sizeof(path), "%s/tests/data/streams/%s.ndjson.gz",
		 dl_itest_env("DRIFTLOCK_SOURCE_ROOT"), name);
	gz = gzopen(path, "rb");
	ck_assert_msg(gz != NULL, "cannot open %s", path);
	while (i < n && gzgets(gz, buf, sizeof(buf))) {
		size_t len = strlen(buf);
		cJSON *j, *t;

		while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
			buf[--len] = '\0';
		j = cJSON_Parse(buf);
		t = cJSON_GetObjectItem(j, "ts");
		ck_assert_msg(cJSON_IsString(t), "%s: line %zu has no \"ts\"", path, i);
		ck_assert_int_eq(dl_time_parse(t->valuestring, strlen(t->valuestring), &sc->ts[i],
					       NULL, 0),
				 0);
		cJSON_Delete(j);
		sc->lines[i] = strdup(buf);
		sc->lens[i] = len;
		i++;
	}
	gzclose(gz);
	sc->n = i;
	ck_assert_uint_eq(sc->n, n);
	snprintf(path + strlen(path) - strlen(".ndjson.gz"), 16, ".labels.csv");
	f = fopen(path, "r");
	ck_assert_msg(f != NULL, "cannot open %s", path);
	ck_assert_ptr_nonnull(fgets(buf, sizeof(buf), f)); /* header */
	while (fgets(buf, sizeof(buf), f)) {
		unsigned long line;
		int label;

		if (sscanf(buf, "%lu,%d", &line, &label) == 2 && line < n)
			sc->label[line] = label == 1;
	}
	fclose(f);
}

bool *det_scenario_expected(const det_scenario *sc, size_t *ret_count)
{
	bool *want = calloc(sc->n, sizeof(*want));
	cbad_settings s;
	cbad_detector *d;
	cbad_result *r = malloc(sizeof(*r));
	char err[256];

	ck_assert(want && r);
	cbad_settings_default(&s);
	ck_assert_int_eq(cbad_detector_new(&s, &d, err, sizeof(err)), 0);
	*ret_count = 0;
	for (size_t i = 0; i < sc->n; i++) {
		cbad_detector_process(d, sc->lines[i], sc->lens[i], sc->ts[i], r);
		want[i] = r->anomaly;
		*ret_count += r->anomaly;
	}
	cbad_detector_free(d);
	free(r);
	return want;
}

char *det_scenario_envelope(const det_scenario *sc, size_t i, const char *org, const char *stream,
			    size_t *ret_len)
{
	struct proto_event ev;
	char *json = NULL, err[256] = "";

	memset(&ev, 0, sizeof(ev));
	snprintf(ev.id, sizeof(ev.id), "ev-%zu", i);
	snprintf(ev.org_id, sizeof(ev.org_id), "%s", org);
	snprintf(ev.stream, sizeof(ev.stream), "%s", stream);
	ev.ts_ms = sc->ts[i];
	ev.received_at_ms = sc->ts[i];
	ev.source = PROTO_EVENT_SOURCE_HTTP;
	ev.payload = sc->lines[i];
	ev.payload_len = sc->lens[i];
	ck_assert_msg(proto_event_encode(&ev, &json, ret_len, err, sizeof(err)) == 0, "%s", err);
	return json;
}

void det_scenario_free(det_scenario *sc)
{
	for (size_t i = 0; i < sc->n; i++)
		free(sc->lines[i]);
	free(sc->lines);
	free(sc->lens);
	free(sc->ts);
	free(sc->label);
}

void det_scenario_produce(dl_kafka_producer *prod, const det_scenario *sc, const char *org,
			  const char *stream, size_t from, size_t to)
{
	char err[256], key[PROTO_STREAM_KEY_MAX + 1];

	ck_assert_int_eq(proto_topics_stream_key(org, stream, key, sizeof(key), NULL, NULL, 0), 0);
	for (size_t i = from; i < to; i++) {
		size_t len = 0;
		char *json = det_scenario_envelope(sc, i, org, stream, &len);

		ck_assert_int_eq(dl_kafka_producer_produce(prod, DL_TOPIC_EVENTS, key, strlen(key),
							   json, len, NULL, NULL, NULL, err,
							   sizeof(err)),
				 0);
		free(json);
		if ((i & 1023) == 0)
			dl_kafka_producer_poll(prod, 0);
	}
	ck_assert_int_eq(dl_kafka_producer_flush(prod, 30000), 0);
}

size_t det_scenario_read_anomalies(const char *org, size_t want, int timeout_ms, bool *seen,
				   size_t n)
{
	dl_itest_msg *m = NULL;
	size_t got = dl_itest_topic_read(DL_TOPIC_ANOMALIES, org, want, timeout_ms, &m);
	struct proto_anomaly *a = malloc(sizeof(*a));
	char err[256], id[PROTO_ID_MAX + 1];

	ck_assert_ptr_nonnull(a);
	for (size_t i = 0; i < got; i++) {
		size_t line;

		ck_assert_msg(proto_anomaly_decode(m[i].value, m[i].len, a, err, sizeof(err)) == 0,
			      "%s", err);
		ck_assert_str_eq(a->org_id, org);
		ck_assert_int_eq(sscanf(a->event_id, "ev-%zu", &line), 1);
		ck_assert_uint_lt(line, n);
		snprintf(id, sizeof(id), "%s", a->id);
		ck_assert(dl_id_is_uuid(id));
		seen[line] = true;
		proto_anomaly_free(a);
	}
	dl_itest_msgs_free(m, got);
	free(a);
	return got;
}
