/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_text: the text channel, how unusual the prose of an event's long free-text fields reads. */
#include "services/detector/cbad/cbad_text.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/detector/cbad/cbad_json.h"
#include "services/detector/cbad/cbad_calib.h"

#define STATE_TAG 0x31545854u /* "TXT1" */
#define CAND_MAX 16           /* string fields watched while the prose fields are chosen */
#define SCAN_FIELDS 64
#define SHAPE_BITS 1024       /* linear-counting bitmap of a candidate's digit-free values */
/* A prose field: present in half of the events, 24 bytes long on average, words (a space in
 * half of its values), mostly letters and spaces (not a user agent or a path), and its values
 * still differ once digits are dropped (not a log template with variable numbers). */
#define PROSE_PRESENT 0.5
#define PROSE_MEAN_LEN 24.0
#define PROSE_SPACED 0.5
#define PROSE_LETTERS 0.8
#define PROSE_SHAPES (1.0 / 8)
#define TRI_BUCKETS 4096 /* hashed (a, b, c) byte triples */
#define BI_BUCKETS 4096  /* hashed (a, b) byte pairs */
#define SMOOTH 2.0       /* pseudo-counts a context lends to the next shorter one */
#define HALVE_BYTES (1u << 16) /* every 64 KiB learned, all counts are halved */
#define TEXT_MAX 1024    /* bytes of a text judged and learned */
#define TEXT_MIN 8       /* shorter texts say too little */
#define MODEL_WARMUP 256 /* texts a model learns before its statistics are calibrated */
#define CALIB_HISTORY 512      /* normal statistics a field's p-values rank against */
#define CALIB_MIN 64            /* ... and how many before there are p-values */
#define CALIB_MIN_SCALE 0.1     /* bits per byte: floor of the tail scale */
#define REP_HISTORY 256         /* normal repetition shares remembered per field */
#define REP_MIN_SCALE 0.02      /* floor of their tail scale */
#define REP_BITS 2048           /* bitmap of one text's hashed byte triples */
#define TESTS 2                 /* per field: bits per byte, repetition */
#define QUARANTINE_N 16         /* flagged texts waiting to be learned ... */
#define QUARANTINE_BYTES 256    /* ... their first bytes ... */
#define QUARANTINE_DELAY 500    /* ... until this many more texts of the field have come */
#define LEFTOUT_EW (1.0 / 4096) /* share of recent texts left out of the model ... */
#define LEFTOUT_NEW 0.05        /* ... above which strange texts are the new normal */

typedef struct text_cand {
	uint64_t hash;
	char path[CBAD_FIELD_NAME_MAX];
	uint32_t n, bytes, spaced, letters;
	uint8_t shapes[SHAPE_BITS / 8];
} text_cand;

/* An order-2 byte model with hashed counts, interpolated down to order 0. */
typedef struct text_model {
	uint32_t uni[256];
	uint32_t nuni;
	uint32_t since_halve;
	uint16_t bi[BI_BUCKETS];
	uint16_t tri[TRI_BUCKETS];
} text_model;

typedef struct text_field {
	uint64_t hash;
	char path[CBAD_FIELD_NAME_MAX];
	uint32_t texts; /* texts learned */
	double leftout; /* EW share of texts not learned */
	double mean;    /* EW mean of the learned statistics, for explanations */
	uint32_t observed; /* texts judged */
	uint32_t qhead, qn; /* quarantine: strange texts learned only after QUARANTINE_DELAY more */
	uint32_t q_due[QUARANTINE_N];
	uint16_t q_len[QUARANTINE_N];
	uint8_t *q_bytes[QUARANTINE_N]; /* malloc'd while waiting: most fields quarantine little */
	text_model m;
	cbad_calib *cal;  /* bits per byte */
	cbad_calib *rcal; /* repetition share */
} text_field;

struct cbad_text {
	uint32_t seen;
	bool decided;
	uint32_t ncand, nfields;
	text_cand *cand; /* CAND_MAX, while the fields are being chosen */
	text_field *f[CBAD_TEXT_MAX_FIELDS]; /* allocated when chosen: a stream without prose pays
					      * for nothing once the choice is made */
};

