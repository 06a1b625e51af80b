/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_rate: bursts and drops in how often a kind of event occurs (internal to cbad). */
#include "services/detector/cbad/cbad_rate.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "services/detector/cbad/cbad_values.h"

#define NKINDS (CBAD_RATE_SETS * CBAD_RATE_WAYS)
#define MIN_EVENTS 256      /* events before the channel reports */
#define DROP_MIN_EXPECTED 8 /* a drop is testable when >= 8 occurrences are expected */
#define LN10 2.302585092994046

typedef struct rate_kind {
	uint64_t key; /* 0 = empty slot */
	uint64_t seen; /* stream index of the last occurrence */
	cbad_rate_ew ew;
} rate_kind;

struct cbad_rate {
	uint64_t t; /* events seen */
	uint32_t rr; /* round robin position of the drop test */
	cbad_values_calib burst_cal, drop_cal;
	rate_kind kinds[NKINDS];
	/* label text per slot, NULL in an unlabeled table: only drops need a stored label (a
	 * burst's kind is in the event), and a caller that can rebuild it from the key saves
	 * 48 bytes a slot */
	char (*labels)[CBAD_RATE_LABEL_MAX];
};

/* ---- Poisson tails ---- */

/* ln of the regularised lower gamma P(a, x) by its series (good for x < a + 1). */
static double ln_gamma_p_series(double a, double x)
{
	double sum = 1.0 / a, term = sum, ap = a;

	for (int i = 0; i < 1000; i++) {
		ap += 1.0;
		term *= x / ap;
		sum += term;
		if (term < sum * 1e-15)
			break;
	}
	return log(sum) - x + a * log(x) - lgamma(a);
}

/* ln of the regularised upper gamma Q(a, x) by its continued fraction (x >= a + 1). */
static double ln_gamma_q_cf(double a, double x)
{
	const double tiny = 1e-300;
	double b = x + 1.0 - a, c = 1.0 / tiny, d = 1.0 / b, h = d;

	for (int i = 1; i < 1000; i++) {
		double an = -i * (i - a), del;

		b += 2.0;
		d = an * d + b;
		if (fabs(d) < tiny)
			d = tiny;
		c = b + an / c;
		if (fabs(c) < tiny)
			c = tiny;
		d = 1.0 / d;
		del = d * c;
		h *= del;
		if (fabs(del - 1.0) < 1e-15)
			break;
	}
	return log(h) - x + a * log(x) - lgamma(a);
}

/* ln P(a, x) for any a > 0, x >= 0. */
static double ln_gamma_p(double a, double x)
{
	if (x <= 0)
		return -INFINITY;
	if (x < a + 1.0)
		return ln_gamma_p_series(a, x);
	return log1p(-exp(ln_gamma_q_cf(a, x)));
}

/* ln Q(a, x). */
static double ln_gamma_q(double a, double x)
{
	if (x <= 0)
		return 0;
	if (x < a + 1.0)
		return log1p(-exp(ln_gamma_p_series(a, x)));
	return ln_gamma_q_cf(a, x);
}

double cbad_rate_log10_upper(double c, double lambda)
{
	double v;

	/* P(X >= c) = P(c, lambda) for the continuous extension */
	if (!(c > 0) || !(lambda >= 0) || !isfinite(c) || !isfinite(lambda))
		return 0;
	if (lambda <= 0)
		return -300;
	v = ln_gamma_p(c, lambda) / LN10;
	if (v > 0)
		v = 0;
	return v < -300 ? -300 : v;
}

double cbad_rate_log10_lower(double c, double lambda)
{
	double v;

	/* P(X <= c) = Q(c + 1, lambda) */
	if (!(c >= 0) || !(lambda > 0) || !isfinite(c) || !isfinite(lambda))
		return 0;
	v = ln_gamma_q(c + 1.0, lambda) / LN10;
	if (v > 0)
		v = 0;
	return v < -300 ? -300 : v;
}

double cbad_rate_log10_upper_ew(double c, double lambda, double w)
{
	/* weights (1 - 1/w)^i sum to w and their squares to w / (2 - 1/w): the count has mean
	 * lambda and variance lambda / (2 - 1/w), so it is read as a Poisson count of
	 * (2 - 1/w) times as many events (same mean and variance); for a Bernoulli kind the
	 * variance is lower still, so this tail is never thinner than the count's own */
	double k = 2.0 - 1.0 / w;

	return cbad_rate_log10_upper(c * k, lambda * k);
}

double cbad_rate_log10_lower_ew(double c, double lambda, double w)
{
	double k = 2.0 - 1.0 / w;

	return cbad_rate_log10_lower(c * k, lambda * k);
}

