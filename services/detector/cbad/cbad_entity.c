/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_entity: each entity's own history (values, hours, rate) for one entity field, bounded (internal to cbad). */
#include "services/detector/cbad/cbad_entity.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "services/detector/cbad/cbad_rate.h"
#include "services/detector/cbad/cbad_values.h"

#define HOUR_SMOOTH 0.5       /* weight of the stream's hour profile, in active (day, hour) slots */
#define HOUR_STREAM_MIN 500.0 /* stream events before hours are judged */
#define HOURS_CAP 255         /* an entity's active days per hour are halved past this */
#define HOUR_SPREAD 6         /* an active hour lends (6 - d)/6 of its weight d < 6 hours away */
#define HMIN_STEPS 16.0       /* ent.hmin: steps per decade of p */

#define ENT_NOW 32.0      /* events: a burst must still be on over the last this many (CBAD_RATE_SHORT) */
#define ENT_NOW_STAT 1.3  /* -log10 p of that recent count: below it (p > 0.05), the burst is over */
#define LEVEL_CLIP 4.0          /* Huber clip of the level's residual, in sigmas */
#define LEVEL_STRANGE 0.002     /* a level step this rare is strange (CBAD_CALIB_SKIP) */

/* An entity's long-run level of one value: a Huber-clipped EW mean and variance over about
 * CBAD_ENTITY_LEVEL_MEMORY of its own values, and the previous value's signed z against it. */
typedef struct elevel {
	double mu;
	float var;
	float zprev;
} elevel;

typedef struct ent {
	uint64_t key;
	uint64_t seen;
	cbad_rate_ew ew;
	/* hours of day as (day, hour) slots: a session is a burst of events in one or two
	 * hours, so days active at each hour say more than events; today's hours (mask, day)
	 * join the profile when the entity's next day starts, so a whole session is judged
	 * against earlier days */
	uint8_t hours[24];
	uint16_t days; /* days that joined the profile */
	uint8_t lstrange; /* bit v: value v's last level step was strange (p < LEVEL_STRANGE) */
	/* the smallest calibrated p the hour test could give the entity today (at its least usual
	 * hour), as 1 + ceil(16 * -log10 p) (rounded toward the smaller p), 0 = not yet today:
	 * the profile changes once a day, so one calibration a day instead of one an event */
	uint8_t hmin;
	uint32_t mask; /* hours active on day `day` */
	uint32_t day;  /* UTC days since the epoch */
	uint32_t n;
} ent;

struct cbad_entity {
	uint32_t max, nsets;
	uint32_t nvalues;
	uint32_t used, cap;
	uint32_t last; /* slab index of the entity last observed, or UINT32_MAX */
	/* its label, once per table instead of once per entity (32 B of each 128): a signal is
	 * always about the entity of the current event, whose label the caller passes in */
	char last_label[CBAD_ENTITY_LABEL_MAX];
	uint32_t *sets; /* nsets * WAYS: slab index + 1, 0 = free */
	ent *slab;
	cbad_values_model *models; /* cap * nvalues */
	elevel *levels;            /* cap * nvalues */
	/* per value field (nvalues, none without value fields): the pooled spike and step
	 * calibrations and the runs */
	cbad_values_calib *spike, *shift;
	cbad_values_runs *runs;
	cbad_values_calib rate_cal, hour_cal;
	cbad_values_lcalib *level_cal; /* nvalues: the level steps' pooled calibration */
	double stream_hours[24], stream_hours_n;
	bool values_only; /* spike and step of the values only: no rate, hours or runs */
	uint32_t level_mask; /* value fields with a long-run level test */
};

void cbad_entity_set_level_mask(cbad_entity *e, uint32_t mask)
{
	e->level_mask = mask;
}

void cbad_entity_set_values_only(cbad_entity *e)
{
	e->values_only = true;
}