int cbad_text_new(cbad_text **ret)
{
	cbad_text *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->cand = calloc(CAND_MAX, sizeof(*t->cand));
	if (!t->cand) {
		free(t);
		return -ENOMEM;
	}
	*ret = t;
	return 0;
}

static void fields_free(cbad_text *t)
{
	for (uint32_t k = 0; k < t->nfields; k++) {
		cbad_calib_free(t->f[k]->cal);
		cbad_calib_free(t->f[k]->rcal);
		for (uint32_t q = 0; q < QUARANTINE_N; q++)
			free(t->f[k]->q_bytes[q]);
		free(t->f[k]);
		t->f[k] = NULL;
	}
	t->nfields = 0;
}

void cbad_text_free(cbad_text *t)
{
	if (!t)
		return;
	fields_free(t);
	free(t->cand);
	free(t);
}

size_t cbad_text_memory(const cbad_text *t)
{
	size_t n;

	if (!t)
		return 0;
	n = sizeof(*t) + (t->cand ? CAND_MAX * sizeof(*t->cand) : 0);
	for (uint32_t k = 0; k < t->nfields; k++) {
		const text_field *f = t->f[k];

		n += sizeof(*f) + cbad_calib_memory(f->cal) + cbad_calib_memory(f->rcal);
		for (uint32_t q = 0; q < f->qn; q++)
			n += f->q_len[(f->qhead + q) % QUARANTINE_N];
	}
	return n;
}

static inline uint32_t h2(uint32_t a, uint32_t b)
{
	return ((a << 8 | b) * 2654435761u) >> (32 - 12);
}

static inline uint32_t h3(uint32_t a, uint32_t b, uint32_t c)
{
	return ((a << 16 | b << 8 | c) * 2654435761u) >> (32 - 12);
}

_Static_assert(BI_BUCKETS == 1u << 12 && TRI_BUCKETS == 1u << 12, "hash widths");

static inline void inc16(uint16_t *c)
{
	if (*c < UINT16_MAX)
		(*c)++;
}

static void model_halve(text_model *m)
{
	m->nuni = 0;
	for (int i = 0; i < 256; i++) {
		m->uni[i] >>= 1;
		m->nuni += m->uni[i];
	}
	for (int i = 0; i < BI_BUCKETS; i++)
		m->bi[i] >>= 1;
	for (int i = 0; i < TRI_BUCKETS; i++)
		m->tri[i] >>= 1;
	m->since_halve = 0;
}

/* Every digit reads as '0': numbers in text are quantities and ids, not language, and their
 * random digit pairs would make a short "42x38=?" cost more than a sentence in another
 * script (the canonicaliser masks them for novelty for the same reason). */
static inline uint32_t sym(uint8_t c)
{
	return (unsigned)(c - '0') < 10u ? '0' : c;
}

/* The text starts after two virtual boundary bytes (0, which JSON strings never hold raw), so
 * its opening bytes are judged as openings. */
static void model_learn(text_model *m, const uint8_t *s, uint32_t n)
{
	uint32_t a = 0, b = 0;

	m->uni[0]++;
	m->nuni++;
	inc16(&m->bi[h2(0, 0)]);
	for (uint32_t i = 0; i < n; i++) {
		uint32_t c = sym(s[i]);

		m->uni[c]++;
		m->nuni++;
		inc16(&m->bi[h2(b, c)]);
		inc16(&m->tri[h3(a, b, c)]);
		a = b;
		b = c;
	}
	m->since_halve += n + 1;
	if (m->since_halve >= HALVE_BYTES)
		model_halve(m);
}

/* Mean bits per byte of s under the model. */
static double model_cost(const text_model *m, const uint8_t *s, uint32_t n)
{
	uint32_t a = 0, b = 0;
	double bits = 0, prod = 1.0, inv_n0 = 1.0 / (m->nuni + 128.0);

	for (uint32_t i = 0; i < n; i++) {
		uint32_t c = sym(s[i]);
		double p0 = (m->uni[c] + 0.5) * inv_n0;
		double p1 = (m->bi[h2(b, c)] + SMOOTH * p0) / (m->uni[b] + SMOOTH);
		double p2 = (m->tri[h3(a, b, c)] + SMOOTH * p1) / (m->bi[h2(a, b)] + SMOOTH);

		/* hashed counts can collide, so a context may look rarer than its continuation */
		prod *= p2 < 1.0 ? p2 : 1.0;
		/* one log2 per 8 bytes: each p2 is above 1e-15 (counts stay below 2^17), so a
		 * product of 8 stays far from underflow */
		if ((i & 7) == 7) {
			bits -= log2(prod);
			prod = 1.0;
		}
		a = b;
		b = c;
	}
	return (bits - log2(prod)) / n;
}

