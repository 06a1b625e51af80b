/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_ser: bounded little-endian writer and reader for detector state (internal to cbad). */
#include "services/detector/cbad/cbad_ser.h"

#include <stdlib.h>
#include <string.h>

void cbad_w_bytes(cbad_writer *w, const void *p, size_t n)
{
	if (w->failed || n == 0)
		return;
	if (w->len + n > w->cap) {
		size_t cap = w->cap ? w->cap : 256;
		uint8_t *nb;

		while (cap < w->len + n)
			cap *= 2;
		nb = realloc(w->buf, cap);
		if (!nb) {
			w->failed = true;
			return;
		}
		w->buf = nb;
		w->cap = cap;
	}
	memcpy(w->buf + w->len, p, n);
	w->len += n;
}

void cbad_w_u8(cbad_writer *w, uint8_t v)
{
	cbad_w_bytes(w, &v, 1);
}

void cbad_w_u32(cbad_writer *w, uint32_t v)
{
	uint8_t b[4];

	for (int i = 0; i < 4; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	cbad_w_bytes(w, b, 4);
}

void cbad_w_u64(cbad_writer *w, uint64_t v)
{
	uint8_t b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	cbad_w_bytes(w, b, 8);
}

void cbad_w_i64(cbad_writer *w, int64_t v)
{
	cbad_w_u64(w, (uint64_t)v);
}

void cbad_w_f64(cbad_writer *w, double v)
{
	uint64_t u;

	memcpy(&u, &v, sizeof(u));
	cbad_w_u64(w, u);
}

void cbad_w_str(cbad_writer *w, const char *s)
{
	size_t n = strlen(s);

	cbad_w_u32(w, (uint32_t)n);
	cbad_w_bytes(w, s, n);
}

void cbad_writer_free(cbad_writer *w)
{
	free(w->buf);
	w->buf = NULL;
	w->len = w->cap = 0;
}

void cbad_reader_init(cbad_reader *r, const void *p, size_t len)
{
	r->p = p;
	r->len = len;
	r->off = 0;
	r->failed = false;
}

bool cbad_r_bytes(cbad_reader *r, void *out, size_t n)
{
	if (r->failed || n > r->len - r->off) {
		r->failed = true;
		if (n)
			memset(out, 0, n);
		return false;
	}
	if (n) /* out may be NULL for an empty section */
		memcpy(out, r->p + r->off, n);
	r->off += n;
	return true;
}

uint8_t cbad_r_u8(cbad_reader *r)
{
	uint8_t v;

	cbad_r_bytes(r, &v, 1);
	return v;
}

uint32_t cbad_r_u32(cbad_reader *r)
{
	uint8_t b[4];
	uint32_t v = 0;

	cbad_r_bytes(r, b, 4);
	for (int i = 0; i < 4; i++)
		v |= (uint32_t)b[i] << (8 * i);
	return v;
}

uint64_t cbad_r_u64(cbad_reader *r)
{
	uint8_t b[8];
	uint64_t v = 0;

	cbad_r_bytes(r, b, 8);
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)b[i] << (8 * i);
	return v;
}

int64_t cbad_r_i64(cbad_reader *r)
{
	return (int64_t)cbad_r_u64(r);
}

double cbad_r_f64(cbad_reader *r)
{
	uint64_t u = cbad_r_u64(r);
	double v;

	memcpy(&v, &u, sizeof(v));
	return v;
}

bool cbad_r_str(cbad_reader *r, char *out, size_t outlen)
{
	uint32_t n = cbad_r_u32(r);

	if (r->failed || n >= outlen) {
		r->failed = true;
		if (outlen)
			out[0] = '\0';
		return false;
	}
	if (!cbad_r_bytes(r, out, n))
		return false;
	out[n] = '\0';
	return true;
}

uint32_t cbad_r_count(cbad_reader *r, uint32_t max)
{
	uint32_t v = cbad_r_u32(r);

	if (v > max) {
		r->failed = true;
		return 0;
	}
	return v;
}