int cbad_entity_new(uint32_t max_entities, size_t nvalues, cbad_entity **ret)
{
	cbad_entity *e;

	if (max_entities == 0 || nvalues > CBAD_ENTITY_MAX_VALUES)
		return -EINVAL;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->nsets = (max_entities + CBAD_ENTITY_WAYS - 1) / CBAD_ENTITY_WAYS;
	e->max = e->nsets * CBAD_ENTITY_WAYS;
	e->nvalues = (uint32_t)nvalues;
	e->last = UINT32_MAX;
	e->level_mask = UINT32_MAX;
	e->sets = calloc((size_t)e->max, sizeof(*e->sets));
	if (!e->sets)
		goto out_free;
	cbad_values_calib_init(&e->rate_cal);
	cbad_values_calib_init(&e->hour_cal);
	if (nvalues) {
		e->level_cal = calloc(nvalues, sizeof(*e->level_cal));
		e->spike = calloc(nvalues, sizeof(*e->spike));
		e->shift = calloc(nvalues, sizeof(*e->shift));
		e->runs = calloc(nvalues, sizeof(*e->runs));
		if (!e->level_cal || !e->spike || !e->shift || !e->runs)
			goto out_free_values;
		for (size_t i = 0; i < nvalues; i++) {
			cbad_values_lcalib_init(&e->level_cal[i]);
			cbad_values_calib_init(&e->spike[i]);
			cbad_values_calib_init(&e->shift[i]);
			cbad_values_runs_init(&e->runs[i]);
		}
	}
	*ret = e;
	return 0;

out_free_values:
	free(e->runs);
	free(e->shift);
	free(e->spike);
	free(e->level_cal);
	free(e->sets);
out_free:
	free(e);
	return -ENOMEM;
}

void cbad_entity_free(cbad_entity *e)
{
	if (!e)
		return;
	free(e->models);
	free(e->levels);
	free(e->level_cal);
	free(e->runs);
	free(e->shift);
	free(e->spike);
	free(e->slab);
	free(e->sets);
	free(e);
}

size_t cbad_entity_count(const cbad_entity *e)
{
	return e ? e->used : 0;
}

size_t cbad_entity_memory(const cbad_entity *e)
{
	if (!e)
		return 0;
	return sizeof(*e) + (size_t)e->max * sizeof(*e->sets) + (size_t)e->cap * sizeof(ent) +
	       (size_t)e->nvalues * (sizeof(*e->level_cal) + 2 * sizeof(*e->spike) + sizeof(*e->runs)) +
	       (size_t)e->cap * e->nvalues * (sizeof(cbad_values_model) + sizeof(elevel));
}

const char *cbad_entity_last_label(const cbad_entity *e)
{
	return e->last == UINT32_MAX ? "" : e->last_label;
}

static int slab_grow(cbad_entity *e)
{
	uint32_t ncap = e->cap ? e->cap * 2 : 16;
	ent *ns;
	cbad_values_model *nm;
	elevel *nl;

	if (ncap > e->max)
		ncap = e->max;
	if (ncap <= e->cap)
		return -ENOMEM;
	ns = realloc(e->slab, (size_t)ncap * sizeof(*ns));
	if (!ns)
		return -ENOMEM;
	e->slab = ns;
	if (e->nvalues) {
		nm = realloc(e->models, (size_t)ncap * e->nvalues * sizeof(*nm));
		if (!nm)
			return -ENOMEM;
		e->models = nm;
		nl = realloc(e->levels, (size_t)ncap * e->nvalues * sizeof(*nl));
		if (!nl)
			return -ENOMEM;
		e->levels = nl;
	}
	e->cap = ncap;
	return 0;
}

static void ent_reset(cbad_entity *e, uint32_t idx, uint64_t key, uint64_t now)
{
	ent *x = &e->slab[idx];

	memset(x, 0, sizeof(*x));
	x->key = key;
	x->seen = now;
	x->ew.last = now;
	for (uint32_t v = 0; v < e->nvalues; v++) {
		cbad_values_model_init(&e->models[(size_t)idx * e->nvalues + v]);
		memset(&e->levels[(size_t)idx * e->nvalues + v], 0, sizeof(elevel));
	}
}

/* The entity's slab index: found, or (when learn) made, evicting its set's least recently seen
 * entity when the set is full. UINT32_MAX when it is new and not stored. */
static uint32_t ent_find(cbad_entity *e, uint64_t key, uint64_t now,
			 bool learn, bool *fresh)
{
	uint32_t *set = &e->sets[(size_t)(key % e->nsets) * CBAD_ENTITY_WAYS];
	int free_way = -1, lru_way = -1;
	uint32_t idx;

	*fresh = false;
	for (int w = 0; w < CBAD_ENTITY_WAYS; w++) {
		if (set[w] == 0) {
			if (free_way < 0)
				free_way = w;
			continue;
		}
		if (e->slab[set[w] - 1].key == key)
			return set[w] - 1;
		if (lru_way < 0 || e->slab[set[w] - 1].seen < e->slab[set[lru_way] - 1].seen)
			lru_way = w;
	}
	*fresh = true;
	if (!learn)
		return UINT32_MAX;
	if (free_way >= 0) {
		if (e->used == e->cap && slab_grow(e) < 0)
			return UINT32_MAX;
		idx = e->used++;
		set[free_way] = idx + 1;
	} else {
		idx = set[lru_way] - 1; /* evicted: its slot is reused */
	}
	ent_reset(e, idx, key, now);
	return idx;
}

