/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_json: a bounded, allocation-free scanner of one JSON object's scalar fields (internal to cbad). */
#include "services/detector/cbad/cbad_json.h"

#include <errno.h>
#include <math.h>
#include <string.h>

/* Hard limit on nesting (objects and arrays) so that hostile input cannot exhaust the stack. */
#define JSON_NEST_LIMIT 64

typedef struct json_ctx {
	const char *p, *end;
	cbad_json_field *out;
	size_t max, n;
	char path[CBAD_FIELD_NAME_MAX];
} json_ctx;

/* FNV-1a, inlined in the scan (a call per field otherwise: the header's function is the same). */
static inline uint64_t fnv1a(uint64_t h, const unsigned char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ULL;
	return h;
}

uint64_t cbad_json_hash(uint64_t h, const void *p, size_t n)
{
	return fnv1a(h, p, n);
}

static void skip_ws(json_ctx *c)
{
	const char *p = c->p;

	while (p < c->end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	c->p = p;
}

/* Bytes that end the plain run of a string: the closing quote, an escape, a control byte. */
static const unsigned char str_stop[256] = {
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
};

/* A string starting at the opening quote; sets s and n to its raw contents. The scan runs on
 * local pointers: through c->p, every byte load could alias the pointer itself (a char load),
 * so it was stored and reloaded per byte. */
static int scan_string(json_ctx *c, const char **s, size_t *n, bool *escaped)
{
	const char *p = c->p, *end = c->end, *q;
	bool esc = false;

	if (p >= end || *p != '"')
		return -EINVAL;
	q = ++p;
	for (;;) {
		unsigned char ch;

		while (p < end && !str_stop[(unsigned char)*p])
			p++;
		if (p >= end)
			break;
		ch = (unsigned char)*p;
		if (ch == '"') {
			*s = q;
			*n = (size_t)(p - q);
			*escaped = esc;
			c->p = p + 1;
			return 0;
		}
		if (ch < 0x20)
			break;
		/* a backslash: the escaped byte never ends the string */
		esc = true;
		if (end - p < 2)
			break;
		p += 2;
	}
	*escaped = esc;
	c->p = p;
	return -EINVAL;
}

static const double pow10_tab[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
				     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
				     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static double scale10(double m, int e)
{
	if (e >= 0 && e <= 22)
		return m * pow10_tab[e];
	if (e < 0 && e >= -22)
		return m / pow10_tab[-e];
	return m * pow(10.0, (double)e);
}

/* A JSON number; its value is exact for up to 19 significant digits and within an ulp or two
 * otherwise (the same bytes always give the same double). */
static int scan_number(json_ctx *c, double *ret)
{
	const char *p = c->p, *end = c->end; /* locals: see scan_string */
	bool neg = false;
	uint64_t mant = 0;
	int digits = 0, e10 = 0;
	long ex = 0;
	bool exneg = false;

	if (p < end && *p == '-') {
		neg = true;
		p++;
	}
	if (p >= end || *p < '0' || *p > '9')
		return -EINVAL;
	if (*p == '0') {
		p++;
	} else {
		while (p < end && *p >= '0' && *p <= '9') {
			if (digits < 19) {
				mant = mant * 10 + (uint64_t)(*p - '0');
				digits++;
			} else {
				e10++;
			}
			p++;
		}
	}
	if (p < end && *p == '.') {
		p++;
		if (p >= end || *p < '0' || *p > '9')
			return -EINVAL;
		while (p < end && *p >= '0' && *p <= '9') {
			if (digits < 19 && !(mant == 0 && *p == '0' && digits == 0)) {
				mant = mant * 10 + (uint64_t)(*p - '0');
				digits++;
				e10--;
			} else if (digits == 0) {
				e10--; /* leading zeros of a fraction */
			}
			p++;
		}
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < end && (*p == '+' || *p == '-')) {
			exneg = *p == '-';
			p++;
		}
		if (p >= end || *p < '0' || *p > '9')
			return -EINVAL;
		while (p < end && *p >= '0' && *p <= '9') {
			if (ex < 100000)
				ex = ex * 10 + (*p - '0');
			p++;
		}
	}
	if (exneg)
		ex = -ex;
	ex += e10;
	if (ex > 400)
		ex = 400;
	if (ex < -400)
		ex = -400;
	*ret = mant == 0 ? 0.0 : scale10((double)mant, (int)ex);
	if (neg)
		*ret = -*ret;
	c->p = p;
	return 0;
}

static int scan_literal(json_ctx *c, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0)
		return -EINVAL;
	c->p += n;
	return 0;
}

