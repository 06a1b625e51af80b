/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_numeric: the values, entity and rate channels of the detector behind one interface (internal to cbad). */
#include "services/detector/cbad/cbad_numeric.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/detector/cbad/cbad_entity.h"
#include "services/detector/cbad/cbad_json.h"
#include "services/detector/cbad/cbad_rate.h"
#include "services/detector/cbad/cbad_values.h"

/*
 * Per event: the JSON fields are scanned once (cbad_json). Numeric fields feed the stream's
 * value models (spike, level shift, flatline, long-run level, daily shape); entity fields
 * route the event to that entity's own models, long-run levels, hour profile and rate
 * (cbad_entity; its level steps and hours are calibrated on their own, beside the entity
 * kind); the event's template and the values of its low-cardinality fields are the kinds
 * whose bursts and drops cbad_rate tests.
 *
 * Every test gives a conformal p-value on its own history. Within a channel kind (value,
 * entity, rate) the event's two smallest p-values are combined (the sum of their -log10) and
 * that statistic is itself calibrated (its rank among the kind's last ~4096 events, with a
 * fitted tail beyond, cbad_values_lcalib), so the p-value of a kind is honest however many
 * fields and entities it looked at: on normal data P(p < a) <= a for the kind as a whole.
 *
 * Identifier fields (many recurring values, not entities) get bursts of their values in a
 * table of their own; entity and identifier fields ("who" fields) are paired to count how
 * often a value comes with partners it was not seen with lately (a user with a new card on
 * every payment, one address logging in as many actors). Rate windows count every event,
 * learned or not; models and calibrators learn only learned events.
 *
 * Entity fields, when not configured, are chosen after the first HEURISTIC_EVENTS events:
 * string fields present in >= 80 % of events, identifiers rather than text (at most 10 % of the
 * values contain a space), with at least ENTITY_MIN_DISTINCT distinct values
 * but at most half as many as events (values recur), no value in more than half the events,
 * and at least 3 values, and an eighth of its values, that recur across a quarter of the
 * stretch or more (long-lived, unlike sessions or request ids); ranked by their number of
 * distinct values (who acts usually has more values than what is done), at most
 * HEURISTIC_MAX_ENTITY of them. Fields of any type with 2..CAT_MAX_DISTINCT distinct values in
 * >= 20 % of events become rate kinds ("status=500").
 *
 * One context field (a route: a string field whose values take a few shapes once the tokens
 * holding digits are masked, see heur_decide) gets value models per shape, in a values-only
 * entity table one past the entity fields; its tests belong to the value kind. See
 * docs/algorithm.md, section 5, "Contexts".
 */

#define MAX_SCAN 64              /* JSON fields looked at per event */
#define HEURISTIC_EVENTS 512     /* events watched before entity and kind fields are chosen */
#define HEURISTIC_MAX_FIELDS 16  /* fields watched */
#define HEURISTIC_MAX_ENTITY 2
#define CAT_MAX_DISTINCT 12
#define ENTITY_MIN_DISTINCT 5
#define MAX_CAT 8
#define MAX_ID 4                 /* identifier fields whose values' bursts are tested */
#define MAX_WHO 4                /* entity and id fields whose partners are counted */
#define WHO_SETS 32              /* partner table per who field: 32 sets of 4 */
#define WHO_WAYS 4
#define WHO_LAST 4               /* partners remembered per value and other who field */
#define WHO_OCC 8                /* occurrences the count of new partners looks back on */
#define WHO_Q_MEMORY 4096.0      /* occurrences the pooled new-partner rate is averaged over */
#define WHO_MIN_OCC 64.0         /* occurrences before a pair is tested */
#define ID_MAX_UNIQUE 0.95       /* an id field's values must recur: distinct <= 95 % of uses */
#define DETAIL_P 0.01            /* detail text only for signals this strong */
#define STATE_TAG 0x4d4d554eu    /* "NUMM": + value fields' CUSUMs (NUMH: entities' daily smallest hour p, 32-event shares, daily shapes, lasting shares) */
#define CUS_K 0.25               /* prediction sigmas per value a CUSUM forgets (the drift it ignores) */
#define CUS_CLIP 4.0             /* a value adds at most this many sigmas to a CUSUM (a spike is the spike test's) */
#define CUS_MEMORY 256.0         /* values the share of positive CUSUMs is averaged over */
#define PF_MAX 6                 /* low-cardinality fields whose value pairs are watched */
#define PF_MAX_DISTINCT 32       /* ... with 2..this many distinct values in the first events */
#define NPF_PAIRS (PF_MAX * (PF_MAX - 1) / 2)
#define PSET_SLOTS 2048          /* seen-pair sketch: 32-bit fingerprints, open addressing */
#define PSET_FULL 1536           /* at 3/4 full it is cleared and every pair warms up again */
#define PQ_MEMORY 16384.0        /* occurrences the share of new pairs is averaged over */
#define PQ_WARMUP 512            /* occurrences of a field pair that fill the sketch first */
#define PQ_MIN_OCC 64.0          /* occurrences counted before a field pair is tested */
#define PQ_GUARD 0.002           /* a new pair this rare is counted but not added to the sketch */
#define CTX_MAX_SHAPES 32        /* context field: at most this many value shapes */
#define CTX_MAX_CONTEXTS 32      /* context models kept (least recently seen evicted): as many
				  * shapes as the heuristic allows */
#define HOUR_ALPHA 1e-3          /* the detector's default alpha (Tarone's rule over hour tests) */
#define CTX_WEAK_P 0.1           /* context tests weaker than this are counted, not carried */
#define MAX_CAND 96
_Static_assert(MAX_CAND <= 256, "cbad_numeric_observe orders the tests by a byte");
#define RQ_GAP 32                /* events: a strange who-burst this close to the last one is quarantined */
#define RQ_MEMORY 4096.0         /* events the quarantined share is averaged over */
#define RQ_BUDGET 0.02           /* at most this share of events quarantined (about 80 of 4096) */
#define HOUR_SPAN_MS (2 * 86400000LL) /* history needed before hours of day are judged */

enum { K_VALUE = 0, K_ENTITY, K_RATE, NK };

typedef struct vfield {
	char name[CBAD_FIELD_NAME_MAX];
	uint64_t hash;
	cbad_values_model m;
	cbad_values_calib spike, shift;
	cbad_values_calib cus; /* the CUSUM's positive statistics (W_CUSUM) */
	double sup, sdn;       /* one-sided CUSUMs of the standardised prediction error */
	double cpos;           /* EW share of judged values with a positive CUSUM */
	cbad_values_runs runs;
	cbad_values_level level;
	cbad_values_season season;
} vfield;

typedef struct hval {
	uint32_t h; /* low bits of the value's hash: enough to count distinct values */
	uint16_t first, last, count;
} hval;

typedef struct hcand {
	char name[CBAD_FIELD_NAME_MAX];
	uint64_t hash;
	uint32_t present, nstrings, nspaced, nvals;
	uint32_t nmeasure; /* numbers written as measurements: a fraction, an exponent or 4+ digits */
	hval vals[HEURISTIC_EVENTS];
	uint32_t nshapes; /* distinct shapes of its string values; CTX_MAX_SHAPES + 1 = too many */
	uint32_t shapes[CTX_MAX_SHAPES];
} hcand;

/* A test made on this event, before it becomes a cbad_chan_signal. */
typedef struct cand {
	double p, stat, value, lo, med, hi;
	double observed, expected, window;
	double pmin;   /* W_EHOUR: the smallest p its test could give (cbad_entity_signal.p_min) */
	uint8_t kind;  /* K_* */
	uint8_t what;  /* see cand_name() */
	int16_t field; /* value field index, or -1 */
	int16_t ent;   /* entity field index, or -1 */
	int16_t rate;  /* label slot (S_*) of a burst or drop */
	int8_t wa, wb; /* who fields of a distinct-partner test */
} cand;

enum { W_SPIKE, W_SHIFT, W_FLAT, W_EHOUR, W_ERATE, W_BURST, W_DROP, W_IDBURST, W_DISTINCT, W_PAIR,
       W_LEVEL, W_ELEVEL, W_SEASON, W_CUSUM };
/* tests whose p-value is calibrated on its own and bypasses the kind's rank calibration: a new
 * pair's rate (the stream's level test, tried that way, flagged 4x more rows on NAB than
 * through the kind); an entity's or a context's level step, and an entity's hour of day, each
 * with Bonferroni over the event's tests of its sort. In the entity kind the level step
 * competed with the flatline runs, whose records fill the kind's tail (a host's cpu and p99
 * stepping 6-13 sigma got kind p 3e-4..2e-3), and the hour's p swung with whichever other
 * entity test the event had (a night session's events: kind p 3e-4..1e-2) */
#define SELF_CALIBRATED(w) ((w) == W_PAIR || (w) == W_ELEVEL || (w) == W_EHOUR || (w) == W_CUSUM)
/* tests that judge a value against the field's long history (its long-run level, its daily
 * shape), not against its last few values: one of them and one short-run test of the same
 * field (spike, step, flatline) ask different questions, so both may count in the kind */
#define LONG_RUN(w) ((w) == W_LEVEL || (w) == W_SEASON)

/* A pair of low-cardinality fields: how often lately its value pair was one never seen. */
typedef struct pf_pair {
	double news, nq; /* EW counts (over PQ_MEMORY occurrences) of new pairs and of all */
	uint32_t warm;   /* occurrences since the sketch was (re)started, up to PQ_WARMUP */
} pf_pair;

/* One value of a who field and the values of the other who fields it came with. */
typedef struct who_slot {
	uint64_t key; /* 0 = empty */
	uint64_t seen;
	uint16_t last[MAX_WHO][WHO_LAST]; /* low hash bits of its latest partners, per field */
	uint8_t newbits[MAX_WHO];         /* over its last occurrences: was the partner new? */
	uint8_t nocc;                     /* occurrences with a partner check (capped) */
} who_slot;

/* An ordered pair of who fields (a, b): how often a value of a comes with a b it was not seen
 * with among its last WHO_LAST, pooled over a's values. */
typedef struct who_pair {
	double q, nq; /* EW share of new partners, and the occurrences it is based on */
	cbad_values_calib cal;
} who_pair;
#define PAIR(n, a, b) (&(n)->pair[(size_t)(a) * (n)->nwho + (b)])
/* label slots of the rate tests */
enum { S_TBURST, S_TDROP, S_CBURST, S_CDROP, S_IDBURST, S_WHO, S_PAIR, NSLOT };

struct cbad_numeric {
	cbad_settings s;
	uint64_t t;
	int64_t first_ts, last_ts; /* event times seen (0 = none yet) */
	size_t last_tests;
	uint32_t nvalues, vcap;
	bool values_configured;
	/* value fields, allocated as they are first seen (3,640 B each, up to
	 * CBAD_MAX_VALUE_FIELDS): a stream with 4 numeric fields does not carry 16 */
	vfield *v;

	bool decided;
	uint32_t nent, nent_values;
	char ent_name[CBAD_MAX_ENTITY_FIELDS][CBAD_FIELD_NAME_MAX];
	uint64_t ent_hash[CBAD_MAX_ENTITY_FIELDS];
	cbad_entity *ent[CBAD_MAX_ENTITY_FIELDS];
	char ent_label[CBAD_MAX_ENTITY_FIELDS][CBAD_ENTITY_LABEL_MAX];
	/* the context field (0 or 1 of it): its value models per shape of the field's value live
	 * in ent[nent] and are named ent_name[nent] (one past the entity fields) */
	uint32_t nctx;

	uint32_t ncat;
	char cat_name[MAX_CAT][CBAD_FIELD_NAME_MAX];
	uint64_t cat_hash[MAX_CAT];
	/* templates and categorical values are kinds in two tables, each with its own burst and
	 * drop calibration: near-unique templates burst often, which must not set the bar for
	 * "result=failure" */
	cbad_rate *rate, *crate;
	char rate_label[NSLOT][CBAD_RATE_LABEL_MAX]; /* per rate test of this event (cand.rate) */