/* p-value of acting at hour h for an entity with active-day counts c: each active hour lends
 * a linearly decreasing share of its weight to the 5 hours either side (habits drift by an
 * hour or two; a session far from every usual hour is what is strange), and the profile is
 * smoothed with the stream's. p: the total probability of the hours at most as likely as h. */
static double hour_p(const cbad_entity *e, const ent *x, int h, double *ret_pmin)
{
	double pe[24], ph, p = 0, n = 0, slots = 0, lo = 1.0, pmin = 0;

	for (int i = 0; i < 24; i++) {
		double c = HOUR_SPREAD * (double)x->hours[i];

		slots += x->hours[i];
		for (int d = 1; d < HOUR_SPREAD; d++)
			c += (double)(HOUR_SPREAD - d) *
			     ((double)x->hours[(i + d) % 24] + (double)x->hours[(i + 24 - d) % 24]);
		pe[i] = c;
		n += c;
	}
	for (int i = 0; i < 24; i++) {
		double ps = (e->stream_hours[i] + 1.0) / (e->stream_hours_n + 24.0);

		pe[i] = (slots * pe[i] / n + HOUR_SMOOTH * ps) / (slots + HOUR_SMOOTH);
	}
	ph = pe[h];
	for (int i = 0; i < 24; i++)
		if (pe[i] <= ph * (1.0 + 1e-12))
			p += pe[i];
	/* the p at the least likely hour, when asked (once a day: hour_pmin) */
	if (ret_pmin) {
		for (int i = 0; i < 24; i++)
			if (pe[i] < lo)
				lo = pe[i];
		for (int i = 0; i < 24; i++)
			if (pe[i] <= lo * (1.0 + 1e-12))
				pmin += pe[i];
		*ret_pmin = pmin > 1.0 ? 1.0 : pmin;
	}
	return p > 1.0 ? 1.0 : p;
}

/* Adds the entity's pending day to its hour profile once an event of a later day comes. */
static void hours_roll(ent *x, uint32_t day)
{
	if (day == x->day)
		return;
	if (x->mask) {
		for (int i = 0; i < 24; i++)
			if (x->hours[i] >= HOURS_CAP)
				for (int j = 0; j < 24; j++)
					x->hours[j] /= 2;
		for (int i = 0; i < 24; i++)
			if (x->mask >> i & 1)
				x->hours[i]++;
		if (x->days < UINT16_MAX)
			x->days++;
	}
	x->mask = 0;
	x->day = day;
	x->hmin = 0;
}

static double ew_decay(double w, uint64_t dt)
{
	return dt ? exp((double)dt * log1p(-1.0 / w)) : 1.0;
}

/* The entity's burst: its count in the last CBAD_ENTITY_RATE_SHORT events plus this one against
 * Poisson(window x its share before the last CBAD_ENTITY_RATE_BEFORE events, at least prior).
 * The share before the short window alone let a long burst raise its own baseline: a scanner
 * sending one event in eight for 1400 events was expected 3.7 times in 128 events by its end,
 * against 0.2 at its start. The recent share is kept in ew.s_aux.
 * A burst that has ended is no burst: when the entity's count over the last ENT_NOW events is
 * not itself in excess (p > 0.05), the statistic is the weaker of the two windows'. The
 * 128-event count holds a burst for ~100 events after its end, and every ordinary event of the
 * entity then was flagged (a password spray through the login resource: the resource's
 * legitimate logins after it). Only as a gate: the short count alone is a session's (a web
 * client's page and its assets: 4-6 of 32 events), and it cannot tell a scanner from one. Its
 * share is kept in ew.s_mid (cbad_rate_ew_learn's own 256-event share is overwritten). */