static void store(json_ctx *c, size_t plen, cbad_json_type t, double num, const char *s,
		  size_t slen, bool escaped)
{
	cbad_json_field *f;

	if (c->n >= c->max || plen == 0)
		return;
	f = &c->out[c->n++];
	/* Most paths are short: a fixed 16-byte move (both arrays are larger) instead of a call;
	 * the bytes past the terminator are the context's, not the caller's. */
	_Static_assert(sizeof(f->path) >= 16 && sizeof(c->path) >= 16, "path arrays too small");
	if (plen < 16)
		memcpy(f->path, c->path, 16);
	else
		memcpy(f->path, c->path, plen);
	f->path[plen] = '\0';
	f->path_hash = fnv1a(CBAD_JSON_HASH_INIT, (const unsigned char *)c->path, plen);
	f->type = t;
	f->escaped = escaped;
	f->num = num;
	f->str = s;
	f->str_len = slen > UINT32_MAX ? UINT32_MAX : (uint32_t)slen;
}

static int scan_object(json_ctx *c, size_t plen, int depth);

static int skip_array(json_ctx *c, int depth);

/* A value; stored under path[0..plen) when plen > 0. */
static int scan_value(json_ctx *c, size_t plen, int depth)
{
	const char *start;
	double num;
	const char *s;
	size_t n;
	bool esc;

	skip_ws(c);
	if (c->p >= c->end)
		return -EINVAL;
	start = c->p;
	switch (*c->p) {
	case '{':
		return scan_object(c, depth < CBAD_JSON_MAX_DEPTH ? plen : 0, depth + 1);
	case '[':
		return skip_array(c, depth + 1);
	case '"':
		if (scan_string(c, &s, &n, &esc) < 0)
			return -EINVAL;
		store(c, plen, CBAD_JSON_STRING, 0, s, n, esc);
		return 0;
	case 't':
		if (scan_literal(c, "true") < 0)
			return -EINVAL;
		store(c, plen, CBAD_JSON_BOOL, 1, start, 4, false);
		return 0;
	case 'f':
		if (scan_literal(c, "false") < 0)
			return -EINVAL;
		store(c, plen, CBAD_JSON_BOOL, 0, start, 5, false);
		return 0;
	case 'n':
		if (scan_literal(c, "null") < 0)
			return -EINVAL;
		store(c, plen, CBAD_JSON_NULL, 0, start, 4, false);
		return 0;
	default:
		if (scan_number(c, &num) < 0)
			return -EINVAL;
		store(c, plen, CBAD_JSON_NUMBER, num, start, (size_t)(c->p - start), false);
		return 0;
	}
}

static int skip_array(json_ctx *c, int depth)
{
	if (depth > JSON_NEST_LIMIT)
		return -EINVAL;
	c->p++; /* '[' */
	skip_ws(c);
	if (c->p < c->end && *c->p == ']') {
		c->p++;
		return 0;
	}
	for (;;) {
		if (scan_value(c, 0, depth) < 0)
			return -EINVAL;
		skip_ws(c);
		if (c->p >= c->end)
			return -EINVAL;
		if (*c->p == ']') {
			c->p++;
			return 0;
		}
		if (*c->p != ',')
			return -EINVAL;
		c->p++;
	}
}

/* An object at '{'; its keys extend path[0..plen) (plen 0 at top level of a stored object is
 * told apart by depth: keys are stored when depth == 1 or plen > 0). */
static int scan_object(json_ctx *c, size_t plen, int depth)
{
	bool keep = depth == 1 || plen > 0;

	if (depth > JSON_NEST_LIMIT)
		return -EINVAL;
	c->p++; /* '{' */
	skip_ws(c);
	if (c->p < c->end && *c->p == '}') {
		c->p++;
		return 0;
	}
	for (;;) {
		const char *k;
		size_t kn, np = 0;
		bool esc;

		skip_ws(c);
		if (scan_string(c, &k, &kn, &esc) < 0)
			return -EINVAL;
		if (keep && !esc && kn > 0) {
			size_t sep = plen > 0 ? 1 : 0;

			if (plen + sep + kn < CBAD_FIELD_NAME_MAX) {
				if (sep)
					c->path[plen] = '.';
				memcpy(c->path + plen + sep, k, kn);
				np = plen + sep + kn;
			}
		}
		skip_ws(c);
		if (c->p >= c->end || *c->p != ':')
			return -EINVAL;
		c->p++;
		if (scan_value(c, np, depth) < 0)
			return -EINVAL;
		skip_ws(c);
		if (c->p >= c->end)
			return -EINVAL;
		if (*c->p == '}') {
			c->p++;
			return 0;
		}
		if (*c->p != ',')
			return -EINVAL;
		c->p++;
	}
}

int cbad_json_scan(const char *raw, size_t len, cbad_json_field *out, size_t max)
{
	json_ctx c = {.p = raw, .end = raw + len, .out = out, .max = max, .n = 0};

	if (!raw)
		return -EINVAL;
	skip_ws(&c);
	if (c.p >= c.end || *c.p != '{')
		return -EINVAL;
	if (scan_object(&c, 0, 1) < 0)
		return -EINVAL;
	skip_ws(&c);
	if (c.p != c.end)
		return -EINVAL;
	return (int)(c.n > (size_t)INT32_MAX ? INT32_MAX : c.n);
}
