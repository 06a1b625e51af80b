/* SPDX-License-Identifier: Apache-2.0 */
/* bench_ingest_body: events/s of the POST /v1/events body parser alone, on ~200-byte events
 * (NDJSON and array batches of 1,000, single events, zstd and gzip batches); median of 5 runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>
#include <zstd.h>

#include "common/dl_time.h"
#include "services/ingest/ingest_body.h"

#define BATCH 1000
#define RUNS 5
#define RUN_NS INT64_C(300000000) /* each run parses for at least 0.3 s */

static const ingest_body_limits lim = {
	.max_event_bytes = INGEST_BODY_DEFAULT_MAX_EVENT_BYTES,
	.max_body_bytes = INGEST_BODY_DEFAULT_MAX_BODY_BYTES,
	.max_events = INGEST_BODY_DEFAULT_MAX_EVENTS,
	.max_depth = INGEST_BODY_DEFAULT_MAX_DEPTH,
};

/* One web-access event of about 200 bytes, varied by i. */
static int event_text(char *buf, size_t size, unsigned i)
{
	static const char *const paths[] = { "/api/v1/items", "/login", "/checkout/confirm",
					     "/static/app.js" };
	static const char *const methods[] = { "GET", "POST", "PUT" };

	return snprintf(buf, size,
			"{\"stream\":\"web.access\",\"ts\":\"2026-11-26T17:55:%02u.%03uZ\","
			"\"id\":\"req-%08u\",\"method\":\"%s\",\"path\":\"%s/%u\",\"status\":%u,"
			"\"latency_ms\":%u.%u,\"user\":\"u-%u\",\"ua\":\"Mozilla/5.0 (X11; Linux)\"}",
			i % 60, i % 1000, i, methods[i % 3], paths[i % 4], i * 7919 % 100000,
			i % 17 ? 200 : 503, i % 250, i % 10, i % 5000);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Parses body again and again for RUN_NS, RUNS times; returns the median of events/s. */
static double measure(const char *ct, const char *ce, const char *body, size_t len,
		      size_t expect)
{
	double rates[RUNS];

	for (int run = 0; run < RUNS; run++) {
		int64_t t0 = dl_time_mono_ns(), t;
		size_t events = 0;

		do {
			for (int k = 0; k < 16; k++) {
				ingest_body_batch b;
				int status;
				char code[32], err[256];

				if (ingest_body_parse(ct, ce, body, len, NULL, INT64_C(1795715707123),
						      &lim, &b, &status, code, sizeof(code), err,
						      sizeof(err)) != 0 ||
				    b.nevents != expect) {
					fprintf(stderr, "bench_ingest_body: parse failed: %s\n", err);
					exit(EXIT_FAILURE);
				}
				events += b.nevents;
				ingest_body_batch_free(&b);
			}
			t = dl_time_mono_ns() - t0;
		} while (t < RUN_NS);
		rates[run] = (double)events * 1e9 / (double)t;
	}
	qsort(rates, RUNS, sizeof(rates[0]), cmp_double);
	return rates[RUNS / 2];
}

int main(void)
{
	size_t cap = BATCH * 256 + 16, nd_len = 0, arr_len = 0, one_len, zl, gl;
	char *nd = malloc(cap), *arr = malloc(cap), *zb, *gb, one[256];
	z_stream zs;
	double r;

	if (nd == NULL || arr == NULL)
		return EXIT_FAILURE;
	arr[arr_len++] = '[';
	for (unsigned i = 0; i < BATCH; i++) {
		int n = event_text(nd + nd_len, cap - nd_len, i);

		memcpy(arr + arr_len, nd + nd_len, (size_t)n);
		nd_len += (size_t)n;
		arr_len += (size_t)n;
		nd[nd_len++] = '\n';
		arr[arr_len++] = i + 1 < BATCH ? ',' : ']';
	}
	one_len = (size_t)event_text(one, sizeof(one), 42);

	zb = malloc(ZSTD_compressBound(nd_len));
	zl = ZSTD_compress(zb, ZSTD_compressBound(nd_len), nd, nd_len, 3);
	gb = malloc(compressBound(nd_len) + 64);
	memset(&zs, 0, sizeof(zs));
	deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
	zs.next_in = (Bytef *)nd;
	zs.avail_in = (uInt)nd_len;
	zs.next_out = (Bytef *)gb;
	zs.avail_out = (uInt)(compressBound(nd_len) + 64);
	deflate(&zs, Z_FINISH);
	gl = zs.total_out;
	deflateEnd(&zs);

	printf("bench_ingest_body: %d events of %zu bytes on average, median of %d runs\n", BATCH,
	       nd_len / BATCH - 1, RUNS);
	r = measure("application/x-ndjson", NULL, nd, nd_len, BATCH);
	printf("  NDJSON batch of %d           %12.0f events/s  (%.0f MB/s)\n", BATCH, r,
	       r * (double)nd_len / BATCH / 1e6);
	r = measure("application/json", NULL, arr, arr_len, BATCH);
	printf("  JSON array of %d             %12.0f events/s\n", BATCH, r);
	r = measure("application/json", NULL, one, one_len, 1);
	printf("  single event                   %12.0f requests/s\n", r);
	r = measure("application/x-ndjson", "zstd", zb, zl, BATCH);
	printf("  NDJSON batch, zstd (%5zu B)   %12.0f events/s\n", zl, r);
	r = measure("application/x-ndjson", "gzip", gb, gl, BATCH);
	printf("  NDJSON batch, gzip (%5zu B)   %12.0f events/s\n", gl, r);
	free(nd);
	free(arr);
	free(zb);
	free(gb);
	return EXIT_SUCCESS;
}