static double ent_burst(const ent *x, uint64_t now, double prior, double *ret_obs,
			double *ret_exp, double *ret_cn, double *ret_en)
{
	const double ws = CBAD_ENTITY_RATE_SHORT, wr = CBAD_ENTITY_RATE_BEFORE;
	const double wl = CBAD_RATE_LONG, wn = ENT_NOW;
	double cn, s1, s2;
	/* the events between the last occurrence and this one: its learn decayed once already */
	uint64_t dt = now > x->ew.last ? now - x->ew.last - 1 : 0;
	double cs = (double)x->ew.s_short * ew_decay(ws, dt) * ws;
	double cr = (double)x->ew.s_aux * ew_decay(wr, dt) * wr;
	double cl = (double)x->ew.s_long * ew_decay(wl, dt) * wl;
	double share = (cl - cr) / (wl - wr);

	if (share < prior)
		share = prior;
	cn = (double)x->ew.s_mid * ew_decay(wn, dt) * wn + 1.0;
	*ret_obs = cs + 1.0;
	*ret_exp = share * ws;
	s1 = -cbad_rate_log10_upper(*ret_obs, *ret_exp);
	s2 = -cbad_rate_log10_upper(cn, share * wn);
	/* the recent count is the statistic only when it is the weaker (ret_cn = 0 otherwise) */
	*ret_cn = s2 < ENT_NOW_STAT && s2 < s1 ? cn : 0;
	*ret_en = share * wn;
	return s2 >= ENT_NOW_STAT ? s1 : fmin(s1, s2);
}

/* log10 of the law of the burst's statistic: the weighted count's (cbad_rate_log10_upper_ew)
 * of the window that gave it, as the stream's burst (round 13). */
static double ent_burst_law(double obs, double ex, double cn, double en)
{
	if (cn > 0)
		return cbad_rate_log10_upper_ew(cn, en, ENT_NOW);
	return cbad_rate_log10_upper_ew(obs, ex, CBAD_ENTITY_RATE_SHORT);
}

/* Counts one occurrence of the entity at stream index now in its shares. */
static void ent_count(ent *x, uint64_t now)
{
	const double wr = CBAD_ENTITY_RATE_BEFORE;
	uint64_t dt = now > x->ew.last ? now - x->ew.last - 1 : 0;
	double r = (double)x->ew.s_aux * ew_decay(wr, dt);
	double q = (double)x->ew.s_mid * ew_decay(ENT_NOW, dt);

	/* before the EW shares learn: they move ew.last */
	x->ew.s_aux = (float)(r + (1.0 - r) / wr);
	cbad_rate_ew_learn(&x->ew, now, CBAD_ENTITY_RATE_SHORT, CBAD_RATE_LONG);
	x->ew.s_mid = (float)(q + (1.0 - q) / ENT_NOW); /* the ENT_NOW share, not the 256 one */
}

static double level_sigma(const elevel *l, double res)
{
	double s = sqrt((double)l->var);

	if (s < 0.5 * res)
		s = 0.5 * res;
	if (s < 1e-9 * (1.0 + fabs(l->mu)))
		s = 1e-9 * (1.0 + fabs(l->mu));
	return s;
}

/* The signed z of x against the entity's long-run level (res: the series' smallest step, a
 * floor of sigma); 0 before CBAD_ENTITY_MIN_OWN own values. */
static double level_z(const elevel *l, uint32_t n, double x, double res)
{
	if (n < CBAD_ENTITY_MIN_OWN)
		return 0.0;
	return (x - l->mu) / level_sigma(l, res);
}

/* The level step: the smaller of this and the previous value's |z| when both lie on the same
 * side of the long-run level, else 0. A lasting new level gives strange values in a row on one
 * side; a lone spike (the spike test's) gives 0 on the next value. */
static double level_step(const elevel *l, double z)
{
	double zp = (double)l->zprev;

	return z * zp > 0 ? fmin(fabs(z), fabs(zp)) : 0.0;
}

/* Learns x into the level (n: the entity's values learned before it). */
static void level_learn(elevel *l, uint32_t n, double x, double z)
{
	double a, r;

	l->zprev = (float)z;
	if (n == 0) {
		l->mu = x;
		l->var = 0;
		return;
	}
	a = 1.0 / (double)(n + 1 < CBAD_ENTITY_LEVEL_MEMORY ? n + 1 : CBAD_ENTITY_LEVEL_MEMORY);
	r = x - l->mu;
	/* Huber clip: one excursion barely moves the level, a lasting one raises the variance by
	 * about (1 + 15a) a value and is absorbed */
	if (n >= CBAD_ENTITY_MIN_OWN) {
		r = cbad_huber_clip(r, LEVEL_CLIP * level_sigma(l, 0.0));
	}
	l->mu += a * r;
	l->var = (float)((1.0 - a) * ((double)l->var + a * r * r));
}

static double stat_of_p(double p)
{
	return p >= 1.0 ? 0.0 : -log10(p);
}

/* The smallest calibrated p the entity's hour test could give today (pmin: uncalibrated, at its
 * least likely hour, asked of hour_p only when x->hmin is 0), cached in x->hmin until its next
 * day (tmp entities are never judged). */
