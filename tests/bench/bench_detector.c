/* SPDX-License-Identifier: Apache-2.0 */
/* bench_detector: fills driftlock.events.v1, times driftlock-detector through /metrics, runs the CBAD reference loop and measures append-to-anomaly latency. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <librdkafka/rdkafka.h>

#include "proto/proto_event.h"
#include "proto/proto_topics.h"
#include "services/detector/cbad/cbad.h"
#include "tests/bench/bench_data.h"
#include "tests/bench/bench_service.h"

/*
 * Modes (tests/bench/detector.sh runs them; each prints one JSON line):
 *   fill     produces --events envelopes to driftlock.events.v1: event i is line i / S of stream
 *            i % S, where the S streams are every (org, dataset) pair of --orgs orgs and the
 *            datasets of --streams; the line's "ts" is the event time, its bytes the payload
 *   engine   the same events, in the same order, through one cbad_detector per stream in this
 *            process (process, then idle when it has work): the engine's own events/s
 *   watch    polls the admin /metrics of the workers on --ports every 10 ms until the sum of
 *            driftlock_detector_events_total reaches --events: the wall-clock time then (ms) and
 *            the seconds since the watch started; also when the first events were seen
 *            processed (first_ms) and how many then (first_events), so a rate can leave out
 *            the consumer's start (group join, offset look-up, first fetch) as the engine's
 *            own timing leaves out its set-up.
 *   latency  produces events from line --from on at --rate events/s for --seconds, then reads
 *            the anomalies appended since it started: for each anomaly of one of these events,
 *            its message timestamp minus the event's (both CreateTime, set by the producers);
 *            with --inject N every Nth event's payload is random text instead of its line (an
 *            outlier for the stream, so the latency rests on more anomalies than the data has)
 */

#define MAX_STREAMS 64
#define MAX_PORTS 8

typedef struct opts {
	const char *mode, *brokers, *dir, *streams;
	long events, orgs, from, seconds, wait_s, inject;
	double rate;
	int ports[MAX_PORTS];
	int nports;
} opts;

typedef struct corpus {
	bench_data_stream *data[MAX_STREAMS];
	size_t ndata;
	char org[MAX_STREAMS][PROTO_ORG_ID_LEN + 1];
	size_t nstreams; /* orgs x datasets: stream s is org s / ndata, dataset s % ndata */
} corpus;

static void die(const char *what, const char *detail)
{
	fprintf(stderr, "bench_detector: %s: %s\n", what, detail);
	exit(1);
}

static void corpus_load(corpus *c, const opts *o)
{
	char list[1024], err[256], *save = NULL;

	snprintf(list, sizeof(list), "%s", o->streams);
	for (char *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
		if (c->ndata == MAX_STREAMS)
			die("--streams", "too many");
		if (bench_data_stream_load(o->dir, name, &c->data[c->ndata], err, sizeof(err)) < 0)
			die(name, err);
		c->ndata++;
	}
	if (c->ndata == 0 || o->orgs < 1 || (size_t)o->orgs * c->ndata > MAX_STREAMS)
		die("streams", "need 1 to 64 (org, dataset) pairs");
	c->nstreams = (size_t)o->orgs * c->ndata;
	for (long i = 0; i < o->orgs; i++)
		snprintf(c->org[i], sizeof(c->org[i]), "b0000000-0000-4000-8000-%012d", (int)(i + 1) % 64);
}

/* The stream and the line of event i counted from line `from`. */
static const bench_data_stream *event_of(const corpus *c, size_t i, size_t from, size_t *ret_s,
					 size_t *ret_line)
{
	size_t s = i % c->nstreams;
	const bench_data_stream *d = c->data[s % c->ndata];

	*ret_s = s;
	*ret_line = from + i / c->nstreams;
	if (*ret_line >= d->n)
		die(d->name, "not enough lines for that many events");
	return d;
}

static char *envelope(const corpus *c, size_t i, size_t from, const char *prefix, size_t *ret_len,
		      char *key, size_t keycap, size_t *ret_keylen, const char *payload)
{
	struct proto_event ev;
	size_t s, line;
	const bench_data_stream *d = event_of(c, i, from, &s, &line);
	char *json = NULL, err[256] = "";

	memset(&ev, 0, sizeof(ev));
	snprintf(ev.id, sizeof(ev.id), "%s-%zu", prefix, i);
	snprintf(ev.org_id, sizeof(ev.org_id), "%s", c->org[s / c->ndata]);
	snprintf(ev.stream, sizeof(ev.stream), "%s", d->name);
	ev.ts_ms = d->ts_ms[line];
	ev.received_at_ms = bench_wall_ms();
	ev.source = PROTO_EVENT_SOURCE_HTTP;
	ev.payload = payload ? (char *)payload : d->text + d->off[line];
	ev.payload_len = payload ? strlen(payload) : d->len[line];
	if (proto_event_encode(&ev, &json, ret_len, err, sizeof(err)) < 0 ||
	    proto_topics_stream_key(ev.org_id, ev.stream, key, keycap, ret_keylen, err,
				    sizeof(err)) < 0)
		die("envelope", err);
	return json;
}