/* A strange text is learned only QUARANTINE_DELAY texts later: a burst of one new kind of
 * text (a window of answers in another language) stays strange for its duration, while a rare
 * but normal text that recurs (a haiku asked for once a day) is learned and stops being
 * flagged. Without it a flagged text was never learned and flagged on every return. */
static void quarantine_put(text_field *f, const uint8_t *s, uint32_t n)
{
	uint32_t i, len = n < QUARANTINE_BYTES ? n : QUARANTINE_BYTES;
	uint8_t *p;

	if (f->qn == QUARANTINE_N)
		return;
	p = malloc(len ? len : 1);
	if (!p)
		return; /* out of memory: the text is not learned */
	memcpy(p, s, len);
	i = (f->qhead + f->qn++) % QUARANTINE_N;
	f->q_due[i] = f->observed + QUARANTINE_DELAY;
	f->q_len[i] = (uint16_t)len;
	f->q_bytes[i] = p;
}

static void quarantine_release(text_field *f)
{
	while (f->qn > 0 && f->q_due[f->qhead] <= f->observed) {
		model_learn(&f->m, f->q_bytes[f->qhead], f->q_len[f->qhead]);
		free(f->q_bytes[f->qhead]);
		f->q_bytes[f->qhead] = NULL;
		f->qhead = (f->qhead + 1) % QUARANTINE_N;
		f->qn--;
	}
}

/* The share of a text's byte triples that already occurred earlier in it: a degenerate text
 * (one token repeated, a stuck generation) repeats itself, which its bits per byte under a
 * model of ordinary text do not show (the repeated token is an ordinary one). */
static double repetition(const uint8_t *s, uint32_t n)
{
	uint8_t seen[REP_BITS / 8];
	uint32_t rep = 0;

	if (n < 3)
		return 0;
	memset(seen, 0, sizeof(seen));
	for (uint32_t i = 2; i < n; i++) {
		uint32_t h = ((uint32_t)sym(s[i - 2]) << 16 | (uint32_t)sym(s[i - 1]) << 8 | sym(s[i])) *
			     2654435761u >> (32 - 11);
		uint8_t bit = (uint8_t)(1u << (h & 7));

		rep += (seen[h >> 3] & bit) != 0;
		seen[h >> 3] |= bit;
	}
	return (double)rep / (n - 2);
}

static void cand_watch(cbad_text *t, const cbad_json_field *f)
{
	text_cand *c = NULL;
	uint64_t h = CBAD_JSON_HASH_INIT;
	uint32_t spaced = 0, letters = 0;

	for (uint32_t k = 0; k < t->ncand; k++)
		if (t->cand[k].hash == f->path_hash) {
			c = &t->cand[k];
			break;
		}
	if (!c) {
		if (t->ncand == CAND_MAX)
			return;
		c = &t->cand[t->ncand++];
		c->hash = f->path_hash;
		memcpy(c->path, f->path, sizeof(c->path)); /* both CBAD_FIELD_NAME_MAX, NUL-ended */
	}
	for (uint32_t i = 0; i < f->str_len; i++) {
		unsigned char ch = (unsigned char)f->str[i];

		if (ch == ' ')
			spaced = 1;
		if (ch == ' ' || (unsigned)((ch | 0x20) - 'a') < 26u || ch >= 0x80)
			letters++;
		if ((unsigned)(ch - '0') >= 10u)
			h = cbad_json_hash(h, &ch, 1);
	}
	c->n++;
	c->bytes += f->str_len;
	c->spaced += spaced;
	c->letters += letters;
	h = (h ^ (h >> 29)) * 0xbf58476d1ce4e5b9ULL;
	c->shapes[(h >> 54) >> 3] |= (uint8_t)(1u << ((h >> 54) & 7));
}