	/* identifier fields (many distinct values that recur: users, source addresses, merchants)
	 * that are not entity fields: the share of each value in the recent events is tested for
	 * bursts like a kind, in a table of their own so they do not evict the kinds */
	uint32_t nid;
	char id_name[MAX_ID][CBAD_FIELD_NAME_MAX];
	uint64_t id_hash[MAX_ID];
	cbad_rate *idrate;

	/* distinct partners: "user_id u535241 came with 7 card_bin values it had not come with
	 * in its last 8 events"; who fields are the entity fields, then the id fields */
	uint32_t nwho;
	const char *who_name[MAX_WHO];
	uint64_t who_hash[MAX_WHO];
	who_slot *who_tab; /* nwho x WHO_SETS x WHO_WAYS, made when decided */
	who_pair *pair;    /* nwho x nwho (PAIR), made when decided: 792 bytes each */

	/* never-seen pairs of values of two low-cardinality fields ("currency MXN never came with
	 * country GB"): a bounded sketch of the pairs seen, and per field pair the recent share of
	 * new ones, which is the p-value of a new pair */
	uint32_t npf;
	char pf_name[PF_MAX][CBAD_FIELD_NAME_MAX];
	uint64_t pf_hash[PF_MAX];
	pf_pair pfp[NPF_PAIRS];
	uint32_t pset_used;
	uint32_t *pset; /* PSET_SLOTS fingerprints (0 = empty), made when decided and npf >= 2 */

	cbad_values_lcalib kind_cal[NK];
	/* quarantine of one actor's burst from the rate kind's calibration: the stream index of
	 * the last strange who-burst (+1, 0 = none), and the EW share of quarantined events */
	uint64_t rq_last;
	double rq_share;

	uint32_t heur_n, ncands;
	hcand *cands; /* HEURISTIC_MAX_FIELDS, until decided */
};

/* Concatenates up to four strings into out (cap bytes), truncating. */
static void join4(char *out, size_t cap, const char *a, const char *b, const char *c,
		  const char *d)
{
	const char *parts[4] = {a, b, c, d};
	size_t o = 0;

	/* strnlen and memcpy, not a byte loop: this builds every signal's name (hot path) */
	for (int i = 0; i < 4; i++) {
		size_t k;

		if (!parts[i] || !parts[i][0] || o + 1 >= cap)
			continue;
		k = strnlen(parts[i], cap - 1 - o);
		memcpy(out + o, parts[i], k);
		o += k;
	}
	out[o] = '\0';
}

static int fail(char *errbuf, size_t errlen, int rc, const char *msg)
{
	if (errbuf && errlen)
		join4(errbuf, errlen, msg, NULL, NULL, NULL);
	return rc;
}

static uint64_t name_hash(const char *s)
{
	return cbad_json_hash(CBAD_JSON_HASH_INIT, s, strlen(s));
}

/* Room for want value fields (zeroed). Returns 0 or -ENOMEM, the fields untouched. Pointers
 * into n->v do not survive it. */