static void produce(rd_kafka_t *rk, const char *key, size_t keylen, char *json, size_t len,
		    int64_t ts_ms)
{
	rd_kafka_resp_err_t e;

	for (;;) {
		e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(DL_TOPIC_EVENTS),
				      RD_KAFKA_V_KEY(key, keylen), RD_KAFKA_V_VALUE(json, len),
				      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE),
				      RD_KAFKA_V_TIMESTAMP(ts_ms), RD_KAFKA_V_END);
		if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
			break;
		rd_kafka_poll(rk, 10);
	}
	if (e)
		die("produce", rd_kafka_err2str(e));
	rd_kafka_poll(rk, 0);
}

static void producer_close(rd_kafka_t *rk)
{
	if (rd_kafka_flush(rk, 60000) != RD_KAFKA_RESP_ERR_NO_ERROR)
		die("flush", "events not acknowledged in 60 s");
	rd_kafka_destroy(rk);
}

static int mode_fill(const opts *o, const corpus *c)
{
	rd_kafka_t *rk = bench_producer_new("bench_detector", o->brokers);
	char key[PROTO_STREAM_KEY_MAX + 1];
	size_t len, keylen, bytes = 0, payload = 0;
	int64_t t0 = bench_now_ns();

	for (long i = 0; i < o->events; i++) {
		size_t s, line;
		const bench_data_stream *d = event_of(c, (size_t)i, 0, &s, &line);
		char *json = envelope(c, (size_t)i, 0, "f", &len, key, sizeof(key), &keylen, NULL);

		bytes += len;
		payload += d->len[line];
		produce(rk, key, keylen, json, len, bench_wall_ms());
	}
	producer_close(rk);
	printf("{\"events\":%ld,\"streams\":%zu,\"envelope_bytes_avg\":%.0f,"
	       "\"payload_bytes_avg\":%.0f,\"seconds\":%.3f}\n",
	       o->events, c->nstreams, (double)bytes / (double)o->events,
	       (double)payload / (double)o->events, (double)(bench_now_ns() - t0) / 1e9);
	return 0;
}

static int mode_engine(const opts *o, const corpus *c)
{
	cbad_detector *d[MAX_STREAMS];
	cbad_settings set;
	cbad_result res;
	char err[256];
	uint64_t anomalies = 0;
	int64_t t0;
	double secs;

	cbad_settings_default(&set);
	for (size_t s = 0; s < c->nstreams; s++)
		if (cbad_detector_new(&set, &d[s], err, sizeof(err)) < 0)
			die("cbad_detector_new", err);
	t0 = bench_now_ns();
	for (long i = 0; i < o->events; i++) {
		size_t s, line;
		const bench_data_stream *ds = event_of(c, (size_t)i, 0, &s, &line);

		cbad_detector_process(d[s], ds->text + ds->off[line], ds->len[line],
				      ds->ts_ms[line], &res);
		anomalies += res.anomaly;
		if (cbad_detector_idle_pending(d[s]))
			cbad_detector_idle(d[s]);
	}
	secs = (double)(bench_now_ns() - t0) / 1e9;
	for (size_t s = 0; s < c->nstreams; s++)
		cbad_detector_free(d[s]);
	printf("{\"events\":%ld,\"anomalies\":%llu,\"seconds\":%.3f,\"events_per_s\":%.0f}\n",
	       o->events, (unsigned long long)anomalies, secs, (double)o->events / secs);
	return 0;
}