/* ---- EW shares ---- */

static double decay(double w, uint64_t dt)
{
	if (dt == 0)
		return 1.0;
	if (dt > 1000000)
		return 0.0;
	return exp((double)dt * log1p(-1.0 / w));
}

/* The decays of one kind's three shares since its last update, each computed once (the burst
 * test and the learn of an event need the same ones: six exp and log1p were a third of a
 * rate test). */
typedef struct ew_decays {
	double s, m, l;
	double a; /* of the lasting share (s_aux), in the kinds table only */
} ew_decays;

static ew_decays decays_dt(uint64_t dt, double w_short, double w_long)
{
	ew_decays d = {1.0, 1.0, 1.0, 1.0};

	if (dt > 0) {
		d.s = decay(w_short, dt);
		d.m = decay(CBAD_RATE_MID, dt);
		d.l = decay(w_long, dt);
	}
	return d;
}

/* A kind's shares at stream index now, before this event: decayed by the events between the
 * last occurrence and this one only. Learning an occurrence decays once more
 * (s + (1 - s) / w), so decaying by now - last as well counted every step twice for a kind
 * seen at consecutive events: a kind making up every event read as a share of 0.508. The
 * public helpers (an entity's shares in cbad_entity) decay the same way. */
static ew_decays decays_idle(const cbad_rate_ew *e, uint64_t now, double w_short,
			     double w_long)
{
	return decays_dt(now > e->last ? now - e->last - 1 : 0, w_short, w_long);
}

/* The total weight an EW over w events has given the stream's first t events: 1 - (1 - 1/w)^t.
 * Every share starts at 0 with the stream, so for the first few w events it is the mean of the
 * events seen times this weight; dividing by it (as Adam corrects its moments) gives the mean
 * itself. A kind first seen mid-stream is still divided by the stream's weight, not its own:
 * its share was truly 0 before it appeared. */
static double warm_weight(double w, uint64_t t)
{
	if (t == 0)
		return 1.0;
	if ((double)t > 64.0 * w)
		return 1.0;
	return -expm1((double)t * log1p(-1.0 / w));
}

/* The warm-up weights of the burst test's windows at stream age t. */
typedef struct ew_warm {
	double s, l;
	double a; /* of the lasting share, in the kinds table only */
} ew_warm;

static ew_warm warm(uint64_t t, double w_short, double w_long)
{
	ew_warm m = {warm_weight(w_short, t), warm_weight(w_long, t), 1.0};

	return m;
}

/* The kind's share before the recent window: the long count less the recent one. Compared with
 * the long share itself, a burst does not raise its own baseline while it lasts (a kind going
 * from 0 to 5 in 32 events would otherwise expect 0.16 of them after 20 events, not 0.008).
 * Both counts are bias-corrected for the stream's age (warm_weight): uncorrected, the only
 * template of a young stream looked like a slow burst for its first 4096 events. */
static double share_before(const cbad_rate_ew *e, const ew_decays *d, const ew_warm *m,
			   double w_short, double w_long, double prior)
{
	double cl = (double)e->s_long * d->l * w_long / m->l;
	double cs = (double)e->s_short * d->s * w_short / m->s;
	double share = (cl - cs) / (w_long - w_short);

	return share < prior ? prior : share;
}

double cbad_rate_ew_burst(const cbad_rate_ew *e, uint64_t now, double w_short, double w_long,
			  double prior, double *ret_observed, double *ret_expected)
{
	ew_decays d = decays_idle(e, now, w_short, w_long);
	ew_warm m = warm(now, w_short, w_long);
	double obs = (double)e->s_short * d.s * w_short + 1.0;
	double share = share_before(e, &d, &m, w_short, w_long, prior);
	double lam;

	lam = share * w_short;
	*ret_observed = obs;
	*ret_expected = lam;
	return -cbad_rate_log10_upper(obs, lam);
}

/* The kinds table's baseline: the higher of the share before the recent window over the long
 * memory (share_before) and over the last CBAD_RATE_LASTING events only (s_aux). A burst is
 * short; a kind whose excess has lasted that long has changed the stream's mix (a field
 * renamed for good, its templates replaced by new ones). Judged against the long memory alone,
 * a new template making up a tenth of the events read as a burst for ~1500 events and an
 * old one as a drop for ~6000, and those statistics, learned once the calibrators' skip
 * budget was spent, raised the rate kind's bar for the bursts that followed. An excess over
 * CBAD_RATE_LASTING events still reads as a burst until it has lasted a good part of them
 * (a burst of one event in eight over 1400 events: expected 0.5 of 32 at its end). */