static double hour_pmin(cbad_entity *e, ent *x, double pmin)
{
	if (x->hmin == 0) {
		double q = ceil(HMIN_STEPS * stat_of_p(cbad_values_calib_p_logp(&e->hour_cal,
									   stat_of_p(pmin))));

		x->hmin = (uint8_t)(q >= 254.0 ? 255.0 : q + 1.0);
	}
	return exp(-(double)(x->hmin - 1) * (2.302585092994046 / HMIN_STEPS));
}

size_t cbad_entity_observe(cbad_entity *e, uint64_t key, const char *label, size_t label_len,
			   const double *values, int64_t hour_index, bool judge_hour, uint64_t now,
			   bool learn, cbad_entity_signal *out, size_t max)
{
	int hour = hour_index >= 0 ? (int)(hour_index % 24) : -1;
	uint32_t day = hour_index >= 0 ? (uint32_t)(hour_index / 24) : 0;
	const double prior = 1.0 / CBAD_RATE_LONG;
	bool fresh;
	/* an entity is stored and counted even when the event is not learned: a burst of events
	 * the detector finds strange (a new source failing logins) must still add up */
	uint32_t idx = ent_find(e, key, now, true, &fresh);
	size_t k = 0;
	ent tmp, *x;
	cbad_values_model *models = NULL;
	double obs, ex, cn = 0, en = 0, rstat, rp = 1.0, hstat = 0, hp = 1.0, hpmin = 1.0;
	bool hour_ok;
	/* per value: judged?, its statistics and calibrated p-values */
	bool judged[CBAD_ENTITY_MAX_VALUES] = {false};
	double lz[CBAD_ENTITY_MAX_VALUES], ls[CBAD_ENTITY_MAX_VALUES], lp[CBAD_ENTITY_MAX_VALUES];
	double zs[CBAD_ENTITY_MAX_VALUES], ss[CBAD_ENTITY_MAX_VALUES];
	double zp[CBAD_ENTITY_MAX_VALUES], sp[CBAD_ENTITY_MAX_VALUES];

	e->last = idx;
	{
		size_t ln = label_len < CBAD_ENTITY_LABEL_MAX - 1 ? label_len : CBAD_ENTITY_LABEL_MAX - 1;

		if (label && ln)
			memcpy(e->last_label, label, ln);
		e->last_label[ln] = '\0';
	}
	if (idx == UINT32_MAX) {
		memset(&tmp, 0, sizeof(tmp));
		tmp.ew.last = now;
		x = &tmp;
	} else {
		/* a new day: the entity's previous active day joins its profile (that day's
		 * events were learned already; this one is not, yet) */
		if (hour >= 0)
			hours_roll(&e->slab[idx], day);
		x = &e->slab[idx];
		if (e->nvalues)
			models = &e->models[(size_t)idx * e->nvalues];
	}

	/* rate: the entity's share of the stream's recent events (a values-only table has none) */
	rstat = 0;
	if (!e->values_only)
		rstat = ent_burst(x, now, prior, &obs, &ex, &cn, &en);
	if (!e->values_only && cbad_values_calib_ready(&e->rate_cal)) {
		rp = cbad_values_calib_p_logp(&e->rate_cal, rstat);
		/* never below its count's law (the stream burst's rule): above the mean that tail
		 * is below the plain Poisson one, 10^-rstat, so it is computed only when it can
		 * bound */
		if (!((cn > 0 ? cn > en : obs > ex) && rp >= pow(10.0, -rstat)))
			rp = fmax(rp, pow(10.0, ent_burst_law(obs, ex, cn, en)));
		if (k < max) {
			cbad_entity_signal *s = &out[k++];

			memset(s, 0, sizeof(*s));
			s->what = CBAD_ENTITY_RATE;
			s->value_index = 0;
			s->stat = rstat;
			s->p_value = rp;
			s->value = obs;
			s->base_low = 0;
			s->base_median = ex;
			s->base_high = ex + 2.33 * sqrt(ex) + 1.0;
		}
	}

	/* hour of day against the entity's profile of earlier days */
	hour_ok = !e->values_only && judge_hour && hour >= 0 && x->days >= CBAD_ENTITY_MIN_DAYS &&
		  e->stream_hours_n >= HOUR_STREAM_MIN;
	if (hour_ok) {
		hstat = stat_of_p(hour_p(e, x, hour, x->hmin ? NULL : &hpmin));
		if (cbad_values_calib_ready(&e->hour_cal)) {
			hp = cbad_values_calib_p_logp(&e->hour_cal, hstat);
			if (k < max) {
				cbad_entity_signal *s = &out[k++];
				int lo = -1, hi = -1, best = 0;

				memset(s, 0, sizeof(*s));
				s->what = CBAD_ENTITY_HOUR;
				s->value_index = 0;
				s->stat = hstat;
				s->p_value = hp;
				s->p_min = fmin(hour_pmin(e, x, hpmin), hp);
				s->value = hour;
				/* the entity's usual hours: first and last active hour, busiest */
				for (int i = 0; i < 24; i++) {
					if (x->hours[i] == 0)
						continue;
					if (lo < 0)
						lo = i;
					hi = i;
					if (x->hours[i] > x->hours[best])
						best = i;
				}
				s->base_low = lo;
				s->base_median = best;
				s->base_high = hi;
			}
		}
	}

	/* values against the entity's own models */
	for (uint32_t v = 0; models && v < e->nvalues; v++) {
		cbad_values_model *m = &models[v];
		cbad_values_judgement j;
		double x1 = values[v];

		if (!isfinite(x1) || m->n < CBAD_ENTITY_MIN_OWN)
			continue;
		/* the entity's long-run level: a lasting step away from it */
		lz[v] = ls[v] = 0;
		lp[v] = 1.0;
		if (e->level_mask >> v & 1) {
			const elevel *l = &e->levels[(size_t)idx * e->nvalues + v];

			lz[v] = level_z(l, m->n, x1, (double)m->res);
			ls[v] = level_step(l, lz[v]);
			if (e->level_cal[v].seen >= CBAD_LEVEL_MIN_CAL) {
				/* a value on the other side of the level than the previous one is no
				 * step (stat 0): p 1 without summing the calibrator's bins (about half
				 * of the tests; the sum gives 1 to rounding, and a p that large is
				 * neither carried nor strange) */
				lp[v] = ls[v] > 0 ? cbad_values_lcalib_p(&e->level_cal[v], ls[v]) : 1.0;
				if (k < max) {
					cbad_entity_signal *s = &out[k++];
					double sd = level_sigma(l, 0.0);

					memset(s, 0, sizeof(*s));
					s->what = CBAD_ENTITY_LEVEL;
					s->value_index = v;
					s->stat = ls[v];
					s->p_value = lp[v];
					s->value = x1;
					s->base_low = l->mu - 2 * sd;
					s->base_median = l->mu;
					s->base_high = l->mu + 2 * sd;
				}
			}
		}
		cbad_values_model_judge(m, x1, &j);
		judged[v] = true;
		zs[v] = j.z;
		ss[v] = j.shift;
		zp[v] = sp[v] = 1.0;
		if (cbad_values_calib_ready(&e->spike[v])) {
			zp[v] = cbad_values_calib_p(&e->spike[v], j.z);
			if (k < max) {
				cbad_entity_signal *s = &out[k++];

				memset(s, 0, sizeof(*s));
				s->what = CBAD_ENTITY_SPIKE;
				s->value_index = v;
				s->stat = j.z;
				s->p_value = zp[v];
				s->value = x1;
				s->base_low = j.pred - 2 * j.pred_sigma;
				s->base_median = j.pred;
				s->base_high = j.pred + 2 * j.pred_sigma;
			}
		}
		if (cbad_values_calib_ready(&e->shift[v])) {
			sp[v] = cbad_values_calib_p(&e->shift[v], j.shift);
			if (k < max) {
				cbad_entity_signal *s = &out[k++];

				memset(s, 0, sizeof(*s));
				s->what = CBAD_ENTITY_SHIFT;
				s->value_index = v;
				s->stat = j.shift;
				s->p_value = sp[v];
				s->value = j.fast;
				s->base_low = j.mean - 2 * j.sigma;
				s->base_median = j.mean;
				s->base_high = j.mean + 2 * j.sigma;
			}
		}
		/* an entity whose value never changed (res == 0) repeating it is its normal */
		if (!e->values_only && j.run >= 3 && m->res > 0 && cbad_values_runs_testable(&e->runs[v]) && k < max) {
			cbad_entity_signal *s = &out[k++];

			memset(s, 0, sizeof(*s));
			s->what = CBAD_ENTITY_FLAT;
			s->value_index = v;
			s->p_value = cbad_values_runs_p(&e->runs[v], j.run);
			s->stat = stat_of_p(s->p_value);
			s->value = x1;
			s->run = j.run;
			s->base_low = 1;
			s->base_median = 1;
			s->base_high = 1;
		}
	}

	if (idx == UINT32_MAX)
		return k;
	if (!learn) {
		if (!e->values_only)
			ent_count(x, now);
		x->seen = now;
		return k;
	}

	/* learn: the pooled calibrators (strange statistics are not taken as normal), then the
	 * entity's own models */
	if (!e->values_only)
		cbad_rate_calib_learn(&e->rate_cal, rstat, rp);
	/* once per (entity, day, hour) slot: a busy account's hundreds of events an hour would
	 * otherwise fill the pooled window with its own ordinary hours */
	if (hour_ok && !(x->mask >> hour & 1))
		cbad_values_calib_learn(&e->hour_cal, hstat, hp);
	for (uint32_t v = 0; models && v < e->nvalues; v++) {
		cbad_values_model *m = &models[v];
		double x1 = values[v];
		uint32_t prev_run, run;

		if (!isfinite(x1))
			continue;
		if (judged[v]) {
			cbad_values_calib_learn(&e->spike[v], zs[v], zp[v]);
			cbad_values_calib_learn(&e->shift[v], ss[v], sp[v]);
			if (e->level_mask >> v & 1) {
				/* the level calibrator's guard (p < CBAD_LCALIB_SKIP, within its budget),
				 * and strange steps of one entity in a row: a lasting shift of one entity
				 * must not fill the pooled tail within a few values (host steps: p 1e-5 ->
				 * 1e-3 after ~13 values), while an isolated strange value of a heavy
				 * tailed field is learned as usual (leaving out every p < 0.002 thinned
				 * the tail: payments 154 false flags) */
				bool strange = lp[v] < LEVEL_STRANGE;
				bool again = strange && (x->lstrange >> v & 1);

				cbad_values_lcalib_learn_clip(&e->level_cal[v], ls[v], again ? 0.0 : lp[v],
							      false);
				x->lstrange = (uint8_t)((x->lstrange & ~(1u << v)) | (strange ? 1u << v : 0u));
			}
		}
		if (e->level_mask >> v & 1)
			level_learn(&e->levels[(size_t)idx * e->nvalues + v], m->n, x1,
				    judged[v] ? lz[v] : 0.0);
		prev_run = m->n > 0 ? m->run : 0;
		run = (m->n > 0 && x1 == m->last) ? prev_run + 1 : 1;
		if (m->n > 0 && !e->values_only)
			cbad_values_runs_learn(&e->runs[v], prev_run, run);
		cbad_values_model_learn(m, x1);
	}
	if (!e->values_only)
		ent_count(x, now);
	if (hour >= 0) {
		if (x->mask == 0)
			x->day = day;
		x->mask |= 1u << hour;
		e->stream_hours[hour] += 1.0;
		e->stream_hours_n += 1.0;
	}
	if (x->n < UINT32_MAX)
		x->n++;
	x->seen = now;
	return k;
}