/* Linear counting: the number of distinct values behind a bitmap of SHAPE_BITS bits. */
static double cand_shapes(const text_cand *c)
{
	uint32_t zero = 0;

	for (int i = 0; i < SHAPE_BITS / 8; i++)
		zero += 8 - (uint32_t)__builtin_popcount(c->shapes[i]);
	if (zero == 0)
		zero = 1;
	return -SHAPE_BITS * log((double)zero / SHAPE_BITS);
}

/* The prose fields: every test of PROSE_* holds; the ones with the most text first. */
static void cand_decide(cbad_text *t)
{
	bool taken[CAND_MAX] = {false};

	t->decided = true;
	while (t->nfields < CBAD_TEXT_MAX_FIELDS) {
		int best = -1;

		for (uint32_t k = 0; k < t->ncand; k++) {
			const text_cand *c = &t->cand[k];

			if (taken[k] || c->n < PROSE_PRESENT * t->seen ||
			    c->bytes < PROSE_MEAN_LEN * c->n || c->spaced < PROSE_SPACED * c->n ||
			    c->letters < PROSE_LETTERS * c->bytes || cand_shapes(c) < PROSE_SHAPES * c->n)
				continue;
			if (best < 0 || c->bytes > t->cand[best].bytes)
				best = (int)k;
		}
		if (best < 0)
			break;
		taken[best] = true;
		{
			text_field *f = calloc(1, sizeof(*f));

			if (!f)
				break; /* out of memory: the field is not modelled */
			t->f[t->nfields++] = f;
			f->hash = t->cand[best].hash;
			memcpy(f->path, t->cand[best].path, sizeof(f->path));
			if (cbad_calib_new(CALIB_HISTORY, CALIB_MIN_SCALE, &f->cal) ||
			    cbad_calib_new(REP_HISTORY, REP_MIN_SCALE, &f->rcal)) {
				cbad_calib_free(f->cal); /* out of memory: the field is not modelled */
				free(f);
				t->f[--t->nfields] = NULL;
				break;
			}
		}
	}
	free(t->cand);
	t->cand = NULL;
	t->ncand = 0;
}