static double share_lasting(const cbad_rate_ew *e, const ew_decays *d, const ew_warm *m,
			    double w_short, double share)
{
	const double wa = CBAD_RATE_LASTING;
	double ca = (double)e->s_aux * d->a * wa / m->a;
	double cs = (double)e->s_short * d->s * w_short / m->s;
	double sa = (ca - cs) / (wa - w_short);

	return sa > share ? sa : share;
}

static double ew_excess(const cbad_rate_ew *e, const ew_decays *d, const ew_warm *m,
			double w_short, double w_long, double prior, bool lasting,
			double *ret_observed, double *ret_expected)
{
	double obs = (double)e->s_short * d->s * w_short + 1.0;
	double share = share_before(e, d, m, w_short, w_long, prior);

	if (lasting)
		share = share_lasting(e, d, m, w_short, share);
	*ret_observed = obs;
	*ret_expected = share * w_short;
	return (obs - *ret_expected) / sqrt(*ret_expected + 0.25);
}

double cbad_rate_ew_excess(const cbad_rate_ew *e, uint64_t now, double w_short, double w_long,
			   double prior, double *ret_observed, double *ret_expected)
{
	ew_decays d = decays_idle(e, now, w_short, w_long);
	ew_warm m = warm(now, w_short, w_long);

	return ew_excess(e, &d, &m, w_short, w_long, prior, false, ret_observed, ret_expected);
}

static void ew_learn(cbad_rate_ew *e, const ew_decays *d, uint64_t now, double w_short,
		     double w_long)
{
	double s = (double)e->s_short * d->s;
	double l = (double)e->s_long * d->l;
	double m = (double)e->s_mid * d->m;

	e->s_short = (float)(s + (1.0 - s) / w_short);
	e->s_mid = (float)(m + (1.0 - m) / CBAD_RATE_MID);
	e->s_long = (float)(l + (1.0 - l) / w_long);
	e->last = now;
}

void cbad_rate_ew_learn(cbad_rate_ew *e, uint64_t now, double w_short, double w_long)
{
	ew_decays d = decays_idle(e, now, w_short, w_long);

	ew_learn(e, &d, now, w_short, w_long);
}

void cbad_rate_calib_learn(cbad_values_calib *c, double stat, double p)
{
	/* no budget for a lasting change (cbad_values_calib_learn learns strange statistics once
	 * 2 % of recent ones were left out): the statistic is a count against the kind's own EW
	 * share, so a lasting change lowers the statistic itself as the share catches up, while a
	 * burst of 100 events is judged against the calibration from before it to its end */
	if (p >= CBAD_CALIB_SKIP)
		cbad_values_calib_add(c, stat);
}

/* ---- the kinds table ---- */

static int rate_new(bool labeled, cbad_rate **ret)
{
	cbad_rate *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	if (labeled) {
		r->labels = calloc(NKINDS, sizeof(*r->labels));
		if (!r->labels) {
			free(r);
			return -ENOMEM;
		}
	}
	cbad_values_calib_init(&r->burst_cal);
	cbad_values_calib_init(&r->drop_cal);
	*ret = r;
	return 0;
}

int cbad_rate_new(cbad_rate **ret)
{
	return rate_new(true, ret);
}

int cbad_rate_new_unlabeled(cbad_rate **ret)
{
	return rate_new(false, ret);
}

void cbad_rate_free(cbad_rate *r)
{
	if (!r)
		return;
	free(r->labels);
	free(r);
}

size_t cbad_rate_memory(const cbad_rate *r)
{
	if (!r)
		return 0;
	return sizeof(*r) + (r->labels ? NKINDS * sizeof(*r->labels) : 0);
}

/* The kind's slot, or a free / least recently seen slot of its set for it (new = true). */
static rate_kind *kind_slot(cbad_rate *r, uint64_t key, bool *new_kind)
{
	size_t set = (size_t)(key % CBAD_RATE_SETS) * CBAD_RATE_WAYS;
	rate_kind *victim = NULL;

	for (size_t i = 0; i < CBAD_RATE_WAYS; i++) {
		rate_kind *k = &r->kinds[set + i];

		if (k->key == key) {
			*new_kind = false;
			return k;
		}
		if (k->key == 0) {
			if (!victim || victim->key != 0)
				victim = k;
		} else if (!victim || (victim->key != 0 && k->seen < victim->seen)) {
			victim = k;
		}
	}
	*new_kind = true;
	return victim;
}