static int mode_watch(const opts *o)
{
	int64_t t0 = bench_now_ns(), deadline = t0 + (int64_t)o->seconds * 1000000000LL;
	long long first_ms = 0;
	double last = 0, first_events = 0;

	for (;;) {
		double total = 0;
		int64_t t;

		for (int i = 0; i < o->nports; i++) {
			double v = bench_metric_sum(o->ports[i], "driftlock_detector_events_total", NULL);

			total += v > 0 ? v : 0;
		}
		t = bench_now_ns();
		last = total;
		if (first_ms == 0 && total > 0) {
			first_ms = (long long)bench_wall_ms();
			first_events = total;
		}
		if (total >= (double)o->events)
			break;
		if (t > deadline) {
			fprintf(stderr, "bench_detector: watch: %.0f of %ld events after %ld s\n",
				total, o->events, o->seconds);
			return 1;
		}
		usleep(10000);
	}
	printf("{\"events\":%.0f,\"done_ms\":%lld,\"seconds_from_start\":%.3f,"
	       "\"first_ms\":%lld,\"first_events\":%.0f}\n",
	       last, (long long)bench_wall_ms(), (double)(bench_now_ns() - t0) / 1e9, first_ms, first_events);
	return 0;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static int mode_latency(const opts *o, const corpus *c)
{
	rd_kafka_t *rk = bench_producer_new("bench_detector", o->brokers), *ck;
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	const struct rd_kafka_metadata *md;
	rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(16);
	size_t n = (size_t)(o->rate * (double)o->seconds), nlat = 0, other = 0;
	int64_t *sent = calloc(n, sizeof(*sent)), *lat = calloc(n + 1, sizeof(*lat));
	int64_t t0, interval, idle_until;
	char err[512], key[PROTO_STREAM_KEY_MAX + 1];
	size_t len, keylen, injected = 0, over100 = 0;
	rd_kafka_topic_t *t;
	static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	char odd[256];
	uint64_t rnd = 42;

	if (!sent || !lat || n == 0)
		die("latency", "nothing to send");
	/* Where the anomaly topic ends now: what comes after is this run's. */
	if (rd_kafka_conf_set(conf, "bootstrap.servers", o->brokers, err, sizeof(err)) ||
	    rd_kafka_conf_set(conf, "group.id", "bench-detector-latency", err, sizeof(err)) ||
	    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err)))
		die("consumer", err);
	ck = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
	if (!ck)
		die("consumer", err);
	t = rd_kafka_topic_new(ck, DL_TOPIC_ANOMALIES, NULL);
	if (rd_kafka_metadata(ck, 0, t, &md, 10000) || md->topic_cnt != 1)
		die("metadata", DL_TOPIC_ANOMALIES);
	for (int i = 0; i < md->topics[0].partition_cnt; i++) {
		int64_t lo, hi;
		int32_t p = md->topics[0].partitions[i].id;

		if (rd_kafka_query_watermark_offsets(ck, DL_TOPIC_ANOMALIES, p, &lo, &hi, 10000))
			die("watermarks", DL_TOPIC_ANOMALIES);
		rd_kafka_topic_partition_list_add(tp, DL_TOPIC_ANOMALIES, p)->offset = hi;
	}
	rd_kafka_metadata_destroy(md);
	rd_kafka_topic_destroy(t);
	if (rd_kafka_assign(ck, tp))
		die("assign", DL_TOPIC_ANOMALIES);
	rd_kafka_topic_partition_list_destroy(tp);

	/* A warm producer: the timestamp an event carries is set when it is handed to librdkafka,
	 * so a producer still connecting (metadata, idempotent producer id) would count its own
	 * start-up in the first events' latency. */
	t = rd_kafka_topic_new(rk, DL_TOPIC_EVENTS, NULL);
	if (rd_kafka_metadata(rk, 0, t, &md, 10000))
		die("metadata", DL_TOPIC_EVENTS);
	rd_kafka_metadata_destroy(md);
	rd_kafka_topic_destroy(t);
	sleep(2);

	/* Open loop at a fixed rate; the timestamp each event carries is its send time. */
	interval = (int64_t)(1e9 / o->rate);
	t0 = bench_now_ns();
	for (size_t i = 0; i < n; i++) {
		int64_t due = t0 + (int64_t)i * interval, w;
		char *json;

		while ((w = due - bench_now_ns()) > 0) {
			rd_kafka_poll(rk, 0);
			if (w > 200000)
				usleep((useconds_t)(w / 2000));
		}
		if (o->inject > 0 && i % (size_t)o->inject == (size_t)o->inject - 1) {
			/* {"blob":"<random>"}: nothing like the stream's lines */
			size_t k = (size_t)snprintf(odd, sizeof(odd), "{\"blob\":\"");

			while (k < 200) {
				rnd = rnd * 6364136223846793005ULL + 1442695040888963407ULL;
				odd[k++] = alnum[(rnd >> 33) % 62];
			}
			snprintf(odd + k, sizeof(odd) - k, "\"}");
			injected++;
		}
		json = envelope(c, i, (size_t)o->from, "l", &len, key, sizeof(key), &keylen,
				o->inject > 0 && i % (size_t)o->inject == (size_t)o->inject - 1 ? odd : NULL);
		sent[i] = bench_wall_ms();
		produce(rk, key, keylen, json, len, sent[i]);
	}
	producer_close(rk);

	/* The anomalies: until none came for --wait seconds. */
	idle_until = bench_now_ns() + o->wait_s * 1000000000LL;
	while (bench_now_ns() < idle_until) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(ck, 200);
		cJSON *j, *id;
		size_t i;
		char *end;

		if (!m)
			continue;
		if (m->err) {
			rd_kafka_message_destroy(m);
			continue;
		}
		idle_until = bench_now_ns() + o->wait_s * 1000000000LL;
		j = cJSON_ParseWithLength(m->payload, m->len);
		id = cJSON_GetObjectItemCaseSensitive(j, "event_id");
		if (cJSON_IsString(id) && strncmp(id->valuestring, "l-", 2) == 0 &&
		    (i = strtoull(id->valuestring + 2, &end, 10), *end == '\0') && i < n) {
			rd_kafka_timestamp_type_t tt;
			int64_t ts = rd_kafka_message_timestamp(m, &tt);

			lat[nlat++] = ts - sent[i];
		} else {
			other++;
		}
		cJSON_Delete(j);
		rd_kafka_message_destroy(m);
	}
	rd_kafka_consumer_close(ck);
	rd_kafka_destroy(ck);
	qsort(lat, nlat, sizeof(*lat), cmp_i64);
	for (size_t i = 0; i < nlat; i++)
		over100 += lat[i] > 100;
	printf("{\"events\":%zu,\"injected\":%zu,\"rate\":%.0f,\"seconds_sending\":%.3f,\"anomalies\":%zu,"
	       "\"other_anomalies\":%zu,\"over_100ms\":%zu,\"p50_ms\":%lld,\"p99_ms\":%lld,\"max_ms\":%lld}\n",
	       n, injected, o->rate, (double)o->seconds, nlat, other, over100,
	       nlat ? (long long)lat[nlat / 2] : -1LL,
	       nlat ? (long long)lat[(size_t)((double)(nlat - 1) * 0.99)] : -1LL,
	       nlat ? (long long)lat[nlat - 1] : -1LL);
	free(sent);
	free(lat);
	return nlat ? 0 : 1;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "brokers", required_argument, NULL, 'b' }, { "dir", required_argument, NULL, 'd' },
		{ "streams", required_argument, NULL, 'S' }, { "events", required_argument, NULL, 'n' },
		{ "orgs", required_argument, NULL, 'o' },    { "from", required_argument, NULL, 'f' },
		{ "rate", required_argument, NULL, 'r' },    { "seconds", required_argument, NULL, 's' },
		{ "wait", required_argument, NULL, 'w' },    { "ports", required_argument, NULL, 'p' },
		{ "inject", required_argument, NULL, 'i' },
		{ NULL, 0, NULL, 0 }
	};
	opts o = { .streams = "web-access,audit-log,orders-app,payments", .events = 200000,
		   .orgs = 4, .seconds = 300, .wait_s = 10, .rate = 1000 };
	corpus *c;
	int ch;

	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'b': o.brokers = optarg; break;
		case 'd': o.dir = optarg; break;
		case 'S': o.streams = optarg; break;
		case 'n': o.events = atol(optarg); break;
		case 'o': o.orgs = atol(optarg); break;
		case 'f': o.from = atol(optarg); break;
		case 'r': o.rate = atof(optarg); break;
		case 's': o.seconds = atol(optarg); break;
		case 'w': o.wait_s = atol(optarg); break;
		case 'i': o.inject = atol(optarg); break;
		case 'p':
			for (char *p = optarg; *p && o.nports < MAX_PORTS; p = strchr(p, ',') ? strchr(p, ',') + 1 : "")
				o.ports[o.nports++] = atoi(p);
			break;
		default: return 2;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "usage: bench_detector fill|engine|watch|latency [options]\n");
		return 2;
	}
	o.mode = argv[optind];
	if (strcmp(o.mode, "watch") == 0)
		return o.nports ? mode_watch(&o) : 2;
	if (!o.dir)
		die("--dir", "required");
	c = calloc(1, sizeof(*c));
	corpus_load(c, &o);
	if (strcmp(o.mode, "engine") == 0)
		return mode_engine(&o, c);
	if (!o.brokers)
		die("--brokers", "required");
	if (strcmp(o.mode, "fill") == 0)
		return mode_fill(&o, c);
	if (strcmp(o.mode, "latency") == 0)
		return mode_latency(&o, c);
	return 2;
}
