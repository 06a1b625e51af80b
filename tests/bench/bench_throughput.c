/* SPDX-License-Identifier: Apache-2.0 */
/* bench_throughput: per-event scoring speed, latency and memory of the CBAD engine, next to zstd's own speed. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <zstd.h>

#include "services/detector/cbad/cbad.h"
#include "tests/bench/bench_data.h"

typedef struct corpus {
	char name[160];
	size_t n;
	const char **ev;
	size_t *len;
	int64_t *ts;
	size_t bytes;
} corpus;

typedef struct run_result {
	double cbad_eps, zstd_eps, zstd_mbps, cbad_mbps;
	double p50_us, p99_us, max_us;     /* process() alone, idle() run between events */
	double p50_in_us, p99_in_us;       /* process() with the dictionary builds inline */
	double idle_us;                    /* median idle() call that built a dictionary */
	double mem_warm, mem_end, state_bytes;
	double anomalies;
} run_result;

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint64_t rng_next(uint64_t *x)
{
	/* splitmix64: deterministic for a seed on every platform */
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static unsigned pick(uint64_t *x, unsigned n)
{
	return (unsigned)(rng_next(x) % n);
}

/* Synthetic JSON events of about 200 bytes: a seeded mix of a few templates (access log,
 * application log, payment, metrics) with ids, numbers and addresses that vary per event. */
static int synth_corpus(size_t n, uint64_t seed, corpus *c)
{
	static const char *methods[] = { "GET", "GET", "GET", "POST", "PUT", "DELETE" };
	static const char *paths[] = { "/api/v1/orders", "/api/v1/users", "/api/v1/cart",
				       "/static/app.js", "/api/v1/search", "/healthz" };
	static const char *levels[] = { "INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR" };
	static const char *msgs[] = { "order placed", "cache miss for key", "retrying upstream call",
				      "user session refreshed", "payment authorised",
				      "slow query detected" };
	static const char *ccy[] = { "EUR", "USD", "GBP", "JPY" };
	static const char *hosts[] = { "web-1", "web-2", "db-1", "cache-1", "worker-3" };
	char *text;
	size_t cap = n * 256, off = 0;
	uint64_t x = seed;
	int64_t ts = 1710000000000;

	text = malloc(cap);
	c->ev = malloc(n * sizeof(*c->ev));
	c->len = malloc(n * sizeof(*c->len));
	c->ts = malloc(n * sizeof(*c->ts));
	if (!text || !c->ev || !c->len || !c->ts)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		char *p = text + off;
		int len = 0;

		ts += 1 + pick(&x, 200);
		switch (pick(&x, 4)) {
		case 0:
			len = snprintf(p, 256,
				       "{\"stream\":\"synthetic\",\"ts\":%lld,\"method\":\"%s\",\"path\":\"%s/%u\",\"status\":%u,\"latency_ms\":%u,\"bytes\":%u,\"client_ip\":\"10.%u.%u.%u\",\"ua\":\"Mozilla/5.0 (X11; Linux)\"}",
				       (long long)ts, methods[pick(&x, 6)], paths[pick(&x, 6)],
				       pick(&x, 1000000), pick(&x, 50) ? 200 : 404, 5 + pick(&x, 120),
				       200 + pick(&x, 40000), pick(&x, 256), pick(&x, 256), pick(&x, 256));
			break;
		case 1:
			len = snprintf(p, 256,
				       "{\"stream\":\"synthetic\",\"ts\":%lld,\"msg\":\"%s [worker-%u] com.example.OrderService - %s id=%08x-%04x took %u ms\"}",
				       (long long)ts, levels[pick(&x, 6)], pick(&x, 16), msgs[pick(&x, 6)],
				       (unsigned)rng_next(&x), pick(&x, 65536), pick(&x, 900));
			break;
		case 2:
			len = snprintf(p, 256,
				       "{\"stream\":\"synthetic\",\"ts\":%lld,\"txn_id\":\"tx_%016llx\",\"user_id\":\"u%05u\",\"amount\":%u.%02u,\"currency\":\"%s\",\"mcc\":%u,\"status\":\"%s\"}",
				       (long long)ts, (unsigned long long)rng_next(&x), pick(&x, 5000),
				       1 + pick(&x, 300), pick(&x, 100), ccy[pick(&x, 4)],
				       5000 + pick(&x, 40), pick(&x, 20) ? "approved" : "declined");
			break;
		default:
			len = snprintf(p, 256,
				       "{\"stream\":\"synthetic\",\"ts\":%lld,\"host\":\"%s\",\"cpu\":%u.%u,\"mem\":%u.%u,\"disk_io\":%u.%02u,\"p99_ms\":%u,\"region\":\"eu-west-1\",\"agent\":\"collector/2.4.1\"}",
				       (long long)ts, hosts[pick(&x, 5)], 10 + pick(&x, 60), pick(&x, 10),
				       30 + pick(&x, 50), pick(&x, 10), pick(&x, 200), pick(&x, 100),
				       20 + pick(&x, 200));
			break;
		}
		if (len < 0 || len >= 256)
			len = 0;
		/* every event carries a trace id, as most real ones do: ~200 bytes on average */
		if (len > 0 && len + 48 < 256)
			len += snprintf(p + len - 1, 256 - (size_t)len + 1, ",\"trace\":\"%016llx%016llx\"}",
					(unsigned long long)rng_next(&x),
					(unsigned long long)rng_next(&x)) - 1;
		c->len[i] = (size_t)len;
		c->ts[i] = ts;
		c->bytes += (size_t)len;
		off += (size_t)len + 1;
	}
	for (size_t i = 0, o = 0; i < n; i++) {
		c->ev[i] = text + o;
		o += c->len[i] + 1;
	}
	c->n = n;
	snprintf(c->name, sizeof(c->name), "synthetic (%zu events, mean %.0f B)", n,
		 (double)c->bytes / (double)n);
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

static double elapsed_us(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) * 1e6 + (double)(b->tv_nsec - a->tv_nsec) / 1e3;
}