size_t cbad_text_observe(cbad_text *t, const char *raw, size_t len, double learn_alpha,
			 cbad_chan_signal *out, size_t max)
{
	cbad_json_field fields[SCAN_FIELDS];
	int nf;
	double pbest = 1.0;
	int ibest = -1;
	double sbest = 0;
	bool rbest = false;

	if (t->decided && t->nfields == 0)
		return 0;
	t->seen++;
	{
		size_t i = 0;

		while (i < len && (raw[i] == ' ' || raw[i] == '\t'))
			i++;
		if (i == len || raw[i] != '{')
			return 0;
	}
	nf = cbad_json_scan(raw, len, fields, SCAN_FIELDS);
	if (nf <= 0)
		return 0;
	if (!t->decided) {
		for (int i = 0; i < nf; i++)
			if (fields[i].type == CBAD_JSON_STRING)
				cand_watch(t, &fields[i]);
		if (t->seen >= CBAD_TEXT_HEURISTIC)
			cand_decide(t);
		return 0;
	}
	for (uint32_t k = 0; k < t->nfields; k++) {
		text_field *f = t->f[k];
		const cbad_json_field *jf = NULL;
		uint32_t n;
		double stat, rstat, p = 1.0, prep = 1.0, pf;
		bool learn, ready;

		for (int i = 0; i < nf; i++)
			if (fields[i].path_hash == f->hash && fields[i].type == CBAD_JSON_STRING) {
				jf = &fields[i];
				break;
			}
		if (!jf || jf->str_len < TEXT_MIN)
			continue;
		n = jf->str_len < TEXT_MAX ? jf->str_len : TEXT_MAX;
		stat = model_cost(&f->m, (const uint8_t *)jf->str, n);
		rstat = repetition((const uint8_t *)jf->str, n);
		ready = f->texts >= MODEL_WARMUP && cbad_calib_count(f->cal) >= CALIB_MIN;
		if (ready) {
			p = cbad_calib_pvalue(f->cal, stat);
			prep = cbad_calib_pvalue(f->rcal, rstat);
		}
		/* Bonferroni over the field's two tests. */
		pf = fmin(1.0, TESTS * fmin(p, prep));
		if (pf < pbest) {
			pbest = pf;
			ibest = (int)k;
			sbest = prep < p ? rstat : stat;
			rbest = prep < p;
		}
		learn = pf >= learn_alpha || f->leftout > LEFTOUT_NEW;
		f->leftout = f->leftout * (1 - LEFTOUT_EW) + (learn ? 0 : LEFTOUT_EW);
		if (f->texts >= MODEL_WARMUP) {
			if (p >= learn_alpha)
				cbad_calib_add(f->cal, stat);
			else
				cbad_calib_add_capped(f->cal, stat);
			if (prep >= learn_alpha)
				cbad_calib_add(f->rcal, rstat);
			else
				cbad_calib_add_capped(f->rcal, rstat);
		}
		if (learn) {
			model_learn(&f->m, (const uint8_t *)jf->str, n);
			f->texts++;
			f->mean = f->texts == 1 ? stat : f->mean + (stat - f->mean) / 64;
		} else {
			quarantine_put(f, (const uint8_t *)jf->str, n);
		}
		f->observed++;
		quarantine_release(f);
	}
	if (ibest < 0 || max == 0)
		return 0;
	{
		cbad_chan_signal *s = out;
		const text_field *f = t->f[ibest];
		/* Bonferroni over the fields, and over the event kind's two channels: the text
		 * signal shares the kind with novelty, which the detector does not correct for. */
		double pc = pbest * t->nfields * 2;

		memset(s, 0, sizeof(*s));
		s->kind = CBAD_KIND_EVENT;
		snprintf(s->name, sizeof(s->name), "text:%.26s", f->path);
		snprintf(s->field, sizeof(s->field), "%s", f->path);
		s->stat = sbest;
		s->p_value = pc < 1.0 ? pc : 1.0;
		s->value = sbest;
		if (rbest) {
			s->base_low = cbad_calib_quantile(f->rcal, 0.05);
			s->base_median = cbad_calib_quantile(f->rcal, 0.5);
			s->base_high = cbad_calib_quantile(f->rcal, 0.95);
			snprintf(s->detail, sizeof(s->detail),
				 "it repeats itself: %.0f%% of its byte triples occurred earlier in it, "
				 "usually about %.0f%%",
				 100 * sbest, 100 * s->base_median);
		} else {
			s->base_low = cbad_calib_quantile(f->cal, 0.05);
			s->base_median = f->mean;
			s->base_high = cbad_calib_quantile(f->cal, 0.95);
			snprintf(s->detail, sizeof(s->detail),
				 "it reads at %.2f bits per byte under the field's own recent texts, "
				 "usually about %.2f (another language, script or format)",
				 sbest, f->mean);
		}
	}
	return 1;
}

static void model_save(const text_model *m, cbad_writer *w)
{
	cbad_w_u32(w, m->since_halve);
	for (int i = 0; i < 256; i++)
		cbad_w_u32(w, m->uni[i]);
	cbad_w_bytes(w, m->bi, sizeof(m->bi));
	cbad_w_bytes(w, m->tri, sizeof(m->tri));
}

static int model_load(text_model *m, cbad_reader *r)
{
	m->since_halve = cbad_r_u32(r);
	m->nuni = 0;
	for (int i = 0; i < 256; i++) {
		m->uni[i] = cbad_r_u32(r);
		m->nuni += m->uni[i];
	}
	cbad_r_bytes(r, m->bi, sizeof(m->bi));
	cbad_r_bytes(r, m->tri, sizeof(m->tri));
	return r->failed || m->since_halve >= HALVE_BYTES + TEXT_MAX + 1 ? -EINVAL : 0;
}

