/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_calib: conformal p-values against a ring of recent normal scores. */
#include "services/detector/cbad/cbad_calib.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Scores are kept as floats while every one of them is exactly a float (the novelty channel's
 * are whole bytes times 8), and as doubles from the first one that is not: half the memory for
 * the common case and, either way, exactly the values given, so every rank and p-value is the
 * one a double array gives. */
struct cbad_calib {
	uint32_t cap, n, head; /* ring: ring[(head + k) % cap], k < n, oldest first */
	double min_scale;
	bool wide; /* the arrays below hold doubles */
	void *ring;
	void *sorted; /* the same n scores, ascending */
};

static inline double at(const void *a, bool wide, uint32_t i)
{
	return wide ? ((const double *)a)[i] : (double)((const float *)a)[i];
}

static inline void put(void *a, bool wide, uint32_t i, double s)
{
	if (wide)
		((double *)a)[i] = s;
	else
		((float *)a)[i] = (float)s;
}

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
	c->ring = calloc(cap, sizeof(float));
	c->sorted = calloc(cap, sizeof(float));
	if (!c->ring || !c->sorted) {
		cbad_calib_free(c);
		return -ENOMEM;
	}
	*ret = c;
	return 0;
}

/* Moves the scores to double arrays. Returns 0 or -ENOMEM (nothing changed then). */
static int widen(cbad_calib *c)
{
	double *ring = malloc(c->cap * sizeof(double)), *sorted = malloc(c->cap * sizeof(double));

	if (!ring || !sorted) {
		free(ring);
		free(sorted);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < c->cap; i++) {
		ring[i] = ((const float *)c->ring)[i];
		sorted[i] = ((const float *)c->sorted)[i];
	}
	free(c->ring);
	free(c->sorted);
	c->ring = ring;
	c->sorted = sorted;
	c->wide = true;
	return 0;
}

/* First index whose value is >= s. */
static uint32_t lower_bound(const cbad_calib *c, double s)
{
	uint32_t lo = 0, hi = c->n;

	if (c->wide) {
		const double *a = c->sorted;

		while (lo < hi) {
			uint32_t mid = lo + (hi - lo) / 2;

			if (a[mid] < s)
				lo = mid + 1;
			else
				hi = mid;
		}
	} else {
		const float *a = c->sorted;

		while (lo < hi) {
			uint32_t mid = lo + (hi - lo) / 2;

			if ((double)a[mid] < s)
				lo = mid + 1;
			else
				hi = mid;
		}
	}
	return lo;
}

static double top(const cbad_calib *c)
{
	return at(c->sorted, c->wide, c->n - 1);
}

static double tail_scale(const cbad_calib *c)
{
	uint32_t k = c->n / 32 < 4 ? 4 : c->n / 32;
	double low, scale = 0;

	if (k > c->n)
		k = c->n;
	low = at(c->sorted, c->wide, c->n - k);
	for (uint32_t i = c->n - k; i < c->n; i++)
		scale += at(c->sorted, c->wide, i) - low;
	scale /= k;
	return scale < c->min_scale ? c->min_scale : scale;
}

double cbad_calib_pvalue(const cbad_calib *c, double s)
{
	uint32_t ge;
	double p0;

	if (c->n == 0)
		return 1.0;
	ge = c->n - lower_bound(c, s);
	p0 = 1.0 / (1.0 + c->n);
	if (ge > 0)
		return (1.0 + ge) * p0;
	return p0 * exp(-(s - top(c)) / tail_scale(c));
}

void cbad_calib_add(cbad_calib *c, double s)
{
	size_t es;
	uint32_t i, j;
	char *sorted;

	if (isnan(s))
		return;
	if (!c->wide && (double)(float)s != s && widen(c))
		return; /* out of memory: the score is not remembered */
	es = c->wide ? sizeof(double) : sizeof(float);
	sorted = c->sorted;
	if (c->n == c->cap) {
		double old = at(c->ring, c->wide, c->head);

		/* The oldest score leaves the sorted array and s enters it: one move of the scores
		 * between the two places instead of closing a gap and opening another (two moves of
		 * half the array on average). The result is that of removing the first copy of old
		 * and inserting s before the first score >= s: j counts the scores < s, less the
		 * removed one when it was one of them. */
		i = lower_bound(c, old);
		j = lower_bound(c, s);
		if (old < s) {
			j--;
			memmove(sorted + i * es, sorted + (i + 1) * es, (j - i) * es);
		} else {
			memmove(sorted + (j + 1) * es, sorted + j * es, (i - j) * es);
		}
		put(c->sorted, c->wide, j, s);
		put(c->ring, c->wide, c->head, s);
		c->head = (c->head + 1) % c->cap;
		return;
	}
	put(c->ring, c->wide, (c->head + c->n) % c->cap, s);
	i = lower_bound(c, s);
	memmove(sorted + (i + 1) * es, sorted + i * es, (c->n - i) * es);
	put(c->sorted, c->wide, i, s);
	c->n++;
}

void cbad_calib_add_capped(cbad_calib *c, double s)
{
	if (c->n > 0 && s > top(c) + tail_scale(c))
		s = top(c);
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
	return at(c->sorted, c->wide, (uint32_t)i);
}

size_t cbad_calib_memory(const cbad_calib *c)
{
	return sizeof(*c) + 2 * (size_t)c->cap * (c->wide ? sizeof(double) : sizeof(float));
}

void cbad_calib_save(const cbad_calib *c, cbad_writer *w)
{
	cbad_w_u32(w, c->cap);
	cbad_w_u32(w, c->n);
	for (uint32_t k = 0; k < c->n; k++)
		cbad_w_f64(w, at(c->ring, c->wide, (c->head + k) % c->cap));
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
		if (!c->wide && (double)(float)s != s && widen(c))
			return -ENOMEM;
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