/* One repetition: warm the detectors up (untimed) on the first `warm` events, then time the
 * rest: once as a batch (throughput: process() and, after each event, idle(), the deferred
 * dictionary builds included), then event by event on a second detector whose idle() runs
 * between events outside the timing (the latency a service that calls idle() when its queue
 * is empty sees, with idle()'s own time kept apart), and on a third that never calls idle()
 * (builds inline, inside process()). */
static int run_once(const corpus *c, size_t warm, const cbad_settings *s, run_result *r)
{
	cbad_detector *d = NULL, *d2 = NULL, *d3 = NULL;
	cbad_status st;
	cbad_result res;
	ZSTD_CCtx *cctx = NULL;
	double *lat = NULL, *lat_in = NULL, *idle = NULL, t0, t;
	size_t nt = c->n - warm, cap = ZSTD_compressBound(4096), sink = 0, nidle = 0;
	void *dst = NULL, *state = NULL;
	size_t state_len = 0;
	char err[256] = "";
	int rc;

	memset(r, 0, sizeof(*r));
	rc = cbad_detector_new(s, &d, err, sizeof(err));
	if (!rc)
		rc = cbad_detector_new(s, &d2, err, sizeof(err));
	if (!rc)
		rc = cbad_detector_new(s, &d3, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "bench_throughput: %s\n", err);
		goto out;
	}
	lat = malloc(nt * sizeof(*lat));
	lat_in = malloc(nt * sizeof(*lat_in));
	idle = malloc(nt * sizeof(*idle));
	dst = malloc(cap);
	cctx = ZSTD_createCCtx();
	if (!lat || !lat_in || !idle || !dst || !cctx) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < warm; i++) {
		cbad_detector_process(d, c->ev[i], c->len[i], c->ts[i], &res);
		cbad_detector_idle(d);
		cbad_detector_process(d2, c->ev[i], c->len[i], c->ts[i], &res);
		cbad_detector_idle(d2);
		cbad_detector_process(d3, c->ev[i], c->len[i], c->ts[i], &res);
	}
	cbad_detector_status(d, &st);
	r->mem_warm = (double)st.memory_bytes;

	t0 = now_s();
	for (size_t i = warm; i < c->n; i++) {
		cbad_detector_process(d, c->ev[i], c->len[i], c->ts[i], &res);
		cbad_detector_idle(d);
		r->anomalies += res.anomaly;
	}
	t = now_s() - t0;
	r->cbad_eps = (double)nt / t;
	{
		size_t bytes = 0;

		for (size_t i = warm; i < c->n; i++)
			bytes += c->len[i];
		r->cbad_mbps = (double)bytes / t / 1e6;
		t0 = now_s();
		for (size_t i = warm; i < c->n; i++) {
			size_t z = ZSTD_compressCCtx(cctx, dst, cap, c->ev[i],
						     c->len[i] < 4096 ? c->len[i] : 4096, s->zstd_level);
			sink += ZSTD_isError(z) ? 0 : z;
		}
		t = now_s() - t0;
		r->zstd_eps = (double)nt / t;
		r->zstd_mbps = (double)bytes / t / 1e6;
	}
	for (size_t i = warm; i < c->n; i++) {
		struct timespec a, b;

		clock_gettime(CLOCK_MONOTONIC, &a);
		cbad_detector_process(d2, c->ev[i], c->len[i], c->ts[i], &res);
		clock_gettime(CLOCK_MONOTONIC, &b);
		lat[i - warm] = elapsed_us(&a, &b);
		if (cbad_detector_idle_pending(d2)) {
			clock_gettime(CLOCK_MONOTONIC, &a);
			cbad_detector_idle(d2);
			clock_gettime(CLOCK_MONOTONIC, &b);
			idle[nidle++] = elapsed_us(&a, &b);
		}
	}
	for (size_t i = warm; i < c->n; i++) {
		struct timespec a, b;

		clock_gettime(CLOCK_MONOTONIC, &a);
		cbad_detector_process(d3, c->ev[i], c->len[i], c->ts[i], &res);
		clock_gettime(CLOCK_MONOTONIC, &b);
		lat_in[i - warm] = elapsed_us(&a, &b);
	}
	qsort(lat, nt, sizeof(*lat), cmp_double);
	qsort(lat_in, nt, sizeof(*lat_in), cmp_double);
	r->p50_us = lat[nt / 2];
	r->p99_us = lat[(size_t)((double)nt * 0.99)];
	r->max_us = lat[nt - 1];
	r->p50_in_us = lat_in[nt / 2];
	r->p99_in_us = lat_in[(size_t)((double)nt * 0.99)];
	r->idle_us = nidle ? median(idle, nidle) : 0;
	cbad_detector_status(d, &st);
	r->mem_end = (double)st.memory_bytes;
	rc = cbad_detector_save(d, &state, &state_len, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "bench_throughput: save: %s\n", err);
		goto out;
	}
	r->state_bytes = (double)state_len;
	if (sink == 1)
		fprintf(stderr, " "); /* keeps the compression loop from being optimised away */
