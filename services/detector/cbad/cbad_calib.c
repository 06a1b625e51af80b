/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_calib: conformal p-values against a ring of recent normal scores. */
#include "services/detector/cbad/cbad_calib.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct cbad_calib {
	uint32_t cap, n, head; /* ring: ring[(head + k) % cap], k < n, oldest first */
	double min_scale;
	double *ring;
	double *sorted; /* the same n scores, ascending */
};

int cbad_calib_new(uint32_t cap, double min_scale, cbad_calib **ret)
{
	cbad_calib *c;

	if (cap < 8 || !(min_scale > 0))
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->cap = cap;
	c->min_scale = min_scale;
	c->ring = calloc(cap, sizeof(double));
	c->sorted = calloc(cap, sizeof(double));
	if (!c->ring || !c->sorted) {
		cbad_calib_free(c);
		return -ENOMEM;
	}
	*ret = c;
	return 0;
}

/* First index whose value is >= s. */
static uint32_t lower_bound(const double *a, uint32_t n, double s)
{
	uint32_t lo = 0, hi = n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (a[mid] < s)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static double tail_scale(const cbad_calib *c)
{
	uint32_t k = c->n / 32 < 4 ? 4 : c->n / 32;
	double top, scale = 0;

	if (k > c->n)
		k = c->n;
	top = c->sorted[c->n - k];
	for (uint32_t i = c->n - k; i < c->n; i++)
		scale += c->sorted[i] - top;
	scale /= k;
	return scale < c->min_scale ? c->min_scale : scale;
}

double cbad_calib_pvalue(const cbad_calib *c, double s)
{
	uint32_t ge;
	double p0;

	if (c->n == 0)
		return 1.0;
	ge = c->n - lower_bound(c->sorted, c->n, s);
	p0 = 1.0 / (1.0 + c->n);
	if (ge > 0)
		return (1.0 + ge) * p0;
	return p0 * exp(-(s - c->sorted[c->n - 1]) / tail_scale(c));
}

void cbad_calib_add(cbad_calib *c, double s)
{
	uint32_t i, j;

	if (isnan(s))
		return;
	if (c->n == c->cap) {
		double old = c->ring[c->head];

		/* The oldest score leaves the sorted array and s enters it: one move of the scores
		 * between the two places instead of closing a gap and opening another (two moves of
		 * half the array on average). The result is that of removing the first copy of old
		 * and inserting s before the first score >= s: j counts the scores < s, less the
		 * removed one when it was one of them. */
		i = lower_bound(c->sorted, c->n, old);
		j = lower_bound(c->sorted, c->n, s);
		if (old < s) {
			j--;
			memmove(c->sorted + i, c->sorted + i + 1, (j - i) * sizeof(double));
		} else {
			memmove(c->sorted + j + 1, c->sorted + j, (i - j) * sizeof(double));
		}
		c->sorted[j] = s;
		c->ring[c->head] = s;
		c->head = (c->head + 1) % c->cap;
		return;
	}
	c->ring[(c->head + c->n) % c->cap] = s;
	i = lower_bound(c->sorted, c->n, s);
	memmove(c->sorted + i + 1, c->sorted + i, (c->n - i) * sizeof(double));
	c->sorted[i] = s;
	c->n++;
}

void cbad_calib_add_capped(cbad_calib *c, double s)
{
	if (c->n > 0 && s > c->sorted[c->n - 1] + tail_scale(c))
		s = c->sorted[c->n - 1];
	cbad_calib_add(c, s);
}

size_t cbad_calib_count(const cbad_calib *c)
{
	return c->n;
}

double cbad_calib_quantile(const cbad_calib *c, double q)
{
	size_t i;

	if (c->n == 0)
		return 0;
	if (q < 0)
		q = 0;
	if (q > 1)
		q = 1;
	i = (size_t)(q * (c->n - 1) + 0.5);
	return c->sorted[i];
}

size_t cbad_calib_memory(const cbad_calib *c)
{
	return sizeof(*c) + 2 * (size_t)c->cap * sizeof(double);
}

void cbad_calib_save(const cbad_calib *c, cbad_writer *w)
{
	cbad_w_u32(w, c->cap);
	cbad_w_u32(w, c->n);
	for (uint32_t k = 0; k < c->n; k++)
		cbad_w_f64(w, c->ring[(c->head + k) % c->cap]);
}

int cbad_calib_load(cbad_calib *c, cbad_reader *r)
{
	uint32_t cap = cbad_r_u32(r), n;

	if (r->failed || cap != c->cap)
		return -EINVAL;
	n = cbad_r_count(r, cap);
	c->n = 0;
	c->head = 0;
	for (uint32_t k = 0; k < n && !r->failed; k++) {
		double s = cbad_r_f64(r);

		if (isnan(s))
			return -EINVAL;
		cbad_calib_add(c, s);
	}
	return r->failed ? -EINVAL : 0;
}

void cbad_calib_free(cbad_calib *c)
{
	if (!c)
		return;
	free(c->ring);
	free(c->sorted);
	free(c);
}
