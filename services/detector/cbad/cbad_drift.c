/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_drift: whether the mix of the recent window of events drifted from the baseline. */
#include "services/detector/cbad/cbad_drift.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "services/detector/cbad/cbad_calib.h"

#define SMOOTH 0.1       /* pseudo-count per bucket of the baseline */
#define STAT_HISTORY 256 /* window stats remembered for calibration */
#define MIN_WINDOWS 16   /* evaluations before a p-value is given */

/* One event of the rings: its bucket and whether it may enter the baseline. */
typedef struct slot {
	uint16_t bucket;
	uint8_t learn;
} slot;

struct cbad_drift {
	uint32_t window, base_cap, step;
	slot *win;   /* ring of the window, win_n <= window */
	uint32_t win_head, win_n;
	int64_t *win_ts;
	uint16_t *base; /* ring of the baseline's buckets */
	uint32_t base_head, base_n;
	uint32_t win_count[CBAD_DRIFT_BUCKETS];
	uint32_t base_count[CBAD_DRIFT_BUCKETS];
	uint64_t seen;
	cbad_calib *stats;
};

static inline uint16_t bucket_of(uint64_t t)
{
	t ^= t >> 29;
	t *= 0xbf58476d1ce4e5b9ull;
	t ^= t >> 32;
	return (uint16_t)(t % CBAD_DRIFT_BUCKETS);
}

int cbad_drift_new(uint32_t window, uint32_t baseline_events, cbad_drift **ret)
{
	cbad_drift *d;

	if (window < 8 || baseline_events < 8)
		return -EINVAL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->window = window;
	d->base_cap = baseline_events;
	d->step = window / 4 ? window / 4 : 1;
	d->win = calloc(window, sizeof(*d->win));
	d->win_ts = calloc(window, sizeof(*d->win_ts));
	d->base = calloc(baseline_events, sizeof(*d->base));
	if (!d->win || !d->win_ts || !d->base || cbad_calib_new(STAT_HISTORY, 0.01, &d->stats)) {
		cbad_drift_free(d);
		return -ENOMEM;
	}
	*ret = d;
	return 0;
}

static void base_push(cbad_drift *d, uint16_t b)
{
	if (d->base_n == d->base_cap) {
		d->base_count[d->base[d->base_head]]--;
		d->base[d->base_head] = b;
		d->base_head = (d->base_head + 1) % d->base_cap;
	} else {
		d->base[(d->base_head + d->base_n) % d->base_cap] = b;
		d->base_n++;
	}
	d->base_count[b]++;
}

static double base_share(const cbad_drift *d, uint32_t b)
{
	return (d->base_count[b] + SMOOTH) / (d->base_n + SMOOTH * CBAD_DRIFT_BUCKETS);
}

bool cbad_drift_observe(cbad_drift *d, uint64_t template_id, int64_t ts_ms, bool learn,
			cbad_drift_report *out)
{
	uint16_t b = bucket_of(template_id);
	uint32_t slot_i;
	double kl = 0, best = -1;

	if (d->win_n == d->window) {
		slot old = d->win[d->win_head];

		d->win_count[old.bucket]--;
		if (old.learn)
			base_push(d, old.bucket);
		slot_i = d->win_head;
		d->win_head = (d->win_head + 1) % d->window;
	} else {
		slot_i = (d->win_head + d->win_n) % d->window;
		d->win_n++;
	}
	d->win[slot_i] = (slot){.bucket = b, .learn = learn};
	d->win_ts[slot_i] = ts_ms;
	d->win_count[b]++;
	d->seen++;
	if (d->win_n < d->window || d->base_n < d->window || d->seen % d->step != 0)
		return false;
	memset(out, 0, sizeof(*out));
	for (uint32_t i = 0; i < CBAD_DRIFT_BUCKETS; i++) {
		double w, q;

		if (!d->win_count[i])
			continue;
		w = (double)d->win_count[i] / d->win_n;
		q = base_share(d, i);
		kl += w * log2(w / q);
		if (w / q > best) {
			best = w / q;
			out->top_share = w;
			out->top_base_share = q;
			out->top_bucket = i;
		}
	}
	out->kl_bits = kl > 0 ? kl : 0;
	out->events = d->win_n;
	out->start_ts = d->win_ts[d->win_head];
	out->end_ts = ts_ms;
	out->p_value = cbad_calib_count(d->stats) >= MIN_WINDOWS ?
			       cbad_calib_pvalue(d->stats, out->kl_bits) : 1.0;
	return true;
}

void cbad_drift_verdict(cbad_drift *d, const cbad_drift_report *rep, bool drift)
{
	if (drift)
		cbad_calib_add_capped(d->stats, rep->kl_bits);
	else
		cbad_calib_add(d->stats, rep->kl_bits);
}

double cbad_drift_overrep(const cbad_drift *d, uint64_t template_id, double *ret_share)
{
	uint16_t b = bucket_of(template_id);

	*ret_share = 0;
	if (d->win_n == 0)
		return 0;
	*ret_share = (double)d->win_count[b] / d->win_n;
	return *ret_share / base_share(d, b);
}