void cbad_text_save(const cbad_text *t, cbad_writer *w)
{
	cbad_w_u32(w, STATE_TAG);
	cbad_w_u32(w, t->seen);
	cbad_w_u8(w, t->decided);
	cbad_w_u32(w, t->ncand);
	for (uint32_t k = 0; k < t->ncand; k++) {
		const text_cand *c = &t->cand[k];

		cbad_w_u64(w, c->hash);
		cbad_w_str(w, c->path);
		cbad_w_u32(w, c->n);
		cbad_w_u32(w, c->bytes);
		cbad_w_u32(w, c->spaced);
		cbad_w_u32(w, c->letters);
		cbad_w_bytes(w, c->shapes, sizeof(c->shapes));
	}
	cbad_w_u32(w, t->nfields);
	for (uint32_t k = 0; k < t->nfields; k++) {
		const text_field *f = t->f[k];

		cbad_w_u64(w, f->hash);
		cbad_w_str(w, f->path);
		cbad_w_u32(w, f->texts);
		cbad_w_f64(w, f->leftout);
		cbad_w_f64(w, f->mean);
		cbad_w_u32(w, f->observed);
		cbad_w_u32(w, f->qn);
		for (uint32_t q = 0; q < f->qn; q++) {
			uint32_t i = (f->qhead + q) % QUARANTINE_N;

			cbad_w_u32(w, f->q_due[i]);
			cbad_w_u32(w, f->q_len[i]);
			cbad_w_bytes(w, f->q_bytes[i], f->q_len[i]);
		}
		model_save(&f->m, w);
		cbad_calib_save(f->cal, w);
		cbad_calib_save(f->rcal, w);
	}
}

int cbad_text_load(cbad_text *t, cbad_reader *r)
{
	uint32_t n, nq;

	fields_free(t);
	t->ncand = 0;
	if (cbad_r_u32(r) != STATE_TAG)
		return -EINVAL;
	t->seen = cbad_r_u32(r);
	t->decided = cbad_r_u8(r) != 0;
	if (t->decided) {
		free(t->cand);
		t->cand = NULL;
	} else if (!t->cand) {
		t->cand = calloc(CAND_MAX, sizeof(*t->cand));
		if (!t->cand)
			return -ENOMEM;
	}
	if (t->cand)
		memset(t->cand, 0, CAND_MAX * sizeof(*t->cand));
	t->ncand = cbad_r_count(r, t->decided ? 0 : CAND_MAX);
	for (uint32_t k = 0; k < t->ncand; k++) {
		text_cand *c = &t->cand[k];

		c->hash = cbad_r_u64(r);
		cbad_r_str(r, c->path, sizeof(c->path));
		c->n = cbad_r_u32(r);
		c->bytes = cbad_r_u32(r);
		c->spaced = cbad_r_u32(r);
		c->letters = cbad_r_u32(r);
		cbad_r_bytes(r, c->shapes, sizeof(c->shapes));
	}
	n = cbad_r_count(r, CBAD_TEXT_MAX_FIELDS);
	for (uint32_t k = 0; k < n; k++) {
		text_field *f = calloc(1, sizeof(*f));

		if (!f)
			return -ENOMEM;
		t->f[t->nfields++] = f; /* counted at once so that free releases it */

		f->hash = cbad_r_u64(r);
		cbad_r_str(r, f->path, sizeof(f->path));
		f->texts = cbad_r_u32(r);
		f->leftout = cbad_r_f64(r);
		f->mean = cbad_r_f64(r);
		f->observed = cbad_r_u32(r);
		nq = cbad_r_count(r, QUARANTINE_N);
		for (uint32_t q = 0; q < nq && !r->failed; q++) {
			f->q_due[q] = cbad_r_u32(r);
			f->q_len[q] = (uint16_t)cbad_r_count(r, QUARANTINE_BYTES);
			f->q_bytes[q] = malloc(f->q_len[q] ? f->q_len[q] : 1);
			if (!f->q_bytes[q])
				return -ENOMEM;
			f->qn++;
			cbad_r_bytes(r, f->q_bytes[q], f->q_len[q]);
		}
		if (cbad_calib_new(CALIB_HISTORY, CALIB_MIN_SCALE, &f->cal) ||
		    cbad_calib_new(REP_HISTORY, REP_MIN_SCALE, &f->rcal))
			return -ENOMEM;
		if (model_load(&f->m, r) || cbad_calib_load(f->cal, r) || cbad_calib_load(f->rcal, r))
			return -EINVAL;
		if (!(f->leftout >= 0 && f->leftout <= 1))
			return -EINVAL;
	}
	return r->failed ? -EINVAL : 0;
}