/* Copies a key's label, truncated to CBAD_RATE_LABEL_MAX - 1 bytes. */
static void copy_label(char *dst, const char *src, size_t len)
{
	size_t n = len < CBAD_RATE_LABEL_MAX - 1 ? len : CBAD_RATE_LABEL_MAX - 1;

	if (src && n)
		memcpy(dst, src, n);
	dst[n] = '\0';
}

static void verdict_clear(cbad_rate_verdict *v)
{
	memset(v, 0, sizeof(*v));
	v->p_value = 1.0;
}

void cbad_rate_observe(cbad_rate *r, const cbad_rate_key *keys, size_t nkeys, bool learn,
		       cbad_rate_verdict *burst, cbad_rate_verdict *drop)
{
	const double prior = 1.0 / CBAD_RATE_LONG;
	double best = 0, dstat = 0, pc;
	bool bk = false;
	size_t bi = 0;
	double bobs = 0, bexp = 0;
	rate_kind *dk;
	bool ready = r->t >= MIN_EVENTS;
	bool deligible = false; /* the drop test applies to this event's kind in turn */
	ew_warm wm = warm(r->t, CBAD_RATE_SHORT, CBAD_RATE_LONG);

	wm.a = warm_weight(CBAD_RATE_LASTING, r->t);

	verdict_clear(burst);
	verdict_clear(drop);
	for (size_t i = 0; i < nkeys; i++) {
		uint64_t key = keys[i].key ? keys[i].key : 1;
		bool fresh;
		rate_kind *k = kind_slot(r, key, &fresh);
		double obs, ex, s;
		ew_decays dk_;

		if (fresh) {
			memset(k, 0, sizeof(*k));
			k->key = key;
			k->ew.last = r->t;
			if (r->labels)
				copy_label(r->labels[k - r->kinds], keys[i].label, keys[i].label_len);
		}
		/* a cheap standardised excess picks the kind; its exact tail is computed once */
		dk_ = decays_idle(&k->ew, r->t, CBAD_RATE_SHORT, CBAD_RATE_LONG);
		if (r->t > k->ew.last + 1)
			dk_.a = decay(CBAD_RATE_LASTING, r->t - k->ew.last - 1);
		s = ew_excess(&k->ew, &dk_, &wm, CBAD_RATE_SHORT, CBAD_RATE_LONG, prior, true,
			      &obs, &ex);
		if (!bk || s > best) {
			best = s;
			bk = true;
			bi = i;
			bobs = obs;
			bexp = ex;
		}
		/* counted even when not learned: a burst of strange events must add up */
		{
			double a = (double)k->ew.s_aux * dk_.a;

			k->ew.s_aux = (float)(a + (1.0 - a) / CBAD_RATE_LASTING);
		}
		ew_learn(&k->ew, &dk_, r->t, CBAD_RATE_SHORT, CBAD_RATE_LONG);
		k->seen = r->t;
	}
	if (bk)
		best = -cbad_rate_log10_upper(bobs, bexp);
	if (ready && cbad_values_calib_ready(&r->burst_cal) && bk) {
		burst->valid = true;
		burst->stat = best;
		/* the calibration corrects the count's law for over-dispersion; it never makes a
		 * count that the law itself finds ordinary into a rare one (a calibrator whose
		 * history is one constant count ranks any other count as a record). The law's tail
		 * (another incomplete gamma, ~1500 instructions) is computed only when it can
		 * matter: above its mean the weighted count's tail is below the plain Poisson one,
		 * 10^-best, so a calibrated p at least that large stands */
		pc = cbad_values_calib_p_logp(&r->burst_cal, best);
		if (!(bobs > bexp && pc >= pow(10.0, -best)))
			pc = fmax(pc, pow(10.0, cbad_rate_log10_upper_ew(bobs, bexp, CBAD_RATE_SHORT)));
		burst->p_value = pc;
		burst->observed = bobs;
		burst->expected = bexp;
		burst->window = CBAD_RATE_SHORT;
		burst->base_low = 0;
		burst->base_high = bexp + 2.33 * sqrt(bexp) + 1.0;
		burst->key = keys[bi].key ? keys[bi].key : 1;
		copy_label(burst->label, keys[bi].label, keys[bi].label_len);
	}

	/* drop: one remembered kind per event, in turn */
	dk = &r->kinds[r->rr % NKINDS];
	if (dk->key != 0) {
		uint64_t dt = r->t > dk->ew.last ? r->t - dk->ew.last - 1 : 0;
		double lam = (double)dk->ew.s_long * decay(CBAD_RATE_LONG, dt) * CBAD_RATE_MID /
			     wm.l;
		double obs = (double)dk->ew.s_mid * decay(CBAD_RATE_MID, dt) * CBAD_RATE_MID /
			     warm_weight(CBAD_RATE_MID, r->t);

		deligible = lam >= DROP_MIN_EXPECTED;
		if (deligible)
			dstat = -cbad_rate_log10_lower(obs, lam);
		if (deligible && ready && cbad_values_calib_ready(&r->drop_cal)) {
			drop->valid = true;
			drop->stat = dstat;
			/* never below its count's law, as the burst (below the mean that tail is
			 * below the plain Poisson one, 10^-dstat: computed only when it can bound) */
			double pd = cbad_values_calib_p(&r->drop_cal, dstat);

			if (!(obs < lam && pd >= pow(10.0, -dstat)))
				pd = fmax(pd, pow(10.0, cbad_rate_log10_lower_ew(obs, lam,
										CBAD_RATE_MID)));
			drop->p_value = pd;
			drop->observed = obs;
			drop->expected = lam;
			drop->window = CBAD_RATE_MID;
			drop->base_low = lam - 2.33 * sqrt(lam) > 0 ? lam - 2.33 * sqrt(lam) : 0;
			drop->base_high = lam + 2.33 * sqrt(lam);
			drop->key = dk->key;
			if (r->labels)
				memcpy(drop->label, r->labels[dk - r->kinds], sizeof(drop->label));
		}
	}
	if (learn && bk)
		cbad_rate_calib_learn(&r->burst_cal, best, burst->p_value);
	if (learn && deligible)
		cbad_values_calib_learn(&r->drop_cal, dstat, drop->p_value);
	r->rr++;
	r->t++;
}