out:
	free(state);
	ZSTD_freeCCtx(cctx);
	free(dst);
	free(idle);
	free(lat_in);
	free(lat);
	cbad_detector_free(d3);
	cbad_detector_free(d2);
	cbad_detector_free(d);
	return rc;
}

static int bench_corpus(const corpus *c, size_t warm, int repeat, const cbad_settings *s,
			bool markdown)
{
	enum { NM = 12 };
	double v[NM][64];
	const char *names[NM] = { "cbad events/s (w/ idle)", "zstd events/s", "cbad MB/s",
				  "zstd MB/s", "latency p50 us", "latency p99 us",
				  "memory after warm-up B", "memory at end B", "saved state B",
				  "inline p50 us", "inline p99 us", "idle() build us" };
	double med[NM];
	run_result r;
	int rc;

	if (repeat > 64)
		repeat = 64;
	for (int k = 0; k < repeat; k++) {
		rc = run_once(c, warm, s, &r);
		if (rc)
			return rc;
		v[0][k] = r.cbad_eps;
		v[1][k] = r.zstd_eps;
		v[2][k] = r.cbad_mbps;
		v[3][k] = r.zstd_mbps;
		v[4][k] = r.p50_us;
		v[5][k] = r.p99_us;
		v[6][k] = r.mem_warm;
		v[7][k] = r.mem_end;
		v[8][k] = r.state_bytes;
		v[9][k] = r.p50_in_us;
		v[10][k] = r.p99_in_us;
		v[11][k] = r.idle_us;
	}
	for (int m = 0; m < NM; m++)
		med[m] = median(v[m], (size_t)repeat);
	if (markdown) {
		printf("| %s | %.0f | %.0f | %.3f | %.2f | %.2f | %.1f | %.1f | %.1f | %.1f | %.0f | %.0f |\n",
		       c->name, med[0], med[1], med[0] / med[1], med[2], med[3], med[4], med[5],
		       med[9], med[10], med[7] / 1024.0, med[8] / 1024.0);
	} else {
		printf("%s: %zu timed events after %zu warm-up, median of %d runs\n", c->name,
		       c->n - warm, warm, repeat);
		for (int m = 0; m < NM; m++)
			printf("  %-24s %14.2f\n", names[m], med[m]);
		printf("  %-24s %14.4f\n", "cbad / zstd (events/s)", med[0] / med[1]);
	}
	fflush(stdout);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: bench_throughput [options]\n"
		"Per-event scoring throughput of one CBAD detector at default settings on this core,\n"
		"next to ZSTD_compress of the same events at the engine's level, in the same run.\n"
		"Throughput counts process() and cbad_detector_idle() after each event (the deferred\n"
		"dictionary builds); latency p50/p99 is process() alone with idle() run between events,\n"
		"\"inline\" the same without idle() (builds inside process()); idle() build us is the\n"
		"median idle() call that built a dictionary.\n"
		"  --events N        synthetic events (default 200000)\n"
		"  --warm N          untimed warm-up events (default: 2 x baseline_events)\n"
		"  --repeat N        repetitions; medians are reported (default 5)\n"
		"  --real PATH       also a real stream (gzip NDJSON), e.g.\n"
		"                    $DRIFTLOCK_DATASETS/streams/web-access.ndjson.gz\n"
		"  --seed N          synthetic corpus seed (default 1)\n"
		"  --markdown        table rows for docs/benchmarks.md\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "events", required_argument, NULL, 'n' }, { "warm", required_argument, NULL, 'w' },
		{ "repeat", required_argument, NULL, 'r' }, { "real", required_argument, NULL, 'R' },
		{ "seed", required_argument, NULL, 's' },   { "markdown", no_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },	    { NULL, 0, NULL, 0 },
	};
	size_t nev = 200000, warm = 0;
	int repeat = 5, c, rc = 0;
	uint64_t seed = 1;
	const char *real = NULL;
	bool markdown = false;
	cbad_settings s;
	corpus syn;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'n': nev = strtoull(optarg, NULL, 10); break;
		case 'w': warm = strtoull(optarg, NULL, 10); break;
		case 'r': repeat = atoi(optarg); break;
		case 'R': real = optarg; break;
		case 's': seed = strtoull(optarg, NULL, 10); break;
		case 'm': markdown = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	cbad_settings_default(&s);
	if (!warm)
		warm = 2 * (size_t)s.baseline_events;
	if (repeat < 1 || nev <= warm) {
		fprintf(stderr, "bench_throughput: need --repeat >= 1 and --events > --warm (%zu)\n",
			warm);
		return 2;
	}
	memset(&syn, 0, sizeof(syn));
	if (synth_corpus(nev, seed, &syn)) {
		fprintf(stderr, "bench_throughput: out of memory\n");
		return 1;
	}
	if (markdown)
		printf("| events | cbad events/s | zstd events/s | cbad/zstd | cbad MB/s | zstd MB/s | p50 µs | p99 µs | p50 µs inline | p99 µs inline | memory KiB | saved state KiB |\n"
		       "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
	rc = bench_corpus(&syn, warm, repeat, &s, markdown);
	if (rc == 0 && real) {
		bench_data_stream *ds = NULL;
		char err[512] = "", dir[2048], name[BENCH_DATA_NAME_MAX];
		const char *slash = strrchr(real, '/'), *base = slash ? slash + 1 : real;
		size_t bl = strlen(base);
		corpus rc_corpus;

		/* bench_data loads dir/<name>.ndjson.gz with its labels next to it. */
		if (bl < 10 || strcmp(base + bl - 10, ".ndjson.gz") || bl - 10 >= sizeof(name)) {
			fprintf(stderr, "bench_throughput: --real wants a <name>.ndjson.gz\n");
			return 2;
		}
		snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - real) : 1,
			 slash ? real : ".");
		memcpy(name, base, bl - 10);
		name[bl - 10] = '\0';
		rc = bench_data_stream_load(dir, name, &ds, err, sizeof(err));
		if (rc) {
			fprintf(stderr, "bench_throughput: %s\n", err);
		} else {
			memset(&rc_corpus, 0, sizeof(rc_corpus));
			rc_corpus.n = ds->n;
			rc_corpus.ev = malloc(ds->n * sizeof(*rc_corpus.ev));
			rc_corpus.len = ds->len;
			rc_corpus.ts = ds->ts_ms;
			for (size_t i = 0; rc_corpus.ev && i < ds->n; i++) {
				rc_corpus.ev[i] = ds->text + ds->off[i];
				rc_corpus.bytes += ds->len[i];
			}
			snprintf(rc_corpus.name, sizeof(rc_corpus.name),
				 "%s (%zu events, mean %.0f B)", name, ds->n,
				 (double)rc_corpus.bytes / (double)(ds->n ? ds->n : 1));
			rc = rc_corpus.ev && ds->n > warm ?
				     bench_corpus(&rc_corpus, warm, repeat, &s, markdown) : -EINVAL;
			free(rc_corpus.ev);
			bench_data_stream_free(ds);
		}
	}
	{
		struct rusage ru;

		if (!markdown && getrusage(RUSAGE_SELF, &ru) == 0)
			printf("peak RSS of this process: %ld KiB\n", ru.ru_maxrss);
	}
	free((void *)(syn.ev ? syn.ev[0] : NULL));
	free(syn.ev);
	free(syn.len);
	free(syn.ts);
	return rc ? 1 : 0;
}