void cbad_entity_save(const cbad_entity *e, cbad_writer *w)
{
	cbad_values_calib fresh;
	cbad_values_runs fresh_runs;

	cbad_w_u32(w, e->max);
	cbad_w_u32(w, e->nvalues);
	/* the format holds CBAD_ENTITY_MAX_VALUES of each: past nvalues, new ones */
	cbad_values_calib_init(&fresh);
	cbad_values_runs_init(&fresh_runs);
	for (uint32_t v = 0; v < CBAD_ENTITY_MAX_VALUES; v++) {
		cbad_values_calib_save(v < e->nvalues ? &e->spike[v] : &fresh, w);
		cbad_values_calib_save(v < e->nvalues ? &e->shift[v] : &fresh, w);
		cbad_values_runs_save(v < e->nvalues ? &e->runs[v] : &fresh_runs, w);
	}
	cbad_values_calib_save(&e->rate_cal, w);
	cbad_values_calib_save(&e->hour_cal, w);
	for (uint32_t v = 0; v < e->nvalues; v++)
		cbad_values_lcalib_save(&e->level_cal[v], w);
	for (int i = 0; i < 24; i++)
		cbad_w_f64(w, e->stream_hours[i]);
	cbad_w_f64(w, e->stream_hours_n);
	cbad_w_u32(w, e->used);
	for (uint32_t s = 0; s < e->max; s++) {
		const ent *x;

		if (e->sets[s] == 0)
			continue;
		x = &e->slab[e->sets[s] - 1];
		cbad_w_u32(w, s);
		cbad_w_u64(w, x->key);
		cbad_w_u64(w, x->seen);
		cbad_w_u64(w, x->ew.last);
		cbad_w_f64(w, x->ew.s_short);
		cbad_w_f64(w, x->ew.s_mid);
		cbad_w_f64(w, x->ew.s_long);
		cbad_w_f64(w, x->ew.s_aux);
		for (int i = 0; i < 24; i++)
			cbad_w_u32(w, x->hours[i]);
		cbad_w_u32(w, x->days);
		cbad_w_u8(w, x->lstrange);
		cbad_w_u8(w, x->hmin);
		cbad_w_u32(w, x->mask);
		cbad_w_u32(w, x->day);
		cbad_w_u32(w, x->n);
		for (uint32_t v = 0; v < e->nvalues; v++) {
			const elevel *l = &e->levels[(size_t)(e->sets[s] - 1) * e->nvalues + v];

			cbad_values_model_save(&e->models[(size_t)(e->sets[s] - 1) * e->nvalues + v], w);
			cbad_w_f64(w, l->mu);
			cbad_w_bytes(w, &l->var, sizeof(l->var));
			cbad_w_bytes(w, &l->zprev, sizeof(l->zprev));
		}
	}
}