void cbad_rate_save(const cbad_rate *r, cbad_writer *w)
{
	uint32_t used = 0;

	if (!r) {
		/* a table not made yet: what a new one saves (it has counted nothing) */
		cbad_values_calib fresh;

		cbad_values_calib_init(&fresh);
		cbad_w_u64(w, 0);
		cbad_w_u32(w, 0);
		cbad_values_calib_save(&fresh, w);
		cbad_values_calib_save(&fresh, w);
		cbad_w_u32(w, 0);
		return;
	}
	cbad_w_u64(w, r->t);
	cbad_w_u32(w, r->rr);
	cbad_values_calib_save(&r->burst_cal, w);
	cbad_values_calib_save(&r->drop_cal, w);
	for (size_t i = 0; i < NKINDS; i++)
		used += r->kinds[i].key != 0;
	cbad_w_u32(w, used);
	for (uint32_t i = 0; i < NKINDS; i++) {
		const rate_kind *k = &r->kinds[i];
		float f[4] = {k->ew.s_short, k->ew.s_mid, k->ew.s_long, k->ew.s_aux};

		if (k->key == 0)
			continue;
		cbad_w_u32(w, i);
		cbad_w_u64(w, k->key);
		cbad_w_u64(w, k->seen);
		cbad_w_u64(w, k->ew.last);
		cbad_w_bytes(w, f, sizeof(f));
		if (r->labels)
			cbad_w_str(w, r->labels[i]);
	}
}

int cbad_rate_load(cbad_rate *r, cbad_reader *rd)
{
	uint32_t used;

	memset(r->kinds, 0, sizeof(r->kinds));
	if (r->labels)
		memset(r->labels, 0, NKINDS * sizeof(*r->labels));
	r->t = cbad_r_u64(rd);
	r->rr = cbad_r_u32(rd);
	if (cbad_values_calib_load(&r->burst_cal, rd) < 0 ||
	    cbad_values_calib_load(&r->drop_cal, rd) < 0)
		return -EINVAL;
	used = cbad_r_count(rd, NKINDS);
	for (uint32_t i = 0; i < used && !rd->failed; i++) {
		uint32_t slot = cbad_r_count(rd, NKINDS - 1);
		rate_kind *k = &r->kinds[slot];
		float f[4];

		k->key = cbad_r_u64(rd);
		k->seen = cbad_r_u64(rd);
		k->ew.last = cbad_r_u64(rd);
		cbad_r_bytes(rd, f, sizeof(f));
		if (r->labels)
			cbad_r_str(rd, r->labels[slot], sizeof(r->labels[slot]));
		if (k->key == 0)
			rd->failed = true;
		for (int j = 0; j < 4; j++)
			if (!(f[j] >= 0 && f[j] <= 1))
				rd->failed = true;
		k->ew.s_short = f[0];
		k->ew.s_mid = f[1];
		k->ew.s_long = f[2];
		k->ew.s_aux = f[3];
	}
	return rd->failed ? -EINVAL : 0;
}