double cbad_drift_recent_share(const cbad_drift *d, uint32_t bucket, uint32_t n)
{
	uint32_t hits = 0;

	if (n > d->win_n)
		n = d->win_n;
	if (n == 0)
		return 0;
	for (uint32_t k = d->win_n - n; k < d->win_n; k++)
		hits += d->win[(d->win_head + k) % d->window].bucket == bucket;
	return (double)hits / n;
}

static size_t csize(ZSTD_CCtx *cc, const void *p, size_t n, int level)
{
	size_t cap = ZSTD_compressBound(n), r;
	void *buf = malloc(cap);

	if (!buf)
		return n;
	ZSTD_CCtx_reset(cc, ZSTD_reset_session_and_parameters);
	ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, level);
	ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 0);
	ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
	r = ZSTD_compress2(cc, buf, cap, p, n);
	free(buf);
	return ZSTD_isError(r) ? n : r;
}

double cbad_drift_ncd(const void *x, size_t nx, const void *y, size_t ny, int level)
{
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	unsigned char *xy = malloc(nx + ny + 1);
	double cx, cy, cxy, lo, hi, r = 0;

	if (!cc || !xy)
		goto out_free;
	if (nx)
		memcpy(xy, x, nx);
	if (ny)
		memcpy(xy + nx, y, ny);
	cx = (double)csize(cc, x, nx, level);
	cy = (double)csize(cc, y, ny, level);
	cxy = (double)csize(cc, xy, nx + ny, level);
	lo = cx < cy ? cx : cy;
	hi = cx < cy ? cy : cx;
	r = (nx + ny == 0 || hi == 0) ? 0 : (cxy - lo) / hi;
out_free:
	free(xy);
	ZSTD_freeCCtx(cc);
	return r;
}

double cbad_drift_ratio(const void *buf, size_t len, int level)
{
	ZSTD_CCtx *cc;
	double r;

	if (len == 0)
		return 1.0;
	cc = ZSTD_createCCtx();
	if (!cc)
		return 1.0;
	r = (double)csize(cc, buf, len, level) / (double)len;
	ZSTD_freeCCtx(cc);
	return r;
}

double cbad_drift_entropy(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	size_t cnt[256] = {0};
	double h = 0;

	if (len == 0)
		return 0;
	for (size_t i = 0; i < len; i++)
		cnt[p[i]]++;
	for (int i = 0; i < 256; i++)
		if (cnt[i]) {
			double q = (double)cnt[i] / len;

			h -= q * log2(q);
		}
	return h;
}

size_t cbad_drift_memory(const cbad_drift *d)
{
	return sizeof(*d) + d->window * (sizeof(slot) + sizeof(int64_t)) +
	       d->base_cap * sizeof(uint16_t) + cbad_calib_memory(d->stats);
}

void cbad_drift_save(const cbad_drift *d, cbad_writer *w)
{
	cbad_w_u32(w, d->window);
	cbad_w_u32(w, d->base_cap);
	cbad_w_u64(w, d->seen);
	cbad_w_u32(w, d->win_n);
	for (uint32_t k = 0; k < d->win_n; k++) {
		uint32_t i = (d->win_head + k) % d->window;

		cbad_w_u32(w, d->win[i].bucket | ((uint32_t)d->win[i].learn << 16));
		cbad_w_i64(w, d->win_ts[i]);
	}
	cbad_w_u32(w, d->base_n);
	for (uint32_t k = 0; k < d->base_n; k++)
		cbad_w_u32(w, d->base[(d->base_head + k) % d->base_cap]);
	cbad_calib_save(d->stats, w);
}

int cbad_drift_load(cbad_drift *d, cbad_reader *r)
{
	uint32_t win, base;

	win = cbad_r_u32(r);
	base = cbad_r_u32(r);
	if (r->failed || win != d->window || base != d->base_cap)
		return -EINVAL;
	d->seen = cbad_r_u64(r);
	memset(d->win_count, 0, sizeof(d->win_count));
	memset(d->base_count, 0, sizeof(d->base_count));
	d->win_head = d->base_head = 0;
	d->win_n = cbad_r_count(r, d->window);
	for (uint32_t k = 0; k < d->win_n && !r->failed; k++) {
		uint32_t v = cbad_r_u32(r);

		if ((v & 0xffff) >= CBAD_DRIFT_BUCKETS || (v >> 16) > 1)
			return -EINVAL;
		d->win[k] = (slot){.bucket = (uint16_t)(v & 0xffff), .learn = (uint8_t)(v >> 16)};
		d->win_ts[k] = cbad_r_i64(r);
		d->win_count[d->win[k].bucket]++;
	}
	d->base_n = cbad_r_count(r, d->base_cap);
	for (uint32_t k = 0; k < d->base_n && !r->failed; k++) {
		uint32_t v = cbad_r_u32(r);

		if (v >= CBAD_DRIFT_BUCKETS)
			return -EINVAL;
		d->base[k] = (uint16_t)v;
		d->base_count[v]++;
	}
	if (r->failed)
		return -EINVAL;
	return cbad_calib_load(d->stats, r);
}

void cbad_drift_free(cbad_drift *d)
{
	if (!d)
		return;
	cbad_calib_free(d->stats);
	free(d->win);
	free(d->win_ts);
	free(d->base);
	free(d);
}