int cbad_entity_load(cbad_entity *e, cbad_reader *r)
{
	uint32_t max = cbad_r_u32(r), nv = cbad_r_u32(r), used;

	if (r->failed || max != e->max || nv != e->nvalues || e->used != 0)
		return -EINVAL;
	for (uint32_t v = 0; v < CBAD_ENTITY_MAX_VALUES; v++) {
		cbad_values_calib spare;
		cbad_values_runs spare_runs;
		bool own = v < e->nvalues;

		/* past nvalues: read and not kept (nothing reads them) */
		if (cbad_values_calib_load(own ? &e->spike[v] : &spare, r) < 0 ||
		    cbad_values_calib_load(own ? &e->shift[v] : &spare, r) < 0)
			return -EINVAL;
		cbad_values_runs_load(own ? &e->runs[v] : &spare_runs, r);
	}
	if (cbad_values_calib_load(&e->rate_cal, r) < 0 ||
	    cbad_values_calib_load(&e->hour_cal, r) < 0)
		return -EINVAL;
	for (uint32_t v = 0; v < e->nvalues; v++)
		if (cbad_values_lcalib_load(&e->level_cal[v], r) < 0)
			return -EINVAL;
	for (int i = 0; i < 24; i++)
		e->stream_hours[i] = cbad_r_f64(r);
	e->stream_hours_n = cbad_r_f64(r);
	used = cbad_r_count(r, e->max);
	if (r->failed)
		return -EINVAL;
	while (e->cap < used)
		if (slab_grow(e) < 0)
			return -ENOMEM;
	for (uint32_t i = 0; i < used; i++) {
		uint32_t s = cbad_r_count(r, e->max - 1);
		ent *x;

		if (r->failed || e->sets[s] != 0)
			return -EINVAL;
		e->sets[s] = i + 1;
		e->used = i + 1;
		x = &e->slab[i];
		memset(x, 0, sizeof(*x));
		x->key = cbad_r_u64(r);
		x->seen = cbad_r_u64(r);
		x->ew.last = cbad_r_u64(r);
		x->ew.s_short = (float)cbad_r_f64(r);
		x->ew.s_mid = (float)cbad_r_f64(r);
		x->ew.s_long = (float)cbad_r_f64(r);
		x->ew.s_aux = (float)cbad_r_f64(r);
		for (int h = 0; h < 24; h++)
			x->hours[h] = (uint8_t)cbad_r_count(r, HOURS_CAP);
		x->days = (uint16_t)cbad_r_count(r, UINT16_MAX);
		x->lstrange = (uint8_t)(cbad_r_u8(r) & ((1u << CBAD_ENTITY_MAX_VALUES) - 1));
		x->hmin = cbad_r_u8(r);
		x->mask = cbad_r_count(r, (1u << 24) - 1);
		x->day = cbad_r_u32(r);
		x->n = cbad_r_u32(r);
		for (uint32_t v = 0; v < e->nvalues; v++) {
			elevel *l = &e->levels[(size_t)i * e->nvalues + v];

			cbad_values_model_load(&e->models[(size_t)i * e->nvalues + v], r);
			l->mu = cbad_r_f64(r);
			cbad_r_bytes(r, &l->var, sizeof(l->var));
			cbad_r_bytes(r, &l->zprev, sizeof(l->zprev));
			if (!isfinite(l->mu) || !(l->var >= 0 && isfinite(l->var)) || !isfinite(l->zprev))
				return -EINVAL;
		}
		if (r->failed || (e->sets[s] != 0 && s / CBAD_ENTITY_WAYS != x->key % e->nsets))
			return -EINVAL;
	}
	return r->failed ? -EINVAL : 0;
}