static int vfields_reserve(cbad_numeric *n, uint32_t want)
{
	uint32_t cap = n->vcap ? n->vcap : 4;
	vfield *nv;

	if (want <= n->vcap)
		return 0;
	while (cap < want)
		cap *= 2;
	if (cap > CBAD_MAX_VALUE_FIELDS)
		cap = CBAD_MAX_VALUE_FIELDS;
	nv = realloc(n->v, (size_t)cap * sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	memset(nv + n->vcap, 0, (size_t)(cap - n->vcap) * sizeof(*nv));
	n->v = nv;
	n->vcap = cap;
	return 0;
}

/* A new value field named name (the caller checked there is room); NULL without memory. */
static vfield *vfield_add(cbad_numeric *n, const char *name, uint64_t hash)
{
	vfield *f;

	if (vfields_reserve(n, n->nvalues + 1) < 0)
		return NULL;
	f = &n->v[n->nvalues++];
	join4(f->name, sizeof(f->name), name, NULL, NULL, NULL);
	f->hash = hash;
	cbad_values_model_init(&f->m);
	cbad_values_calib_init(&f->spike);
	cbad_values_calib_init(&f->shift);
	cbad_values_calib_init(&f->cus);
	f->sup = f->sdn = 0;
	f->cpos = 1;
	cbad_values_runs_init(&f->runs);
	cbad_values_level_init(&f->level);
	cbad_values_season_init(&f->season);
	return f;
}

int cbad_numeric_new(const cbad_settings *s, cbad_numeric **ret, char *errbuf, size_t errlen)
{
	cbad_numeric *n;
	int rc;

	if (!s || !ret)
		return fail(errbuf, errlen, -EINVAL, "numeric: no settings");
	if (s->nvalue_fields > CBAD_MAX_VALUE_FIELDS || s->nentity_fields > CBAD_MAX_ENTITY_FIELDS ||
	    s->max_entities == 0)
		return fail(errbuf, errlen, -EINVAL, "numeric: value or entity fields out of range");
	n = calloc(1, sizeof(*n));
	if (!n)
		return fail(errbuf, errlen, -ENOMEM, "numeric: out of memory");
	n->s = *s;
	for (size_t i = 0; i < s->nvalue_fields; i++) {
		char nm[CBAD_FIELD_NAME_MAX];

		join4(nm, sizeof(nm), s->value_fields[i], NULL, NULL, NULL);
		if (!vfield_add(n, nm, name_hash(nm))) {
			rc = -ENOMEM;
			goto out_free;
		}
	}
	n->values_configured = s->nvalue_fields > 0;
	for (size_t i = 0; i < s->nentity_fields; i++) {
		join4(n->ent_name[i], CBAD_FIELD_NAME_MAX, s->entity_fields[i], NULL, NULL, NULL);
		n->ent_hash[i] = name_hash(n->ent_name[i]);
	}
	n->nent = (uint32_t)s->nentity_fields;
	for (int k = 0; k < NK; k++)
		cbad_values_lcalib_init(&n->kind_cal[k]);
	/* template labels are rebuilt from the key; the categorical and id tables are made
	 * with their fields (make_rates) */
	rc = cbad_rate_new_unlabeled(&n->rate);
	if (rc < 0)
		goto out_free;
	n->cands = calloc(HEURISTIC_MAX_FIELDS, sizeof(*n->cands));
	if (!n->cands) {
		rc = -ENOMEM;
		goto out_rate;
	}
	*ret = n;
	return 0;

out_rate:
	cbad_rate_free(n->rate);
out_free:
	free(n->v);
	free(n);
	return fail(errbuf, errlen, rc, "numeric: out of memory");
}

void cbad_numeric_free(cbad_numeric *n)
{
	if (!n)
		return;
	for (uint32_t i = 0; i < CBAD_MAX_ENTITY_FIELDS; i++)
		cbad_entity_free(n->ent[i]);
	cbad_rate_free(n->rate);
	cbad_rate_free(n->crate);
	cbad_rate_free(n->idrate);
	free(n->v);
	free(n->who_tab);
	free(n->pair);
	free(n->pset);
	free(n->cands);
	free(n);
}

size_t cbad_numeric_memory(const cbad_numeric *n)
{
	size_t m;

	if (!n)
		return 0;
	m = sizeof(*n) + (size_t)n->vcap * sizeof(vfield) + cbad_rate_memory(n->rate) + cbad_rate_memory(n->crate) +
	    cbad_rate_memory(n->idrate);
	if (n->who_tab)
		m += (size_t)n->nwho * WHO_SETS * WHO_WAYS * sizeof(who_slot);
	if (n->pair)
		m += (size_t)n->nwho * n->nwho * sizeof(who_pair);
	if (n->pset)
		m += PSET_SLOTS * sizeof(uint32_t);
	if (n->cands)
		m += HEURISTIC_MAX_FIELDS * sizeof(hcand);
	for (uint32_t i = 0; i < CBAD_MAX_ENTITY_FIELDS; i++)
		m += cbad_entity_memory(n->ent[i]);
	return m;
}

size_t cbad_numeric_entity_fields(const cbad_numeric *n, char out[][CBAD_FIELD_NAME_MAX],
				  size_t max)
{
	size_t k = 0;

	if (!n->decided)
		return 0;
	for (uint32_t i = 0; i < n->nent && k < max; i++)
		join4(out[k++], CBAD_FIELD_NAME_MAX, n->ent_name[i], NULL, NULL, NULL);
	return k;
}

size_t cbad_numeric_last_tests(const cbad_numeric *n)
{
	return n->last_tests;
}

/* ---- the heuristic ---- */

/* The shape of a string value: a token (a run of letters and digits) that holds a digit
 * becomes '#', and from '?' on (a query string) nothing counts: "/api/v1/orders/4940649" and
 * "/api/v1/orders/17?x=1" are both "/api/v#/orders/#". Returns its hash; writes the shape
 * (truncated) into label when label is not NULL. */
static uint64_t shape_hash(const char *s, size_t len, char *label, size_t cap)
{
	uint64_t h = CBAD_JSON_HASH_INIT;
	size_t o = 0;

	for (size_t i = 0; i < len && s[i] != '?';) {
		unsigned char c = (unsigned char)s[i];
		bool alnum = (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
		size_t j = i;
		bool digit = false;

		if (!alnum) {
			h = (h ^ c) * 1099511628211ULL;
			if (label && o + 1 < cap)
				label[o++] = (char)c;
			i++;
			continue;
		}
		for (; j < len; j++) {
			unsigned char d = (unsigned char)s[j];

			if (d >= '0' && d <= '9')
				digit = true;
			else if (!((d | 0x20) >= 'a' && (d | 0x20) <= 'z'))
				break;
		}
		if (digit) {
			h = (h ^ '#') * 1099511628211ULL;
			if (label && o + 1 < cap)
				label[o++] = '#';
		} else {
			for (size_t k = i; k < j; k++) {
				h = (h ^ (unsigned char)s[k]) * 1099511628211ULL;
				if (label && o + 1 < cap)
					label[o++] = s[k];
			}
		}
		i = j;
	}
	if (label && cap)
		label[o] = '\0';
	return h;
}

/* Whether a number literal is written as a measurement: with a fraction or an exponent, or
 * with 4 or more digits (the canonicaliser's rule, docs/algorithm.md section 1). Integers of up
 * to 3 digits are usually codes (a status 503); a field that carries measurements has levels,
 * not categories, even when it takes few distinct values (a CPU share sampled as 0.066 / 0.134,
 * a byte count that is mostly 0). */
static bool is_measurement(const char *s, size_t len)
{
	size_t digits = 0;

	for (size_t i = 0; i < len; i++) {
		if (s[i] == '.' || s[i] == 'e' || s[i] == 'E')
			return true;
		digits += s[i] >= '0' && s[i] <= '9';
	}
	return digits >= 4;
}

static void heur_watch(cbad_numeric *n, const cbad_json_field *f, size_t nf)
{
	uint32_t t = n->heur_n;

	for (size_t i = 0; i < nf; i++) {
		hcand *c = NULL;
		uint32_t h;

		for (uint32_t j = 0; j < n->ncands; j++)
			if (n->cands[j].hash == f[i].path_hash) {
				c = &n->cands[j];
				break;
			}
		if (!c) {
			if (n->ncands >= HEURISTIC_MAX_FIELDS)
				continue;
			c = &n->cands[n->ncands++];
			join4(c->name, sizeof(c->name), f[i].path, NULL, NULL, NULL);
			c->hash = f[i].path_hash;
		}
		if (c->present >= HEURISTIC_EVENTS)
			continue;
		c->present++;
		c->nstrings += f[i].type == CBAD_JSON_STRING;
		c->nspaced += f[i].type == CBAD_JSON_STRING && memchr(f[i].str, ' ', f[i].str_len);
		c->nmeasure += f[i].type == CBAD_JSON_NUMBER && is_measurement(f[i].str, f[i].str_len);
		h = (uint32_t)cbad_json_hash(CBAD_JSON_HASH_INIT, f[i].str, f[i].str_len);
		{
			uint32_t j;

			for (j = 0; j < c->nvals; j++)
				if (c->vals[j].h == h)
					break;
			if (j == c->nvals) {
				if (c->nvals >= HEURISTIC_EVENTS)
					continue;
				c->vals[c->nvals++] =
					(hval){.h = h, .first = (uint16_t)t, .last = (uint16_t)t, .count = 0};
			}
			c->vals[j].last = (uint16_t)t;
			c->vals[j].count++;
		}
		if (f[i].type == CBAD_JSON_STRING && c->nshapes <= CTX_MAX_SHAPES) {
			uint32_t sh = (uint32_t)shape_hash(f[i].str, f[i].str_len, NULL, 0);
			uint32_t j;

			for (j = 0; j < c->nshapes; j++)
				if (c->shapes[j] == sh)
					break;
			if (j == c->nshapes) {
				if (c->nshapes < CTX_MAX_SHAPES)
					c->shapes[j] = sh;
				c->nshapes++;
			}
		}
	}
}

/* The who fields (entity fields, then id fields) and their partner tables. */
/* The categorical table when there are categorical fields, the id table when there are id
 * fields: 23 and 11 KiB that a stream without such fields never fills. Nothing observes them
 * before the fields are decided, so a table made now is the table that would have been made
 * at the start. Id drops are not reported: only the categorical table keeps label text.
 * Returns 0 or -ENOMEM (what was made stays; the caller frees it). */
static int make_rates(cbad_numeric *n)
{
	if (n->ncat && !n->crate && cbad_rate_new(&n->crate) < 0)
		return -ENOMEM;
	if (n->nid && !n->idrate && cbad_rate_new_unlabeled(&n->idrate) < 0)
		return -ENOMEM;
	return 0;
}

static int make_who(cbad_numeric *n)
{
	n->nwho = 0;
	for (uint32_t i = 0; i < n->nent && n->nwho < MAX_WHO; i++) {
		n->who_name[n->nwho] = n->ent_name[i];
		n->who_hash[n->nwho++] = n->ent_hash[i];
	}
	for (uint32_t i = 0; i < n->nid && n->nwho < MAX_WHO; i++) {
		n->who_name[n->nwho] = n->id_name[i];
		n->who_hash[n->nwho++] = n->id_hash[i];
	}
	free(n->who_tab);
	n->who_tab = NULL;
	free(n->pair);
	n->pair = NULL;
	if (n->nwho < 2)
		return 0;
	/* calloc: q = nq = 0 and an empty calibrator are all zero bytes */
	n->pair = calloc((size_t)n->nwho * n->nwho, sizeof(who_pair));
	n->who_tab = calloc((size_t)n->nwho * WHO_SETS * WHO_WAYS, sizeof(who_slot));
	return n->who_tab && n->pair ? 0 : -ENOMEM;
}

static int make_entities(cbad_numeric *n)
{
	n->nent_values = n->nvalues < CBAD_ENTITY_MAX_VALUES ? n->nvalues : CBAD_ENTITY_MAX_VALUES;
	if (n->nent_values == 0)
		n->nctx = 0;
	for (uint32_t i = 0; i < n->nent + n->nctx; i++) {
		uint32_t cap = i < n->nent ? (uint32_t)n->s.max_entities : CTX_MAX_CONTEXTS;
		int rc = cbad_entity_new(cap, n->nent_values, &n->ent[i]);

		if (rc == 0 && i >= n->nent)
			cbad_entity_set_values_only(n->ent[i]);

		if (rc < 0)
			return rc;
	}
	return 0;
}

/* True when hash names one of the entity fields chosen so far. */
static bool is_entity_field(const cbad_numeric *n, uint64_t hash)
{
	for (uint32_t e = 0; e < n->nent; e++)
		if (n->ent_hash[e] == hash)
			return true;
	return false;
}

static void heur_decide(cbad_numeric *n)
{
	uint32_t N = n->heur_n;
	uint32_t score[HEURISTIC_MAX_FIELDS] = {0};
	bool taken[HEURISTIC_MAX_FIELDS] = {false};

	for (uint32_t i = 0; i < n->ncands; i++) {
		const hcand *c = &n->cands[i];
		uint32_t top = 0, longlived = 0;

		for (uint32_t j = 0; j < c->nvals; j++) {
			if (c->vals[j].count > top)
				top = c->vals[j].count;
			if (c->vals[j].count >= 2 &&
			    (uint32_t)(c->vals[j].last - c->vals[j].first) >= N / 4)
				longlived++;
		}
		if (n->s.nentity_fields == 0 && c->nstrings == c->present && c->present * 5 >= N * 4 &&
		    c->nvals >= ENTITY_MIN_DISTINCT && c->nvals * 2 <= c->present && top * 2 <= c->present &&
		    c->nspaced * 10 <= c->present && longlived >= 3 && longlived * 8 >= c->nvals)
			score[i] = c->nvals;
	}
	if (n->s.nentity_fields == 0) {
		while (n->nent < HEURISTIC_MAX_ENTITY) {
			int best = -1;

			for (uint32_t i = 0; i < n->ncands; i++)
				if (score[i] > 0 && !taken[i] && (best < 0 || score[i] > score[best]))
					best = (int)i;
			if (best < 0)
				break;
			taken[best] = true;
			join4(n->ent_name[n->nent], CBAD_FIELD_NAME_MAX, n->cands[best].name, NULL, NULL, NULL);
			n->ent_hash[n->nent++] = n->cands[best].hash;
		}
	}
	/* the context field: a string field, not an entity, present in >= 80 % of events, not
	 * text, whose values take 2..CTX_MAX_SHAPES shapes once ids are masked, and at least twice
	 * as many raw values (ids inside a few fixed forms: a route, a resource path); the most
	 * shapes first (the finest split), then the most present. Measured: plain categorical
	 * contexts (a currency, a model name) cost more than they found */
	if (n->nent < CBAD_MAX_ENTITY_FIELDS) {
		int best = -1;

		for (uint32_t i = 0; i < n->ncands; i++) {
			const hcand *c = &n->cands[i];
			bool is_ent = is_entity_field(n, c->hash);
			if (is_ent || c->nstrings != c->present || c->present * 5 < N * 4 ||
			    c->nspaced * 10 > c->present || c->nshapes < 2 || c->nshapes > CTX_MAX_SHAPES ||
			    c->nvals < 2 * c->nshapes)
				continue;
			if (best < 0 || c->nshapes > n->cands[best].nshapes ||
			    (c->nshapes == n->cands[best].nshapes && c->present > n->cands[best].present))
				best = (int)i;
		}
		if (best >= 0) {
			join4(n->ent_name[n->nent], CBAD_FIELD_NAME_MAX, n->cands[best].name, NULL, NULL,
			      NULL);
			n->ent_hash[n->nent] = n->cands[best].hash;
			n->nctx = 1;
		}
	}
	/* kinds: most present first */
	while (n->ncat < MAX_CAT) {
		int best = -1;

		for (uint32_t i = 0; i < n->ncands; i++) {
			const hcand *c = &n->cands[i];
			bool is_ent = is_entity_field(n, c->hash);
			if (taken[i] || is_ent || c->nvals < 2 || c->nvals > CAT_MAX_DISTINCT ||
			    c->present * 5 < N || c->nmeasure > 0)
				continue;
			if (best < 0 || c->present > n->cands[best].present)
				best = (int)i;
		}
		if (best < 0)
			break;
		taken[best] = true;
		join4(n->cat_name[n->ncat], CBAD_FIELD_NAME_MAX, n->cands[best].name, NULL, NULL, NULL);
		n->cat_hash[n->ncat++] = n->cands[best].hash;
	}
	/* identifiers: strings in >= half the events, not text, too many values to be kinds, and
	 * values that recur (a per-event id such as a transaction id never bursts); most present
	 * first */
	while (n->nid < MAX_ID) {
		int best = -1;

		for (uint32_t i = 0; i < n->ncands; i++) {
			const hcand *c = &n->cands[i];
			bool is_ent = is_entity_field(n, c->hash);
			if (taken[i] || is_ent || c->nstrings * 2 < N || c->nvals <= CAT_MAX_DISTINCT ||
			    c->nspaced * 10 > c->present || (double)c->nvals > ID_MAX_UNIQUE * c->present)
				continue;
			if (best < 0 || c->present > n->cands[best].present)
				best = (int)i;
		}
		if (best < 0)
			break;
		taken[best] = true;
		join4(n->id_name[n->nid], CBAD_FIELD_NAME_MAX, n->cands[best].name, NULL, NULL, NULL);
		n->id_hash[n->nid++] = n->cands[best].hash;
	}
	/* pair fields: strings in >= 80 % of events, not text, 2..PF_MAX_DISTINCT distinct values
	 * that recur (each seen 4 times on average): a country, a currency, a channel, a status.
	 * Entity and kind fields qualify too. Most present first, then in order of appearance */
	for (uint32_t i = 0; i < n->ncands && n->npf < PF_MAX; i++) {
		int best = -1;

		for (uint32_t j = 0; j < n->ncands; j++) {
			const hcand *c = &n->cands[j];
			bool had = false;

			for (uint32_t k = 0; k < n->npf; k++)
				had |= n->pf_hash[k] == c->hash;
			if (had || c->nstrings != c->present || c->present * 5 < N * 4 || c->nvals < 2 ||
			    c->nvals > PF_MAX_DISTINCT || c->nvals * 4 > c->present ||
			    c->nspaced * 10 > c->present)
				continue;
			if (best < 0 || c->present > n->cands[best].present)
				best = (int)j;
		}
		if (best < 0)
			break;
		join4(n->pf_name[n->npf], CBAD_FIELD_NAME_MAX, n->cands[best].name, NULL, NULL, NULL);
		n->pf_hash[n->npf++] = n->cands[best].hash;
	}
}

/* The seen-pair sketch, when there are two pair fields. */
static int make_pairs(cbad_numeric *n)
{
	free(n->pset);
	n->pset = NULL;
	n->pset_used = 0;
	memset(n->pfp, 0, sizeof(n->pfp));
	if (n->npf < 2)
		return 0;
	n->pset = calloc(PSET_SLOTS, sizeof(uint32_t));
	return n->pset ? 0 : -ENOMEM;
}

/* ---- one event ---- */

static vfield *value_field(cbad_numeric *n, const cbad_json_field *f)
{
	for (uint32_t i = 0; i < n->nvalues; i++)
		if (n->v[i].hash == f->path_hash && !strcmp(n->v[i].name, f->path))
			return &n->v[i];
	if (n->values_configured || n->nvalues >= CBAD_MAX_VALUE_FIELDS)
		return NULL;
	return vfield_add(n, f->path, f->path_hash);
}

static double stat_of_p(double p)
{
	return p >= 1.0 ? 0.0 : -log10(p > 1e-300 ? p : 1e-300);
}

static void copy_trunc(char *dst, size_t cap, const char *src, size_t n)
{
	if (n > cap - 1)
		n = cap - 1;
	if (n)
		memcpy(dst, src, n);
	dst[n] = '\0';
}

static void cand_name(const cbad_numeric *n, const cand *c, char *out, size_t cap)
{
	const char *vf = c->field >= 0 ? n->v[c->field].name : "";
	const char *ef = c->ent >= 0 ? n->ent_name[c->ent] : "";

	const char *sep = c->ent >= 0 ? ":" : "";

	switch (c->what) {
	case W_SPIKE:
		join4(out, cap, c->ent >= 0 && (uint32_t)c->ent < n->nent ? "entity:" : "value:", ef, sep,
		      vf);
		break;
	case W_SHIFT:
		join4(out, cap, "shift:", ef, sep, vf);
		break;
	case W_CUSUM:
		join4(out, cap, "cusum:", ef, sep, vf);
		break;
	case W_FLAT:
		join4(out, cap, "flatline:", ef, sep, vf);
		break;
	case W_LEVEL:
	case W_ELEVEL:
		join4(out, cap, "level:", ef, sep, vf);
		break;
	case W_SEASON:
		join4(out, cap, "season:", vf, NULL, NULL);
		break;
	case W_EHOUR:
		join4(out, cap, "hour:", ef, NULL, NULL);
		break;
	case W_ERATE:
		join4(out, cap, "rate:", ef, NULL, NULL);
		break;
	case W_BURST:
	case W_IDBURST:
		join4(out, cap, "rate:", n->rate_label[c->rate], NULL, NULL);
		break;
	case W_DISTINCT:
		join4(out, cap, "distinct:", n->who_name[c->wa], ":", n->who_name[c->wb]);
		break;
	case W_PAIR:
		join4(out, cap, "pair:", n->pf_name[c->wa], ":", n->pf_name[c->wb]);
		break;
	default:
		join4(out, cap, "drop:", n->rate_label[c->rate], NULL, NULL);
		break;
	}
}

static void cand_detail(const cbad_numeric *n, const cand *c, char *out, size_t cap)
{
	const char *vf = c->field >= 0 ? n->v[c->field].name : "";
	char who[CBAD_FIELD_NAME_MAX + CBAD_ENTITY_LABEL_MAX + 8] = "";
	static const char *const hours_fmt = "%s acts at %02.0f:00 UTC; its usual hours are %02.0f:00-%02.0f:00 (busiest %02.0f:00)";

	if (c->ent >= 0)
		join4(who, sizeof(who), n->ent_name[c->ent], " ", n->ent_label[c->ent], NULL);
	switch (c->what) {
	case W_SPIKE:
		snprintf(out, cap, "%s%s%s %.6g is %s the usual %.6g..%.6g (typical %.6g)", who,
			 who[0] ? ": " : "", vf, c->value, c->value > c->med ? "far above" : "far below",
			 c->lo, c->hi, c->med);
		break;
	case W_SHIFT:
		snprintf(out, cap, "%s%s%s recently averages %.6g, away from its usual level %.6g", who,
			 who[0] ? ": " : "", vf, c->value, c->med);
		break;
	case W_CUSUM:
		snprintf(out, cap, "%s%s%s kept off its prediction: %.3g sigma summed, now %.6g, usually %.6g",
			 who, who[0] ? ": " : "", vf, c->stat, c->value, c->med);
		break;
	case W_FLAT:
		snprintf(out, cap, "%s%s%s has repeated exactly %.6g for %.0f values in a row", who,
			 who[0] ? ": " : "", vf, c->value, c->observed);
		break;
	case W_LEVEL:
	case W_ELEVEL:
		snprintf(out, cap, "%s%s%s %.6g is outside its long-run range %.6g..%.6g (mean %.6g)",
			 who, who[0] ? ": " : "", vf, c->value, c->lo, c->hi, c->med);
		break;
	case W_SEASON:
		snprintf(out, cap, "%s %.6g is off its daily %.6g..%.6g (mean %.6g)", vf,
			 c->value, c->lo, c->hi, c->med);
		break;
	case W_EHOUR:
		snprintf(out, cap, hours_fmt, who, c->value, c->lo, c->hi, c->med);
		break;
	case W_ERATE:
		snprintf(out, cap, "%s sent %.0f of the last %.0f events; usually about %.1f", who,
			 c->observed, c->window, c->expected);
		break;
	case W_DISTINCT:
		snprintf(out, cap,
			 "%s %s came with a %s it had not come with lately in %.0f of its last %.0f "
			 "events; usually %.2g of them",
			 n->who_name[c->wa], n->rate_label[S_WHO], n->who_name[c->wb], c->observed,
			 c->window, c->expected);
		break;
	case W_PAIR:
		snprintf(out, cap,
			 "%s: this pair of values was never seen before; about %.3g new pairs of %s "
			 "and %s in the last %.0f events",
			 n->rate_label[S_PAIR], c->expected, n->pf_name[c->wa], n->pf_name[c->wb],
			 c->window);
		break;
	case W_BURST:
	case W_IDBURST:
		snprintf(out, cap, "%s occurred %.0f times in the last %.0f events; usually about %.1f",
			 n->rate_label[c->rate], c->observed, c->window, c->expected);
		break;
	default:
		snprintf(out, cap, "%s occurred %.0f times in the last %.0f events; usually about %.1f",
			 n->rate_label[c->rate], c->observed, c->window, c->expected);
		break;
	}
}

static void cand_signal(const cbad_numeric *n, const cand *c, cbad_chan_signal *s, bool detail)
{
	static const cbad_kind kinds[NK] = {CBAD_KIND_VALUE, CBAD_KIND_ENTITY, CBAD_KIND_RATE};

	memset(s, 0, sizeof(*s)); /* every byte: callers compare signals whole */
	s->kind = kinds[c->kind];
	cand_name(n, c, s->name, sizeof(s->name));
	s->stat = c->stat;
	s->p_value = c->p;
	s->value = c->value;
	s->base_low = c->lo;
	s->base_median = c->med;
	s->base_high = c->hi;
	if (c->field >= 0)
		join4(s->field, sizeof(s->field), n->v[c->field].name, NULL, NULL, NULL);
	if (c->ent >= 0) {
		join4(s->entity_field, sizeof(s->entity_field), n->ent_name[c->ent], NULL, NULL, NULL);
		join4(s->entity_value, sizeof(s->entity_value), n->ent_label[c->ent], NULL, NULL, NULL);
		if (c->field < 0)
			join4(s->field, sizeof(s->field), n->ent_name[c->ent], NULL, NULL, NULL);
	}
	if (c->what == W_BURST || c->what == W_DROP || c->what == W_IDBURST) {
		const char *l = n->rate_label[c->rate];
		const char *eq = strchr(l, '=');

		copy_trunc(s->field, sizeof(s->field), l, eq ? (size_t)(eq - l) : strlen(l));
	}
	if (c->what == W_DISTINCT) {
		join4(s->field, sizeof(s->field), n->who_name[c->wb], NULL, NULL, NULL);
		join4(s->entity_field, sizeof(s->entity_field), n->who_name[c->wa], NULL, NULL, NULL);
		copy_trunc(s->entity_value, sizeof(s->entity_value), n->rate_label[S_WHO],
			   strlen(n->rate_label[S_WHO]));
	}
	if (c->what == W_PAIR) {
		join4(s->field, sizeof(s->field), n->pf_name[c->wb], NULL, NULL, NULL);
		join4(s->entity_field, sizeof(s->entity_field), n->pf_name[c->wa], NULL, NULL, NULL);
	}
	if (detail && c->p < DETAIL_P)
		cand_detail(n, c, s->detail, sizeof(s->detail));
}

/* Adds a test to the list (when there is room). */
static cand *push(cand *cs, size_t *nc, uint8_t kind, uint8_t what, int field, int ent)
{
	cand *c;

	if (*nc >= MAX_CAND)
		return NULL;
	c = &cs[(*nc)++];
	memset(c, 0, sizeof(*c));
	c->kind = kind;
	c->what = what;
	c->field = (int16_t)field;
	c->ent = (int16_t)ent;
	return c;
}

static void observe_values(cbad_numeric *n, const cbad_json_field *f, size_t nf, int64_t ts_ms,
			   bool learn, cand *cs, size_t *nc, double *evals)
{
	int slot = cbad_values_season_slot(ts_ms);

	for (size_t i = 0; i < nf; i++) {
		vfield *v;
		cbad_values_judgement j;
		double x = f[i].num, zp = 1, sp = 1, lst = 0, sst = 0;
		double cst = 0, cp = 1, nup = 0, ndn = 0;
		bool judged = false;

		if (f[i].type != CBAD_JSON_NUMBER || !isfinite(x))
			continue;
		v = value_field(n, &f[i]);
		if (!v)
			continue;
		if ((uint32_t)(v - n->v) < CBAD_MAX_VALUE_FIELDS)
			evals[v - n->v] = x;
		if (cbad_values_model_ready(&v->m)) {
			cand *c;
			int fi = (int)(v - n->v);

			cbad_values_model_judge(&v->m, x, &j);
			judged = true;
			if (cbad_values_calib_ready(&v->spike) &&
			    (c = push(cs, nc, K_VALUE, W_SPIKE, fi, -1))) {
				/* the calibration corrects the prediction error's tail where it is
				 * heavier than a normal one; it never makes an error the normal law
				 * finds ordinary into a rare one (256 remembered errors that were all
				 * small rank any larger one as a record) */
				zp = c->p = fmax(cbad_values_calib_p(&v->spike, j.z),
						 erfc(j.z / M_SQRT2));
				c->stat = j.z;
				c->value = x;
				c->lo = j.pred - 2 * j.pred_sigma;
				c->med = j.pred;
				c->hi = j.pred + 2 * j.pred_sigma;
			}
			if (cbad_values_calib_ready(&v->shift) &&
			    (c = push(cs, nc, K_VALUE, W_SHIFT, fi, -1))) {
				/* the same bound: both of two independent normal errors past s on
				 * one side, 2 (erfc(s / sqrt 2) / 2)^2 */
				sp = c->p = fmax(cbad_values_calib_p(&v->shift, j.shift),
						 0.5 * pow(erfc(j.shift / M_SQRT2), 2));
				c->stat = j.shift;
				c->value = j.fast;
				c->lo = j.mean - 2 * j.sigma;
				c->med = j.mean;
				c->hi = j.mean + 2 * j.sigma;
			}
			/* a run of moderately odd values on one side adds up where no single
			 * value or pair is rare: two one-sided CUSUMs of the prediction error,
			 * calibrated on their own (SELF_CALIBRATED) against the field's positive
			 * sums, times the share of values whose sum is positive */
			{
				double zs = j.pred_sigma > 0 ? (x - j.pred) / j.pred_sigma : 0;

				zs = fmax(-CUS_CLIP, fmin(CUS_CLIP, zs));
				nup = fmax(0, v->sup + zs - CUS_K);
				ndn = fmax(0, v->sdn - zs - CUS_K);
				cst = fmax(nup, ndn);
				/* pushed only when its p can be below 1: while the floor
				 * 2 exp(-2 k S) is 1 the test cannot flag, so it is neither a
				 * candidate nor counted in the CUSUMs' Bonferroni */
				if (cbad_values_calib_ready(&v->cus) && 2 * exp(-2 * CUS_K * cst) < 1.0 &&
				    (c = push(cs, nc, K_VALUE, W_CUSUM, fi, -1))) {
					double fl = 2 * exp(-2 * CUS_K * cst);

					cp = c->p = fmax(v->cpos * cbad_values_calib_p(&v->cus, cst), fl);
					c->stat = cst;
					c->value = j.fast;
					c->lo = j.mean - 2 * j.sigma;
					c->med = j.mean;
					c->hi = j.mean + 2 * j.sigma;
				}
			}
			if (j.run >= 3 && v->m.res > 0 && cbad_values_runs_testable(&v->runs) &&
			    (c = push(cs, nc, K_VALUE, W_FLAT, fi, -1))) {
				c->p = cbad_values_runs_p(&v->runs, j.run);
				c->stat = stat_of_p(c->p);
				c->value = x;
				c->observed = j.run;
				c->lo = c->med = c->hi = 1;
			}
		}
		/* the long-run level: is x outside the range the field kept over its long history? */
		lst = cbad_values_level_stat(&v->level, x, (double)v->m.res);
		if (v->level.cal.seen >= CBAD_LEVEL_MIN_CAL) {
			cand *c = push(cs, nc, K_VALUE, W_LEVEL, (int)(v - n->v), -1);

			if (c) {
				double sd = v->level.var > 0 ? sqrt(v->level.var) : 0;

				c->p = cbad_values_level_p(&v->level, lst);
				c->stat = lst;
				c->value = x;
				c->lo = v->level.mu - 2 * sd;
				c->med = v->level.mu;
				c->hi = v->level.mu + 2 * sd;
			}
		}
		/* the daily shape: is x off the series' usual value at this time of day? */
		sst = cbad_values_season_stat(&v->season, slot, x, (double)v->m.res);
		if (cbad_values_season_ready(&v->season, slot) &&
		    v->season.resid.cal.seen >= CBAD_LEVEL_MIN_CAL) {
			cand *c = push(cs, nc, K_VALUE, W_SEASON, (int)(v - n->v), -1);

			if (c) {
				double mid = (double)v->season.mean[slot] + v->season.resid.mu;
				double sd = v->season.resid.var > 0 ? sqrt(v->season.resid.var) : 0;

				c->p = cbad_values_season_p(&v->season, sst);
				c->stat = sst;
				c->value = x;
				c->lo = mid - 2 * sd;
				c->med = mid;
				c->hi = mid + 2 * sd;
			}
		}
		if (!learn)
			continue;
		cbad_values_level_learn(&v->level, x, lst);
		cbad_values_season_learn(&v->season, slot, x, sst, (double)v->m.res);
		if (judged) {
			cbad_values_calib_learn(&v->spike, j.z, zp);
			cbad_values_calib_learn(&v->shift, j.shift, sp);
			if (cst > 0)
				cbad_values_calib_learn(&v->cus, cst, cp);
			v->cpos += ((cst > 0 ? 1.0 : 0.0) - v->cpos) / CUS_MEMORY;
			/* restart when the calibrator refuses the sum as an anomaly
			 * (CBAD_CALIB_SKIP): its decay afterwards is not the norm either, and
			 * measured without the restart it filled the calibrator (NAB 2.6) */
			if (cp < CBAD_CALIB_SKIP) {
				nup = ndn = 0;
			}
			v->sup = nup;
			v->sdn = ndn;
		}
		if (v->m.n > 0) {
			uint32_t prev = v->m.run;
			uint32_t run = x == v->m.last ? prev + 1 : 1;

			cbad_values_runs_learn(&v->runs, prev, run);
		}
		cbad_values_model_learn(&v->m, x);
	}
}

static const cbad_json_field *find_field(const cbad_json_field *f, size_t nf, uint64_t hash)
{
	for (size_t i = 0; i < nf; i++)
		if (f[i].path_hash == hash)
			return &f[i];
	return NULL;
}

static void observe_entities(cbad_numeric *n, const cbad_json_field *f, size_t nf,
			     const cbad_event_view *ev, bool learn, const double *evals, cand *cs,
			     size_t *nc, size_t *nweak, size_t *nlevel)
{
	int64_t hour = -1; /* UTC hours since the epoch */
	/* hours are judged once the stream's history spans HOUR_SPAN_MS: before that, every new
	 * hour of the day would look unusual for everyone */
	bool judge_hour = n->first_ts > 0 && n->last_ts - n->first_ts >= HOUR_SPAN_MS;

	uint32_t lmask = 0;
	double cv[CBAD_ENTITY_MAX_VALUES];

	if (ev->ts_ms > 0)
		hour = (int64_t)(ev->ts_ms / 3600000);
	/* an entity's and a context's value models are for measurements: a field that is a rate
	 * kind's categories (a status) has codes, and any other code than an entity's usual one
	 * would be an infinite z (web-access: a client's first 201 or 304, 7 false flags) */
	for (uint32_t v = 0; v < n->nent_values; v++) {
		bool cat = false;

		for (uint32_t c = 0; c < n->ncat; c++)
			cat |= n->cat_hash[c] == n->v[v].hash;
		lmask |= cat ? 0u : 1u << v;
		cv[v] = cat ? NAN : evals[v];
	}
	for (uint32_t e = 0; e < n->nent + n->nctx; e++) {
		const cbad_json_field *ef = find_field(f, nf, n->ent_hash[e]);
		cbad_entity_signal es[3 + 4 * CBAD_ENTITY_MAX_VALUES];
		size_t k;
		uint64_t key;
		bool ctx = e >= n->nent;

		n->ent_label[e][0] = '\0';
		if (!ef || !n->ent[e] || ef->str_len == 0 || (ctx && ef->type != CBAD_JSON_STRING))
			continue;
		cbad_entity_set_level_mask(n->ent[e], lmask);
		if (ctx) {
			/* a context is the value's shape, and only its value models speak: its share
			 * of events is a kind's rate, and its hours are not who acts */
			key = shape_hash(ef->str, ef->str_len, n->ent_label[e], CBAD_ENTITY_LABEL_MAX) ^
			      n->ent_hash[e];
			k = cbad_entity_observe(n->ent[e], key, n->ent_label[e], strlen(n->ent_label[e]),
						cv, -1, false, n->t, learn, es,
						sizeof(es) / sizeof(es[0]));
		} else {
			key = cbad_json_hash(n->ent_hash[e], ef->str, ef->str_len);
			k = cbad_entity_observe(n->ent[e], key, ef->str, ef->str_len, cv, hour,
						judge_hour, n->t, learn, es, sizeof(es) / sizeof(es[0]));
			copy_trunc(n->ent_label[e], CBAD_ENTITY_LABEL_MAX, ef->str, ef->str_len);
		}
		for (size_t i = 0; i < k; i++) {
			static const uint8_t what[] = {W_SPIKE, W_SHIFT, W_FLAT, W_ERATE, W_EHOUR,
						       W_ELEVEL};
			bool is_rate = es[i].what == CBAD_ENTITY_RATE;
			bool has_field = es[i].what <= CBAD_ENTITY_FLAT || es[i].what == CBAD_ENTITY_LEVEL;
			cand *c;

			/* nor a context's runs: its values come from many sources, interleaved */
			if (ctx && (!has_field || es[i].what == CBAD_ENTITY_FLAT))
				continue;
			/* a level step is calibrated on its own (SELF_CALIBRATED): counted for its
			 * Bonferroni, carried only when it could matter */
			if (es[i].what == CBAD_ENTITY_LEVEL) {
				(*nlevel)++;
				if (es[i].p_value >= CTX_WEAK_P)
					continue;
			}
			/* a weak context test is only counted (for the kind's Bonferroni): it cannot
			 * be the kind's strongest, and carrying it to the sort and the signal names
			 * cost a fifth of this module on a stream with contexts */
			if (ctx && es[i].p_value >= CTX_WEAK_P && es[i].what != CBAD_ENTITY_LEVEL) {
				(*nweak)++;
				continue;
			}
			c = push(cs, nc, is_rate ? K_RATE : (ctx ? K_VALUE : K_ENTITY), what[es[i].what],
				       has_field ? (int)es[i].value_index : -1, (int)e);

			if (!c)
				break;
			c->p = es[i].p_value;
			c->stat = es[i].stat;
			c->value = es[i].value;
			c->lo = es[i].base_low;
			c->med = es[i].base_median;
			c->hi = es[i].base_high;
			if (is_rate) {
				c->observed = es[i].value;
				c->expected = es[i].base_median;
				c->window = CBAD_ENTITY_RATE_SHORT;
			}
			if (es[i].what == CBAD_ENTITY_FLAT)
				c->observed = es[i].run;
			c->pmin = es[i].p_min;

		}
	}
}

/* "template 0123456789abcdef" (25 characters) into l, by hand: snprintf here cost more than the
 * rate test itself. */
static void template_label(char *l, uint64_t id)
{
	static const char hex[] = "0123456789abcdef";

	memcpy(l, "template ", 9);
	for (int i = 0; i < 16; i++)
		l[9 + i] = hex[(id >> (60 - 4 * i)) & 0xf];
	l[25] = '\0';
}

/* A burst or drop verdict as a test of the rate kind, its label in slot. */
static void push_rate(cbad_numeric *n, cand *cs, size_t *nc, const cbad_rate_verdict *v,
		      uint8_t what, int slot)
{
	cand *c;

	if (!v->valid || !(c = push(cs, nc, K_RATE, what, -1, -1)))
		return;
	c->rate = (int16_t)slot;
	c->p = v->p_value;
	c->stat = v->stat;
	c->value = v->observed;
	c->observed = v->observed;
	c->expected = v->expected;
	c->window = v->window;
	c->lo = v->base_low;
	c->med = v->expected;
	c->hi = v->base_high;
	if (slot == S_TDROP)
		template_label(n->rate_label[slot], v->key); /* the table keeps no labels */
	else
		memcpy(n->rate_label[slot], v->label, CBAD_RATE_LABEL_MAX);
}

/* The rate kind of one field's value: keyed by the field's hash and the value's bytes, labelled
 * "name=value" (cut to CBAD_RATE_LABEL_MAX) into label, which k then points to. */
static void field_value_key(cbad_rate_key *k, char *label, uint64_t hash, const char *name,
			    const cbad_json_field *cf)
{
	size_t ln = strlen(name);

	k->key = cbad_json_hash(hash, cf->str, cf->str_len);
	copy_trunc(label, CBAD_RATE_LABEL_MAX, name, ln);
	if (ln + 1 < CBAD_RATE_LABEL_MAX - 1) {
		label[ln] = '=';
		copy_trunc(label + ln + 1, CBAD_RATE_LABEL_MAX - ln - 1, cf->str, cf->str_len);
	}
	k->label = label;
	k->label_len = strlen(label);
}

static void observe_rates(cbad_numeric *n, const cbad_json_field *f, size_t nf,
			  const cbad_event_view *ev, bool learn, cand *cs, size_t *nc)
{
	cbad_rate_key keys[1 + MAX_CAT];
	char labels[1 + MAX_CAT][CBAD_RATE_LABEL_MAX];
	size_t nk = 0;
	cbad_rate_verdict b, d;

	if (ev->template_id) {
		keys[nk].key = ev->template_id;
		template_label(labels[nk], ev->template_id);
		keys[nk].label = labels[nk];
		keys[nk].label_len = 25;
		nk++;
	}
	for (uint32_t i = 0; i < n->ncat; i++) {
		const cbad_json_field *cf = find_field(f, nf, n->cat_hash[i]);

		if (!cf)
			continue;
		field_value_key(&keys[nk], labels[nk], n->cat_hash[i], n->cat_name[i], cf);
		nk++;
	}
	/* the template is keys[0] when there is one */
	{
		size_t nt = ev->template_id ? 1 : 0;

		if (nt) {
			cbad_rate_observe(n->rate, keys, nt, learn, &b, &d);
			push_rate(n, cs, nc, &b, W_BURST, S_TBURST);
			push_rate(n, cs, nc, &d, W_DROP, S_TDROP);
		}
		if (nk > nt) {
			cbad_rate_observe(n->crate, keys + nt, nk - nt, learn, &b, &d);
			push_rate(n, cs, nc, &b, W_BURST, S_CBURST);
			push_rate(n, cs, nc, &d, W_DROP, S_CDROP);
		}
	}
}

/* Bursts of one value of an identifier field ("src_ip=62.212.213.1 sent 9 of the last 33
 * events; usually about 0"): the strongest of the event's id values is tested. Drops of single
 * ids are not reported: an id going quiet is normal. */
static void observe_ids(cbad_numeric *n, const cbad_json_field *f, size_t nf, bool learn,
			cand *cs, size_t *nc)
{
	cbad_rate_key keys[MAX_ID];
	char labels[MAX_ID][CBAD_RATE_LABEL_MAX];
	size_t nk = 0;
	cbad_rate_verdict b, d;

	for (uint32_t i = 0; i < n->nid; i++) {
		const cbad_json_field *cf = find_field(f, nf, n->id_hash[i]);

		if (!cf || cf->type != CBAD_JSON_STRING || cf->str_len == 0)
			continue;
		field_value_key(&keys[nk], labels[nk], n->id_hash[i], n->id_name[i], cf);
		nk++;
	}
	if (nk == 0)
		return;
	cbad_rate_observe(n->idrate, keys, nk, learn, &b, &d);
	push_rate(n, cs, nc, &b, W_IDBURST, S_IDBURST);
}

/* log10 P(X >= d) for X ~ Binomial(k, q), k <= WHO_OCC. */
static double log10_binom_upper(int d, int k, double q)
{
	double p = 0, c = 1, qp[WHO_OCC + 1], rp[WHO_OCC + 1];

	if (d <= 0)
		return 0;
	if (k > WHO_OCC)
		k = WHO_OCC;
	/* powers by products, not pow(): k <= 8, and 2 pow() per term were a tenth of the
	 * module on a payments stream */
	qp[0] = rp[0] = 1;
	for (int j = 1; j <= k; j++) {
		qp[j] = qp[j - 1] * q;
		rp[j] = rp[j - 1] * (1 - q);
	}
	for (int j = 0; j <= k; j++) {
		if (j >= d)
			p += c * qp[j] * rp[k - j];
		c = c * (double)(k - j) / (double)(j + 1);
	}
	return p > 0 ? (p < 1 ? log10(p) : 0) : -300;
}

static who_slot *who_find(cbad_numeric *n, uint32_t a, uint64_t key, uint64_t now, bool *fresh)
{
	who_slot *set = &n->who_tab[((size_t)a * WHO_SETS + key % WHO_SETS) * WHO_WAYS];
	who_slot *lru = &set[0];

	*fresh = false;
	for (int w = 0; w < WHO_WAYS; w++) {
		if (set[w].key == key)
			return &set[w];
		if (set[w].key == 0 || (lru->key != 0 && set[w].seen < lru->seen))
			lru = &set[w];
	}
	*fresh = true;
	memset(lru, 0, sizeof(*lru));
	lru->key = key;
	lru->seen = now;
	return lru;
}

/*
 * Distinct partners. For each who field a present in the event and each other who field b, the
 * partner is new when the b value is not among the last WHO_LAST b values a's value came with.
 * Over the value's last k <= WHO_OCC occurrences, d were new: compared with Binomial(k, q), q the
 * pair's pooled share of new partners, as -log10 of the upper tail, calibrated per pair. A user
 * paying with a new card on every attempt, or one source address logging in as many actors,
 * stands out even when neither the user nor the address is frequent.
 */
static void observe_who(cbad_numeric *n, const cbad_json_field *f, size_t nf, bool learn,
			cand *cs, size_t *nc)
{
	const cbad_json_field *wf[MAX_WHO] = {NULL};
	uint16_t ph[MAX_WHO];
	double best = 0;

	if (!n->who_tab)
		return;
	for (uint32_t a = 0; a < n->nwho; a++) {
		wf[a] = find_field(f, nf, n->who_hash[a]);
		if (wf[a] && (wf[a]->type != CBAD_JSON_STRING || wf[a]->str_len == 0))
			wf[a] = NULL;
		if (wf[a])
			ph[a] = (uint16_t)(cbad_json_hash(CBAD_JSON_HASH_INIT, wf[a]->str,
							   wf[a]->str_len) | 1);
	}
	for (uint32_t a = 0; a < n->nwho; a++) {
		uint64_t key;
		bool fresh;
		who_slot *x;

		if (!wf[a])
			continue;
		key = cbad_json_hash(n->who_hash[a], wf[a]->str, wf[a]->str_len) | 1;
		x = who_find(n, a, key, n->t, &fresh);
		for (uint32_t b = 0; b < n->nwho; b++) {
			who_pair *pr = PAIR(n, a, b);
			bool isnew = true;
			uint8_t bits;
			int k, d;

			if (b == a || !wf[b])
				continue;
			for (int j = 0; j < WHO_LAST; j++)
				isnew &= x->last[b][j] != ph[b];
			if (fresh || x->nocc == 0) {
				/* a value's first partner is not new to it: nothing to compare yet */
				x->last[b][0] = ph[b];
				continue;
			}
			bits = (uint8_t)((x->newbits[b] << 1) | (isnew ? 1 : 0));
			k = x->nocc < WHO_OCC ? x->nocc : WHO_OCC;
			d = __builtin_popcount((unsigned)bits & ((1u << k) - 1u));
			if (pr->nq >= WHO_MIN_OCC && d > 0) {
				double q = pr->q < 1e-3 ? 1e-3 : pr->q;
				double st = -log10_binom_upper(d, k, q);
				cand *c;

				if (cbad_values_calib_ready(&pr->cal) &&
				    (c = push(cs, nc, K_RATE, W_DISTINCT, -1, -1))) {
					c->p = cbad_values_calib_p_logp(&pr->cal, st);
					c->stat = st;
					c->value = d;
					c->observed = d;
					c->window = k;
					c->expected = q * k;
					c->lo = 0;
					c->med = q * k;
					c->hi = q * k + 2.33 * sqrt(q * k * (1 - q)) + 1;
					c->wa = (int8_t)a;
					c->wb = (int8_t)b;
					if (st > best) {
						best = st;
						copy_trunc(n->rate_label[S_WHO], CBAD_RATE_LABEL_MAX,
							   wf[a]->str, wf[a]->str_len);
					}
					if (learn)
						cbad_rate_calib_learn(&pr->cal, st, c->p);
				} else if (learn) {
					cbad_values_calib_learn(&pr->cal, st, 1.0);
				}
			} else if (learn && pr->nq >= WHO_MIN_OCC) {
				cbad_values_calib_learn(&pr->cal, 0.0, 1.0);
			}
			/* the pooled share learns only from learned events; the value's own history
			 * counts every event, so a burst of strange events adds up */
			if (learn) {
				pr->q += ((isnew ? 1.0 : 0.0) - pr->q) /
					 (pr->nq + 1 < WHO_Q_MEMORY ? pr->nq + 1 : WHO_Q_MEMORY);
				pr->nq += pr->nq < WHO_Q_MEMORY ? 1 : 0;
			}
			x->newbits[b] = bits;
			if (isnew) {
				memmove(&x->last[b][1], &x->last[b][0],
					(WHO_LAST - 1) * sizeof(x->last[b][0]));
				x->last[b][0] = ph[b];
			}
		}
		if (x->nocc < 255)
			x->nocc++;
		x->seen = n->t;
	}
}

/* Never-seen value pairs. Of the event's new pairs the one with the smallest p is tested: p is
 * the field pair's recent share of new pairs, (news + 1/2) / (occurrences + 1), which is the
 * chance of a new pair in the next occurrence (a Bernoulli rate, so P(p <= a) <= a while the
 * rate holds). A field pair is counted only after PQ_WARMUP occurrences have filled the
 * sketch. Learned events only; a new pair with p < PQ_GUARD is counted but not added, so it is
 * still new the next time, until its field pair's rate has grown past the guard. Not corrected
 * for the number of field pairs: once a field pair's values are all known its true rate of new
 * pairs is near 0, and 0.5 / (n + 1) already an upper bound (the union bound over field pairs
 * found none of the measured never-seen pairs). */
static void observe_pairs(cbad_numeric *n, const cbad_json_field *f, size_t nf, bool learn,
			  cand *cs, size_t *nc)
{
	const cbad_json_field *pv[PF_MAX] = {NULL};
	double bestp = 1.0, bestq = 0;
	int ba = -1, bb = -1;
	uint32_t k = 0;
	const double keep = 1.0 - 1.0 / PQ_MEMORY;

	if (!n->pset)
		return;
	for (uint32_t a = 0; a < n->npf; a++) {
		pv[a] = find_field(f, nf, n->pf_hash[a]);
		if (pv[a] && (pv[a]->type != CBAD_JSON_STRING || pv[a]->str_len == 0))
			pv[a] = NULL;
	}
	for (uint32_t a = 0; a < n->npf; a++)
		for (uint32_t b = a + 1; b < n->npf; b++, k++) {
			pf_pair *pp = &n->pfp[k];
			uint64_t h;
			uint32_t fp;
			size_t i;
			bool isnew;
			double q;

			/* 2 = not tested yet */
			q = pp->warm >= PQ_WARMUP && pp->nq >= PQ_MIN_OCC ?
					(pp->news + 0.5) / (pp->nq + 1.0) : 2.0;
			if (!pv[a] || !pv[b])
				continue;
			h = cbad_json_hash(CBAD_JSON_HASH_INIT + k, pv[a]->str, pv[a]->str_len);
			h = cbad_json_hash(h * 0x9e3779b97f4a7c15ull, pv[b]->str, pv[b]->str_len);
			fp = (uint32_t)(h >> 32) | 1u; /* 0 marks an empty slot */
			i = (size_t)h & (PSET_SLOTS - 1);
			while (n->pset[i] && n->pset[i] != fp)
				i = (i + 1) & (PSET_SLOTS - 1);
			isnew = n->pset[i] == 0;
			if (isnew && q < bestp) {
				bestp = q;
				bestq = pp->news;
				ba = (int)a;
				bb = (int)b;
			}
			if (!learn)
				continue;
			if (pp->warm < PQ_WARMUP) {
				pp->warm++;
			} else {
				pp->news = pp->news * keep + (isnew ? 1.0 : 0.0);
				pp->nq = pp->nq * keep + 1.0;
			}
			/* the normal-data guard: a rare new pair is not yet the norm (it is counted, so
			 * a pair that lasts raises its field pair's rate and is then added) */
			if (isnew && q >= PQ_GUARD) {
				n->pset[i] = fp;
				n->pset_used++;
			}
		}
	if (learn && n->pset_used >= PSET_FULL) {
		/* forget every pair and learn them again: the sketch stays bounded */
		memset(n->pset, 0, PSET_SLOTS * sizeof(uint32_t));
		n->pset_used = 0;
		memset(n->pfp, 0, sizeof(n->pfp));
	}
	if (ba >= 0) {
		cand *c = push(cs, nc, K_VALUE, W_PAIR, -1, -1);

		if (c) {
			char va[CBAD_RATE_LABEL_MAX], vb[CBAD_RATE_LABEL_MAX];

			c->p = bestp;
			c->stat = stat_of_p(bestp);
			c->expected = bestq;
			c->window = PQ_MEMORY;
			c->wa = (int8_t)ba;
			c->wb = (int8_t)bb;
			copy_trunc(va, sizeof(va), pv[ba]->str, pv[ba]->str_len);
			copy_trunc(vb, sizeof(vb), pv[bb]->str, pv[bb]->str_len);
			{
				char t[CBAD_RATE_LABEL_MAX];

				join4(t, sizeof(t), n->pf_name[ba], "=", va, " ");
				join4(n->rate_label[S_PAIR], CBAD_RATE_LABEL_MAX, t, n->pf_name[bb], "=",
				      vb);
			}
		}
	}
}

/* How many of the event's entity hour tests count in their Bonferroni correction: Tarone's
 * rule for discrete tests, at the detector's default alpha (fixed, so that what counts does not
 * depend on the sensitivity): the smallest K for which at most K tests could reach alpha / K.
 * A test that cannot reach it (an entity active at every hour: a shared resource, a service
 * account) could never flag and only diluted the others (a night session: actor hour p 5e-4,
 * the resource's at best 2e-2, reported 1e-3). */
static size_t hour_tests(const cand *cs, size_t nc)
{
	size_t m = 0;

	for (size_t i = 0; i < nc; i++)
		m += cs[i].what == W_EHOUR;
	for (size_t k = 1; k < m; k++) {
		size_t c = 0;

		for (size_t i = 0; i < nc; i++)
			c += cs[i].what == W_EHOUR && cs[i].pmin * (double)k <= HOUR_ALPHA;
		if (c <= k)
			return k;
	}
	return m;
}

/* Whether the rate kind's statistic of this event is kept out of the kind's calibration. A
 * burst from one actor (an id value's or an entity's share of events, an actor's new partners:
 * a source failing logins as many users, a new account paying with many cards) is made of
 * events that each look ordinary, and the kind calibrator learned it as the norm within a few
 * dozen events (records clipped one bin up, then every strange one past the skip budget), so
 * the rest of the burst went unflagged. Quarantined: a strange who-burst (kind p below the
 * calibrators' guard) within RQ_GAP events of the previous one, for at most RQ_BUDGET of the
 * events, after which an actor that stays busy is learned as before. Not the bursts of a
 * template or a categorical value, nor drops: those are changes of the stream's mix, which
 * last (a measurement stepping to a new level), and the kind learns them as now. */
static bool rate_quarantine(cbad_numeric *n, const cand *best, double pk, bool learn)
{
	bool who = best && (best->what == W_IDBURST || best->what == W_ERATE ||
			    best->what == W_DISTINCT);
	bool strange = who && pk < CBAD_CALIB_SKIP;
	/* the budget counts only events that would have been learned */
	bool q = learn && strange && n->rq_last > 0 && n->t + 1 - n->rq_last <= RQ_GAP &&
		 n->rq_share < RQ_BUDGET;

	if (strange)
		n->rq_last = n->t + 1;
	n->rq_share += ((q ? 1.0 : 0.0) - n->rq_share) / RQ_MEMORY;
	return q;
}

size_t cbad_numeric_observe(cbad_numeric *n, const cbad_event_view *ev, bool learn,
			    cbad_chan_signal *out, size_t max)
{
	cbad_json_field f[MAX_SCAN];
	cand cs[MAX_CAND];
	uint8_t ord[MAX_CAND];
	double pv[MAX_CAND];
	size_t nc = 0, nout = 0;
	double evals[CBAD_MAX_VALUE_FIELDS];
	double kmin[NK] = {1.0, 1.0, 1.0}, kmin2[NK] = {1.0, 1.0, 1.0};
	int kbest[NK] = {-1, -1, -1};
	size_t kcount[NK] = {0};
	int nf = 0;
	size_t nweak = 0, nlevel = 0, nhour = 0, ncus = 0;

	if (ev->raw && ev->len > 0)
		nf = cbad_json_scan(ev->raw, ev->len, f, MAX_SCAN);
	if (nf < 0)
		nf = 0;
	for (size_t i = 0; i < CBAD_MAX_VALUE_FIELDS; i++)
		evals[i] = NAN;

	observe_values(n, f, (size_t)nf, ev->ts_ms, learn, cs, &nc, evals);
	if (n->decided)
		observe_entities(n, f, (size_t)nf, ev, learn, evals, cs, &nc, &nweak, &nlevel);
	observe_rates(n, f, (size_t)nf, ev, learn, cs, &nc);
	if (n->decided) {
		observe_ids(n, f, (size_t)nf, learn, cs, &nc);
		observe_who(n, f, (size_t)nf, learn, cs, &nc);
		observe_pairs(n, f, (size_t)nf, learn, cs, &nc);
	}
	n->last_tests = nc + nweak + nlevel;
	kcount[K_VALUE] = nweak;
	/* the level steps of the event's entities and context: Bonferroni over all of them, the
	 * weak ones that were only counted included; over the entities' hours, those that could
	 * flag (hour_tests) */
	nhour = hour_tests(cs, nc);
	/* the value fields' CUSUMs: Bonferroni over the event's */
	for (size_t i = 0; i < nc; i++)
		ncus += cs[i].what == W_CUSUM;
	for (size_t i = 0; i < nc; i++) {
		if (cs[i].what == W_CUSUM)
			cs[i].p = fmin(1.0, cs[i].p * (double)ncus);
		if (cs[i].what == W_ELEVEL) {
			cs[i].p = cs[i].p * (double)nlevel < 1.0 ? cs[i].p * (double)nlevel : 1.0;
			n->last_tests--; /* counted in nlevel already */
		}
		if (cs[i].what == W_EHOUR)
			cs[i].p = cs[i].p * (double)nhour < 1.0 ? cs[i].p * (double)nhour : 1.0;
	}

	/* the kind's statistic: -log10 of its smallest p-value plus -log10 of the second smallest
	 * from another field or test (two tests of a kind that agree, cpu and p99 of one host, a user's burst and its new
	 * cards, say more than either), calibrated against the kind's own recent events */
	for (size_t i = 0; i < nc; i++) {
		if (SELF_CALIBRATED(cs[i].what))
			continue; /* calibrated on its own (observe_pairs, observe_values) */
		kcount[cs[i].kind]++;
		if (cs[i].p < kmin[cs[i].kind]) {
			kmin[cs[i].kind] = cs[i].p;
			kbest[cs[i].kind] = (int)i;
		}
	}
	/* a field counts once: the spike, step and flatline tests of one field (of one entity)
	 * read the same few values, so the second p-value must come from another field or test
	 * (measured: spike and step of a host step summed to the normal tail, p ~1e-3); a
	 * long-run test (LONG_RUN) and a short-run one of the field are two questions, a routine
	 * daily spike (spike p 1e-9, level p 0.1) and one past all history (both small) differ */
	for (size_t i = 0; i < nc; i++) {
		int b = kbest[cs[i].kind];

		if ((int)i == b || cs[i].p >= kmin2[cs[i].kind] || SELF_CALIBRATED(cs[i].what))
			continue;
		if (cs[i].field >= 0 && cs[i].field == cs[b].field && cs[i].ent == cs[b].ent &&
		    LONG_RUN(cs[i].what) == LONG_RUN(cs[b].what))
			continue;
		kmin2[cs[i].kind] = cs[i].p;
	}
	for (int k = 0; k < NK; k++) {
		double st, pk;
		bool clip, quarantine;

		if (kcount[k] == 0)
			continue;
		/* a record is clipped when it comes from a test whose statistic grows with the
		 * anomaly's length (a run, a count over a window): not when it comes from a spike or
		 * step, which judge one or two values (a new level is learned at its height). The
		 * long-run level is clipped: a drift away from it is a run of growing statistics too
		 * (unclipped, NAB standard 31.5 -> 28.5) */
		clip = kbest[k] < 0 || (cs[kbest[k]].what != W_SPIKE && cs[kbest[k]].what != W_SHIFT);
		st = stat_of_p(kmin[k]) + stat_of_p(kmin2[k]);
		/* the power-law tail fit: -log10 of a minimum of heterogeneous p-values has a
		 * heavier tail than exponential (measured: the exponential fit flagged 0.3-0.7 % of
		 * normal events at p < 1e-3) */
		pk = cbad_values_lcalib_ready(&n->kind_cal[k]) ? cbad_values_lcalib_p(&n->kind_cal[k], st) :
								  1.0;
		/* the calibration corrects the sum for the kind's many tests and their dependence:
		 * it never claims more than the two p-values it sums (a kind whose statistic was
		 * constant ranks any other as a record); learned as reported */
		if (pk < kmin[k] * kmin2[k])
			pk = kmin[k] * kmin2[k];
		quarantine = k == K_RATE &&
			     rate_quarantine(n, kbest[k] >= 0 ? &cs[kbest[k]] : NULL, pk, learn);
		if (learn && !quarantine)
			cbad_values_lcalib_learn_clip(&n->kind_cal[k], st, pk, clip);
		/* the other tests of the kind: Bonferroni within the kind, never below the kind */
		for (size_t i = 0; i < nc; i++) {
			if (cs[i].kind != k || SELF_CALIBRATED(cs[i].what))
				continue;
			if ((int)i == kbest[k]) {
				cs[i].p = pk;
			} else {
				double p = cs[i].p * (double)kcount[k];

				cs[i].p = p < pk ? pk : (p > 1.0 ? 1.0 : p);
			}
		}
		if (kbest[k] < 0) {
			/* every test of the kind said 1: the first one carries the kind */
			for (size_t i = 0; i < nc; i++)
				if (cs[i].kind == k && !SELF_CALIBRATED(cs[i].what)) {
					cs[i].p = pk;
					break;
				}
		}
	}

	/* strongest first: selection of the max smallest p-values, ties in test order. The
	 * selection moves test numbers and their p-values (one byte and eight), not the 96-byte
	 * tests: the same comparisons in the same order, so the same order whatever the values */
	for (size_t i = 0; i < nc; i++) {
		ord[i] = (uint8_t)i;
		pv[i] = cs[i].p;
	}
	while (nout < max && nout < nc) {
		size_t best = nout;
		double bp = pv[nout];

		for (size_t i = nout + 1; i < nc; i++)
			if (pv[i] < bp) {
				bp = pv[i];
				best = i;
			}
		if (best != nout) {
			uint8_t t = ord[best];

			memmove(&ord[nout + 1], &ord[nout], best - nout);
			memmove(&pv[nout + 1], &pv[nout], (best - nout) * sizeof(pv[0]));
			ord[nout] = t;
			pv[nout] = bp;
		}
		/* the text only for the strongest: the only one an explanation can quote (several
		 * snprintf per event on a busy stream were a tenth of this module) */
		cand_signal(n, &cs[ord[nout]], &out[nout], nout == 0);
		nout++;
	}

	if (learn) {
		if (ev->ts_ms > 0) {
			if (n->first_ts == 0)
				n->first_ts = ev->ts_ms;
			if (ev->ts_ms > n->last_ts)
				n->last_ts = ev->ts_ms;
		}
		if (!n->decided) {
			heur_watch(n, f, (size_t)nf);
			n->heur_n++;
			if (n->heur_n >= HEURISTIC_EVENTS) {
				heur_decide(n);
				if (make_entities(n) == 0 && make_rates(n) == 0 && make_who(n) == 0 &&
				    make_pairs(n) == 0) {
					n->decided = true;
					free(n->cands);
					n->cands = NULL;
					n->ncands = 0;
				} else {
					for (uint32_t i = 0; i < CBAD_MAX_ENTITY_FIELDS; i++) {
						cbad_entity_free(n->ent[i]);
						n->ent[i] = NULL;
					}
					cbad_rate_free(n->crate);
					cbad_rate_free(n->idrate);
					n->crate = n->idrate = NULL;
					n->nent = (uint32_t)n->s.nentity_fields;
					n->nctx = 0;
					n->ncat = 0;
					n->nid = 0;
					n->nwho = 0;
					n->npf = 0;
					n->heur_n--; /* try again next event */
				}
			}
		}
	}
	/* every event counts in the rate windows, learned or not */
	n->t++;
	return nout;
}

/* ---- state ---- */

void cbad_numeric_save(const cbad_numeric *n, cbad_writer *w)
{
	cbad_w_u32(w, STATE_TAG);
	cbad_w_u64(w, n->t);
	cbad_w_i64(w, n->first_ts);
	cbad_w_i64(w, n->last_ts);
	cbad_w_u32(w, n->nvalues);
	for (uint32_t i = 0; i < n->nvalues; i++) {
		cbad_w_str(w, n->v[i].name);
		cbad_values_model_save(&n->v[i].m, w);
		cbad_values_calib_save(&n->v[i].spike, w);
		cbad_values_calib_save(&n->v[i].shift, w);
		cbad_values_calib_save(&n->v[i].cus, w);
		cbad_w_f64(w, n->v[i].sup);
		cbad_w_f64(w, n->v[i].sdn);
		cbad_w_f64(w, n->v[i].cpos);
		cbad_values_runs_save(&n->v[i].runs, w);
		cbad_values_level_save(&n->v[i].level, w);
		cbad_values_season_save(&n->v[i].season, w);
	}
	for (int k = 0; k < NK; k++)
		cbad_values_lcalib_save(&n->kind_cal[k], w);
	cbad_w_u64(w, n->rq_last);
	cbad_w_f64(w, n->rq_share);
	cbad_rate_save(n->rate, w);
	cbad_rate_save(n->crate, w);
	cbad_w_u8(w, n->decided);
	if (!n->decided) {
		cbad_w_u32(w, n->heur_n);
		cbad_w_u32(w, n->ncands);
		for (uint32_t i = 0; i < n->ncands; i++) {
			const hcand *c = &n->cands[i];

			cbad_w_str(w, c->name);
			cbad_w_u32(w, c->present);
			cbad_w_u32(w, c->nstrings);
			cbad_w_u32(w, c->nspaced);
			cbad_w_u32(w, c->nmeasure);
			cbad_w_u32(w, c->nvals);
			for (uint32_t j = 0; j < c->nvals; j++) {
				cbad_w_u32(w, c->vals[j].h);
				cbad_w_u32(w, c->vals[j].first);
				cbad_w_u32(w, c->vals[j].last);
				cbad_w_u32(w, c->vals[j].count);
			}
			cbad_w_u32(w, c->nshapes);
			for (uint32_t j = 0; j < c->nshapes && j < CTX_MAX_SHAPES; j++)
				cbad_w_u32(w, c->shapes[j]);
		}
		return;
	}
	cbad_w_u32(w, n->nent);
	cbad_w_u32(w, n->nent_values);
	for (uint32_t i = 0; i < n->nent; i++) {
		cbad_w_str(w, n->ent_name[i]);
		cbad_entity_save(n->ent[i], w);
	}
	cbad_w_u32(w, n->nctx);
	if (n->nctx) {
		cbad_w_str(w, n->ent_name[n->nent]);
		cbad_entity_save(n->ent[n->nent], w);
	}
	cbad_w_u32(w, n->ncat);
	for (uint32_t i = 0; i < n->ncat; i++)
		cbad_w_str(w, n->cat_name[i]);
	cbad_w_u32(w, n->nid);
	for (uint32_t i = 0; i < n->nid; i++)
		cbad_w_str(w, n->id_name[i]);
	cbad_rate_save(n->idrate, w);
	/* who fields follow from the entity and id fields; their tables and pairs */
	for (uint32_t a = 0; a < n->nwho && n->pair; a++)
		for (uint32_t b = 0; b < n->nwho; b++) {
			cbad_w_f64(w, PAIR(n, a, b)->q);
			cbad_w_f64(w, PAIR(n, a, b)->nq);
			cbad_values_calib_save(&PAIR(n, a, b)->cal, w);
		}
	if (n->who_tab) {
		size_t ns = (size_t)n->nwho * WHO_SETS * WHO_WAYS;

		for (size_t i = 0; i < ns; i++) {
			const who_slot *x = &n->who_tab[i];

			cbad_w_u64(w, x->key);
			if (!x->key)
				continue;
			cbad_w_u64(w, x->seen);
			cbad_w_bytes(w, x->last, sizeof(x->last));
			cbad_w_bytes(w, x->newbits, sizeof(x->newbits));
			cbad_w_u8(w, x->nocc);
		}
	}
	/* pair fields, their counts, and the sketch's filled slots */
	cbad_w_u32(w, n->npf);
	for (uint32_t i = 0; i < n->npf; i++)
		cbad_w_str(w, n->pf_name[i]);
	if (n->pset) {
		for (uint32_t k = 0; k < NPF_PAIRS; k++) {
			cbad_w_f64(w, n->pfp[k].news);
			cbad_w_f64(w, n->pfp[k].nq);
			cbad_w_u32(w, n->pfp[k].warm);
		}
		cbad_w_u32(w, n->pset_used);
		for (uint32_t i = 0; i < PSET_SLOTS; i++)
			if (n->pset[i]) {
				cbad_w_u32(w, i);
				cbad_w_u32(w, n->pset[i]);
			}
	}
}

/* Loads a categorical (labeled) or id table, made for the load when it is not there yet.
 * Returns 0, -ENOMEM, or -EINVAL with rd->failed set. */
static int load_table(cbad_rate **t, bool labeled, cbad_reader *rd)
{
	if (!*t && (labeled ? cbad_rate_new(t) : cbad_rate_new_unlabeled(t)) < 0)
		return -ENOMEM;
	if (cbad_rate_load(*t, rd) < 0) {
		rd->failed = true;
		return -EINVAL;
	}
	return 0;
}

/* After a load: a table without its fields was never observed (it saved as new); not kept. */
static void drop_unused_rates(cbad_numeric *n)
{
	if (!n->ncat) {
		cbad_rate_free(n->crate);
		n->crate = NULL;
	}
	if (!n->nid) {
		cbad_rate_free(n->idrate);
		n->idrate = NULL;
	}
}

int cbad_numeric_load(cbad_numeric *n, cbad_reader *r)
{
	uint32_t nv;

	if (cbad_r_u32(r) != STATE_TAG || n->decided || n->t != 0)
		return -EINVAL;
	n->t = cbad_r_u64(r);
	n->first_ts = cbad_r_i64(r);
	n->last_ts = cbad_r_i64(r);
	nv = cbad_r_count(r, CBAD_MAX_VALUE_FIELDS);
	if (r->failed || (n->values_configured && nv != n->nvalues))
		return -EINVAL;
	if (vfields_reserve(n, nv) < 0)
		return -ENOMEM;
	n->nvalues = nv;
	for (uint32_t i = 0; i < nv; i++) {
		vfield *v = &n->v[i];

		if (!cbad_r_str(r, v->name, sizeof(v->name)))
			return -EINVAL;
		v->hash = name_hash(v->name);
		cbad_values_model_load(&v->m, r);
		if (cbad_values_calib_load(&v->spike, r) < 0 || cbad_values_calib_load(&v->shift, r) < 0 ||
		    cbad_values_calib_load(&v->cus, r) < 0)
			return -EINVAL;
		v->sup = cbad_r_f64(r);
		v->sdn = cbad_r_f64(r);
		v->cpos = cbad_r_f64(r);
		if (!(v->sup >= 0) || !(v->sdn >= 0) || !(v->cpos >= 0 && v->cpos <= 1) ||
		    !isfinite(v->sup) || !isfinite(v->sdn))
			return -EINVAL;
		cbad_values_runs_load(&v->runs, r);
		if (cbad_values_level_load(&v->level, r) < 0 ||
		    cbad_values_season_load(&v->season, r) < 0)
			return -EINVAL;
	}
	for (int k = 0; k < NK; k++)
		if (cbad_values_lcalib_load(&n->kind_cal[k], r) < 0)
			return -EINVAL;
	n->rq_last = cbad_r_u64(r);
	n->rq_share = cbad_r_f64(r);
	if (r->failed || !(n->rq_share >= 0 && n->rq_share <= 1))
		return -EINVAL;
	if (cbad_rate_load(n->rate, r) < 0)
		return -EINVAL;
	if (load_table(&n->crate, true, r) < 0)
		return r->failed ? -EINVAL : -ENOMEM;
	if (cbad_r_u8(r) == 0) {
		drop_unused_rates(n);
		n->heur_n = cbad_r_count(r, HEURISTIC_EVENTS - 1);
		n->ncands = cbad_r_count(r, HEURISTIC_MAX_FIELDS);
		for (uint32_t i = 0; i < n->ncands && !r->failed; i++) {
			hcand *c = &n->cands[i];

			cbad_r_str(r, c->name, sizeof(c->name));
			c->hash = name_hash(c->name);
			c->present = cbad_r_count(r, HEURISTIC_EVENTS);
			c->nstrings = cbad_r_count(r, c->present);
			c->nspaced = cbad_r_count(r, c->nstrings);
			c->nmeasure = cbad_r_count(r, c->present);
			c->nvals = cbad_r_count(r, HEURISTIC_EVENTS);
			for (uint32_t j = 0; j < c->nvals && !r->failed; j++) {
				c->vals[j].h = cbad_r_u32(r);
				c->vals[j].first = (uint16_t)cbad_r_count(r, HEURISTIC_EVENTS);
				c->vals[j].last = (uint16_t)cbad_r_count(r, HEURISTIC_EVENTS);
				c->vals[j].count = (uint16_t)cbad_r_count(r, HEURISTIC_EVENTS);
			}
			c->nshapes = cbad_r_count(r, CTX_MAX_SHAPES + 1);
			for (uint32_t j = 0; j < c->nshapes && j < CTX_MAX_SHAPES; j++)
				c->shapes[j] = cbad_r_u32(r);
		}
		return r->failed ? -EINVAL : 0;
	}
	{
		uint32_t ne = cbad_r_count(r, CBAD_MAX_ENTITY_FIELDS);
		uint32_t nev = cbad_r_count(r, CBAD_ENTITY_MAX_VALUES);

		if (r->failed || nev > nv || (n->s.nentity_fields && ne != n->s.nentity_fields))
			return -EINVAL;
		n->nent = ne;
		n->nent_values = nev;
		for (uint32_t i = 0; i < ne; i++) {
			if (!cbad_r_str(r, n->ent_name[i], CBAD_FIELD_NAME_MAX))
				return -EINVAL;
			n->ent_hash[i] = name_hash(n->ent_name[i]);
			if (cbad_entity_new(n->s.max_entities, nev, &n->ent[i]) < 0)
				return -ENOMEM;
			if (cbad_entity_load(n->ent[i], r) < 0)
				return -EINVAL;
		}
		n->nctx = cbad_r_count(r, ne < CBAD_MAX_ENTITY_FIELDS ? 1 : 0);
		if (r->failed || (n->nctx && nev == 0))
			return -EINVAL;
		if (n->nctx) {
			if (!cbad_r_str(r, n->ent_name[ne], CBAD_FIELD_NAME_MAX))
				return -EINVAL;
			n->ent_hash[ne] = name_hash(n->ent_name[ne]);
			if (cbad_entity_new(CTX_MAX_CONTEXTS, nev, &n->ent[ne]) < 0)
				return -ENOMEM;
			cbad_entity_set_values_only(n->ent[ne]);
			if (cbad_entity_load(n->ent[ne], r) < 0)
				return -EINVAL;
		}
		n->ncat = cbad_r_count(r, MAX_CAT);
		for (uint32_t i = 0; i < n->ncat; i++) {
			if (!cbad_r_str(r, n->cat_name[i], CBAD_FIELD_NAME_MAX))
				return -EINVAL;
			n->cat_hash[i] = name_hash(n->cat_name[i]);
		}
		n->nid = cbad_r_count(r, MAX_ID);
		for (uint32_t i = 0; i < n->nid; i++) {
			if (!cbad_r_str(r, n->id_name[i], CBAD_FIELD_NAME_MAX))
				return -EINVAL;
			n->id_hash[i] = name_hash(n->id_name[i]);
		}
		if (load_table(&n->idrate, false, r) < 0)
			return r->failed ? -EINVAL : -ENOMEM;
		drop_unused_rates(n);
		if (make_who(n) < 0)
			return -ENOMEM;
		for (uint32_t a = 0; a < n->nwho && n->pair; a++)
			for (uint32_t b = 0; b < n->nwho; b++) {
				who_pair *pr = PAIR(n, a, b);

				pr->q = cbad_r_f64(r);
				pr->nq = cbad_r_f64(r);
				if (!(pr->q >= 0 && pr->q <= 1 && pr->nq >= 0 && pr->nq <= WHO_Q_MEMORY) ||
				    cbad_values_calib_load(&pr->cal, r) < 0)
					return -EINVAL;
			}
		if (n->who_tab) {
			size_t ns = (size_t)n->nwho * WHO_SETS * WHO_WAYS;

			for (size_t i = 0; i < ns && !r->failed; i++) {
				who_slot *x = &n->who_tab[i];

				x->key = cbad_r_u64(r);
				if (!x->key)
					continue;
				x->seen = cbad_r_u64(r);
				cbad_r_bytes(r, x->last, sizeof(x->last));
				cbad_r_bytes(r, x->newbits, sizeof(x->newbits));
				x->nocc = cbad_r_u8(r);
			}
		}
		n->npf = cbad_r_count(r, PF_MAX);
		for (uint32_t i = 0; i < n->npf; i++) {
			if (!cbad_r_str(r, n->pf_name[i], CBAD_FIELD_NAME_MAX))
				return -EINVAL;
			n->pf_hash[i] = name_hash(n->pf_name[i]);
		}
		if (make_pairs(n) < 0)
			return -ENOMEM;
		if (n->pset) {
			uint32_t used;

			for (uint32_t k = 0; k < NPF_PAIRS; k++) {
				pf_pair *pp = &n->pfp[k];

				pp->news = cbad_r_f64(r);
				pp->nq = cbad_r_f64(r);
				pp->warm = cbad_r_count(r, PQ_WARMUP);
				if (!(pp->nq >= 0 && pp->nq <= PQ_MEMORY && pp->news >= 0 &&
				      pp->news <= pp->nq))
					return -EINVAL;
			}
			used = cbad_r_count(r, PSET_FULL - 1);
			for (uint32_t j = 0; j < used && !r->failed; j++) {
				uint32_t i = cbad_r_count(r, PSET_SLOTS - 1);
				uint32_t fp = cbad_r_u32(r);

				if (fp == 0 || n->pset[i])
					return -EINVAL;
				n->pset[i] = fp;
			}
			n->pset_used = used;
		}
	}
	if (r->failed)
		return -EINVAL;
	n->decided = true;
	free(n->cands);
	n->cands = NULL;
	n->ncands = 0;
	return 0;
}
