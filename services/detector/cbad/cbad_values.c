/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_values: robust per-field value models (spike, level shift, flatline) and their calibration (internal to cbad). */
#include "services/detector/cbad/cbad_values.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define BIN_SCALE 16.0   /* bins per unit of log1p(stat) */
#define TAIL_PRIOR 0.5   /* prior mean excess of the tail fit (log1p units) ... */
#define TAIL_PRIOR_N 2.0 /* ... worth this many observations: keeps a short tail from overclaiming */
#define TAIL_MIN_BETA 0.15 /* log1p units: the steepest tail believed from a short history */
/* -log10 p statistics: a calibrated p has P(stat > s) = 10^-s, an exponential tail of mean
 * excess 1/ln 10 = 0.434; that is the prior (worth TAIL_PRIOR_N observations) and, since a
 * model's p is never trusted to be sharper than calibrated, half of it is the floor */
#define LOGP_PRIOR 0.4343
#define LOGP_MIN_BETA 0.2171

#define MODEL_SLOW 128 /* memory of the mean and variance, in values */
#define MODEL_FAST 8   /* memory of the fast mean */
#define MODEL_CLIP 4.0 /* Huber clip of a residual, in sigmas */

#define RUNS_MIN_SEEN 64.0    /* transitions seen before flatlines are tested */
#define RUNS_MAX_REPEAT 0.05   /* ... and only when a value repeats the previous one this rarely */
#define RUNS_NEW_NORMAL 1000 /* a flatline this long is learned as normal */
#define RUNS_CAP 8192.0 /* counts are halved past this: the chain follows slow change */

/* ---- calibrator ---- */

/* bin_edge[b] = expm1(b / 16): bin b holds statistics with log1p(stat) in [b/16, (b+1)/16).
 * A table (generated once, exact to the last bit) keeps log1p out of the per-event path. */
static const double bin_edge[CBAD_CALIB_BINS + 1] = {
	0, 0.064494458917859432, 0.13314845306682632, 0.2062302494209807,
	0.28402541668774151, 0.36683794117379637, 0.45499141461820136, 0.54883029863413313,
	0.64872127070012819, 0.7550546569602985, 0.86824595743222244, 0.98873746958229181,
	1.1170000166126748, 1.2535347872132085, 1.3988752939670979, 1.5535894580629268,
	1.7182818284590451, 1.8935959441717609, 2.080216848918031, 2.2788737679386735,
	2.4903429574618414, 2.7154507379411039, 2.9550767229205772, 3.2101572561439604,
	3.481689070338065, 3.7707331819676027, 4.0784190371800815, 4.4059489251411676,
	4.7546026760057298, 5.1257426618819864, 5.5208191203301125, 5.9413758211970356,
	6.3890560989306504, 6.8656092739448917, 7.3728974881272649, 7.9129029811987373,
	8.4877358363585262, 9.0996422254800535, 9.7510131860763547, 10.444393964331121,
	11.182493960703473, 11.968197316969134, 12.804574186067095, 13.694892728788941,
	14.642631884188171, 15.651494963610144, 16.725424121461643, 17.868615759264884,
	19.085536923187668, 20.380942759123343, 21.75989509352673, 23.227782212610979,
	24.790339917193062, 26.453673935460099, 28.224283781234938, 30.109088150967661,
	32.115451958692312, 34.25121511458854, 36.524723159600995, 38.944859875821933,
	41.521082000062783, 44.263456176258764, 47.182698291098816, 50.290215346585704,
	53.598150033144236, 57.119428177447986, 60.867809250367884, 64.857940132403698,
	69.105412346687856, 73.62682298320091, 78.439839552261333, 83.563269020706002,
	89.017131300521811, 94.822737477086875, 101.00277308269969, 107.5813867407896,
	114.58428452718766, 122.03883041717654, 129.9741532108186, 138.42126035437516,
	147.4131591025766, 156.98498549518746, 167.17414165184545, 178.02044192165667,
	189.56626845862999, 201.85673683086486, 214.93987231061411, 228.86679753407884,
	243.69193226422038, 259.47320603716679, 276.27228452313398, 294.1548104863723,
	313.19066028569421, 333.45421691786504, 355.0246606707791, 377.98627852215554,
	402.42879349273511, 428.44771524093392, 456.14471326890896, 485.62801419834722,
	517.01282466834198, 550.42178150783877, 585.98543094170896, 623.84273870296101,
	664.14163304436181, 707.03958277129937, 752.70421255456131, 801.31395792737908,
	853.05876252615155, 908.14082029933229, 966.77536558467659, 1029.1915141420939,
	1095.6331584284585, 1166.3599206126853, 1241.6481670549956, 1321.7920882144774,
	1407.1048482046956, 1497.9198084892719, 1594.5918304990491, 1697.4986622608421,
	1807.0424144560632, 1923.6511316769472, 2047.7804650200976, 2179.9154525530494,
	2320.572414611057, 2470.3009713300253, 2629.6861902991359, 2799.3508727251633,
	2979.9579870417283,
};

/* bin_start[k]: the bin of the smallest double whose top 16 bits (exponent and 4 mantissa
 * bits) are k + ((1023 - 4) << 4), i.e. of 2^e (1 + m/16) for e = k / 16 - 4, m = k % 16:
 * edges 1..127 lie in [2^-4, 2^12). Such a slice spans a ratio of at most 17/16, narrower than
 * any bin (bins are 1/16 wide in log1p, wider in log), so it holds at most one edge and the
 * bin of stat is bin_start or the next (generated with the binary search it replaces). */
static const uint8_t bin_start[256] = {
	0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3,
	3, 3, 3, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 6, 6,
	6, 6, 7, 7, 7, 8, 8, 8, 8, 9, 9, 9, 10, 10, 10, 10,
	11, 11, 12, 12, 12, 13, 13, 14, 14, 15, 15, 15, 16, 16, 16, 17,
	17, 18, 18, 19, 20, 20, 21, 21, 22, 22, 23, 23, 24, 24, 24, 25,
	25, 26, 27, 27, 28, 29, 29, 30, 31, 31, 32, 32, 33, 33, 34, 34,
	35, 36, 36, 37, 38, 39, 39, 40, 41, 41, 42, 42, 43, 43, 44, 44,
	45, 46, 47, 47, 48, 49, 50, 50, 51, 52, 52, 53, 53, 54, 54, 55,
	55, 56, 57, 58, 59, 60, 60, 61, 62, 62, 63, 64, 64, 65, 65, 66,
	66, 67, 68, 69, 70, 71, 71, 72, 73, 73, 74, 75, 75, 76, 76, 77,
	77, 78, 79, 80, 81, 82, 82, 83, 84, 84, 85, 86, 86, 87, 87, 88,
	88, 89, 90, 91, 92, 93, 93, 94, 95, 95, 96, 97, 97, 98, 98, 99,
	99, 100, 101, 102, 103, 104, 104, 105, 106, 106, 107, 108, 108, 109, 109, 110,
	110, 111, 112, 113, 114, 115, 116, 116, 117, 118, 118, 119, 119, 120, 120, 121,
	122, 122, 123, 124, 125, 126, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127,
};

static int stat_bin(double stat)
{
	uint64_t bits;
	int lo;

	if (!(stat >= bin_edge[1])) /* NaN, <= 0 and the first bin */
		return 0;
	if (stat >= bin_edge[CBAD_CALIB_BINS - 1])
		return CBAD_CALIB_BINS - 1;
	/* the last edge <= stat: a table look-up on the exponent and top mantissa bits, then
	 * one edge compare (two, to need no proof about rounding; 7 steps of a binary search
	 * before) */
	memcpy(&bits, &stat, sizeof(bits));
	lo = bin_start[(bits >> 48) - ((uint64_t)(1023 - 4) << 4)];
	lo += bin_edge[lo + 1] <= stat;
	lo += bin_edge[lo + 1] <= stat;
	return lo;
}

static void bin_add(cbad_values_calib *c, int bin, int delta)
{
	c->count[bin] = (uint16_t)(c->count[bin] + delta);
}

/* Number of statistics in the bins above bin: the counts of the shorter side are summed (at
 * most 64 small integers, which the compiler vectorises; a Fenwick tree cost two 8-step
 * updates per insert and 258 bytes for about the same query). Exact. */
static unsigned count_above(const cbad_values_calib *c, int bin)
{
	unsigned s = 0;

	if (bin >= CBAD_CALIB_BINS / 2) {
		for (int i = bin + 1; i < CBAD_CALIB_BINS; i++)
			s += c->count[i];
		return s;
	}
	for (int i = 0; i <= bin; i++)
		s += c->count[i];
	return c->n - s;
}

void cbad_values_calib_init(cbad_values_calib *c)
{
	memset(c, 0, sizeof(*c));
}

bool cbad_values_calib_ready(const cbad_values_calib *c)
{
	return c->n >= CBAD_CALIB_MIN;
}

/* logp: stat is -log10 of a model's p-value, whose tail falls exponentially in stat itself
 * (P(stat > s) = 10^-s when the model is right); the tail is then fitted on stat, not on
 * log1p(stat), which would assume a power-law tail and understate how rare an extreme is. */
static double calib_p(const cbad_values_calib *c, double stat, bool logp)
{
	double u, ge, p;
	unsigned above, inbin, n = c->n;
	int b;

	if (n == 0)
		return 1.0;
	if (!(stat > 0))
		stat = 0;
	b = stat_bin(stat);
	inbin = c->count[b];
	above = count_above(c, b);
	{
		/* the share of the bin above stat: statistics spread evenly within a bin */
		double frac = b + 1 < CBAD_CALIB_BINS ?
				      (bin_edge[b + 1] - stat) / (bin_edge[b + 1] - bin_edge[b]) :
				      0.0;

		if (frac < 0)
			frac = 0;
		if (frac > 1)
			frac = 1;
		ge = (double)above + frac * (double)inbin;
	}
	p = (ge + 1.0) / ((double)n + 1.0);
	if (ge < CBAD_CALIB_TAIL && n >= CBAD_CALIB_TAIL) {
		u = log1p(stat) * BIN_SCALE;
		/* peaks over threshold: the top CBAD_CALIB_TAIL statistics define the threshold
		 * (lower edge of the bin holding the 12th largest) and the mean excess over it */
		unsigned cnt = 0, cm, nbins = 0;
		double excess = 0, beta, um, pt;
		int bm = CBAD_CALIB_BINS - 1;

		for (; bm >= 0; bm--) {
			unsigned k = c->count[bm];

			if (k == 0)
				continue;
			nbins++;
			excess += (double)k * ((double)bm + 0.5);
			cnt += k;
			if (cnt >= CBAD_CALIB_TAIL)
				break;
		}
		if (bm < 0)
			bm = 0;
		cm = cnt;
		um = (double)bm;
		excess = (excess - (double)cnt * um) / BIN_SCALE;
		beta = (excess + TAIL_PRIOR * TAIL_PRIOR_N) / ((double)cnt + TAIL_PRIOR_N);
		if (beta < TAIL_MIN_BETA)
			beta = TAIL_MIN_BETA;
		/* a tail that sits in one bin (a statistic that is usually 0, or always the same)
		 * says nothing about how fast it falls: no extrapolation then, only the rank */
		if (logp && nbins >= 2 && u > um) {
			/* the same threshold; the mean excess measured on stat (bin centres) */
			double su = bin_edge[bm], lex = 0;

			for (int b = bm; b < CBAD_CALIB_BINS; b++)
				if (c->count[b])
					lex += (double)c->count[b] *
					       (expm1(((double)b + 0.5) / BIN_SCALE) - su);
			beta = (lex + LOGP_PRIOR * TAIL_PRIOR_N) / ((double)cnt + TAIL_PRIOR_N);
			if (beta < LOGP_MIN_BETA)
				beta = LOGP_MIN_BETA;
			pt = ((double)cm + 1.0) / ((double)n + 1.0) * exp(-(stat - su) / beta);
			if (pt < p)
				p = pt;
		} else if (nbins >= 2 && u > um) {
			pt = ((double)cm + 1.0) / ((double)n + 1.0) *
			     exp(-((u - um) / BIN_SCALE) / beta);
			if (pt < p)
				p = pt;
		}
	}
	if (p > 1.0)
		p = 1.0;
	if (p < 1e-300)
		p = 1e-300;
	return p;
}

double cbad_values_calib_p(const cbad_values_calib *c, double stat)
{
	return calib_p(c, stat, false);
}

double cbad_values_calib_p_logp(const cbad_values_calib *c, double stat)
{
	return calib_p(c, stat, true);
}

void cbad_values_calib_add(cbad_values_calib *c, double stat)
{
	int b = stat_bin(stat);

	if (c->n == CBAD_CALIB_WINDOW) {
		bin_add(c, c->ring[c->pos], -1);
	} else {
		c->n++;
	}
	c->ring[c->pos] = (uint8_t)b;
	bin_add(c, b, 1);
	c->pos = (uint16_t)((c->pos + 1) % CBAD_CALIB_WINDOW);
}

void cbad_values_calib_learn(cbad_values_calib *c, double stat, double p)
{
	bool skip = p < CBAD_CALIB_SKIP && c->skipped < CBAD_CALIB_SKIP_BUDGET;

	c->skipped = c->skipped * (1.0f - 1.0f / CBAD_CALIB_SKIP_MEMORY) +
		     (skip ? 1.0f / CBAD_CALIB_SKIP_MEMORY : 0.0f);
	if (!skip)
		cbad_values_calib_add(c, stat);
}

double cbad_values_calib_quantile(const cbad_values_calib *c, double q)
{
	unsigned want, cnt = 0;

	if (c->n == 0)
		return 0;
	if (q < 0)
		q = 0;
	if (q > 1)
		q = 1;
	want = (unsigned)ceil(q * c->n);
	if (want < 1)
		want = 1;
	for (int b = CBAD_CALIB_BINS - 1; b >= 0; b--) {
		cnt += c->count[b];
		if (cnt >= want)
			return expm1(((double)b + 0.5) / BIN_SCALE);
	}
	return 0;
}

/* ---- long calibrator ---- */

/* past this the weights are divided by scale (about every 180,000 learns at memory 4096) */
#define CBAD_LCALIB_RESCALE 18446744073709551616.0 /* 2^64 */

void cbad_values_lcalib_init(cbad_values_lcalib *c)
{
	memset(c, 0, sizeof(*c));
	c->scale = 1.0;
}

bool cbad_values_lcalib_ready(const cbad_values_lcalib *c)
{
	return c->seen >= CBAD_CALIB_MIN;
}

double cbad_values_lcalib_p(const cbad_values_lcalib *c, double stat)
{
	double ge = 0, inbin, frac, p, inv = 1.0 / c->scale, n = c->total * inv;
	int b;

	if (n <= 0)
		return 1.0;
	if (!(stat > 0))
		stat = 0;
	b = stat_bin(stat);
	{
		int i = b + 1;

		/* four adds a turn, in the same order (so the same sum): fewer loop tests */
		for (; i + 4 <= CBAD_CALIB_BINS; i += 4) {
			ge += c->count[i];
			ge += c->count[i + 1];
			ge += c->count[i + 2];
			ge += c->count[i + 3];
		}
		for (; i < CBAD_CALIB_BINS; i++)
			ge += c->count[i];
	}
	ge *= inv;
	inbin = c->count[b] * inv;
	frac = b + 1 < CBAD_CALIB_BINS ? (bin_edge[b + 1] - stat) / (bin_edge[b + 1] - bin_edge[b]) :
					 0.0;
	if (frac < 0)
		frac = 0;
	if (frac > 1)
		frac = 1;
	ge += frac * inbin;
	p = (ge + 1.0) / (n + 1.0);
	if (ge < CBAD_CALIB_TAIL && n >= CBAD_CALIB_TAIL) {
		/* peaks over threshold, as in calib_p, on the decayed weights */
		double cnt = 0, excess = 0, beta, um, u = log1p(stat) * BIN_SCALE;
		unsigned nbins = 0;
		int bm = CBAD_CALIB_BINS - 1;

		for (; bm >= 0; bm--) {
			double k = c->count[bm] * inv;

			if (k <= 0)
				continue;
			nbins++;
			excess += k * ((double)bm + 0.5);
			cnt += k;
			if (cnt >= CBAD_CALIB_TAIL)
				break;
		}
		if (bm < 0)
			bm = 0;
		um = (double)bm;
		excess = (excess - cnt * um) / BIN_SCALE;
		beta = (excess + TAIL_PRIOR * TAIL_PRIOR_N) / (cnt + TAIL_PRIOR_N);
		if (beta < TAIL_MIN_BETA)
			beta = TAIL_MIN_BETA;
		if (nbins >= 2 && u > um) {
			double pt = (cnt + 1.0) / (n + 1.0) * exp(-((u - um) / BIN_SCALE) / beta);

			if (pt < p)
				p = pt;
		}
	}
	if (p > 1.0)
		p = 1.0;
	if (p < 1e-300)
		p = 1e-300;
	return p;
}

void cbad_values_lcalib_learn(cbad_values_lcalib *c, double stat, double p)
{
	cbad_values_lcalib_learn_clip(c, stat, p, true);
}

void cbad_values_lcalib_learn_clip(cbad_values_lcalib *c, double stat, double p, bool clip)
{
	const double keep = 1.0 - 1.0 / CBAD_LCALIB_MEMORY;
	/* The normal-data guard, narrower than the short calibrator's. Leaving out every
	 * p < 0.002 would empty the very tail the p-values are read from (measured: 1.4 % of iid
	 * statistics flagged at 1e-3, with a feedback: a thinner tail flags more). Left out are:
	 * p < CBAD_LCALIB_SKIP (about 0.4 of 4096 normal statistics), and a statistic beyond every
	 * remembered one with p < CBAD_CALIB_SKIP right after another such one: iid data almost
	 * never has two records in a row, while a growing anomaly (a flatline whose statistic
	 * rises with its length) would otherwise set its own bar at each step. Only the first
	 * CBAD_LCALIB_RECORD_RUN records in a row: a slow drift is also a run of records, and
	 * flagging all of it costs more false alarms than it finds (NAB standard 16.5 uncapped,
	 * 24.9 with 8). */
	int top = CBAD_CALIB_BINS - 1, bin = stat_bin(stat > 0 ? stat : 0);
	bool record = false, skip;

	/* the top bin only matters for a record, which needs a small p: found only then (the scan
	 * over 128 bins was most of a learn) */
	if (p < CBAD_CALIB_SKIP) {
		while (top > 0 && !(c->count[top] > 0))
			top--;
		record = bin > top;
	}
	skip = (p < CBAD_LCALIB_SKIP ||
		(record && c->record && c->record <= CBAD_LCALIB_RECORD_RUN)) &&
	       c->skipped < CBAD_CALIB_SKIP_BUDGET;
	c->record = record ? (uint8_t)(c->record < 255 ? c->record + 1 : 255) : 0;
	c->skipped = c->skipped * (1.0f - 1.0f / CBAD_CALIB_SKIP_MEMORY) +
		     (skip ? 1.0f / CBAD_CALIB_SKIP_MEMORY : 0.0f);
	if (skip)
		return;
	/* a record that is learned (past the run cap) raises the tail by one bin, not to its full
	 * height, when the caller says it comes from a growing anomaly (a flatline's statistic
	 * climbs into the hundreds): it must not set the bar for every anomaly of the next
	 * CBAD_LCALIB_MEMORY events. Other records are learned at their height: a lasting change
	 * of level or spread is the new normal (clipping them all cost NAB standard 24.4 -> 20.2) */
	if (clip && record && bin > top + 1)
		bin = top + 1;
	c->scale /= keep;
	if (c->scale > CBAD_LCALIB_RESCALE) {
		for (int b = 0; b < CBAD_CALIB_BINS; b++)
			c->count[b] /= c->scale;
		c->total /= c->scale;
		c->scale = 1.0;
	}
	c->count[bin] += c->scale;
	c->total += c->scale;
	if (c->seen < UINT32_MAX)
		c->seen++;
}

void cbad_values_lcalib_save(const cbad_values_lcalib *c, cbad_writer *w)
{
	for (int b = 0; b < CBAD_CALIB_BINS; b++)
		cbad_w_f64(w, c->count[b]);
	cbad_w_f64(w, c->total);
	cbad_w_f64(w, c->scale);
	cbad_w_bytes(w, &c->skipped, sizeof(c->skipped));
	cbad_w_u32(w, c->seen);
	cbad_w_u8(w, c->record);
}

int cbad_values_lcalib_load(cbad_values_lcalib *c, cbad_reader *r)
{
	cbad_values_lcalib t;

	memset(&t, 0, sizeof(t)); /* padding too: a loaded state compares equal */
	for (int b = 0; b < CBAD_CALIB_BINS; b++)
		t.count[b] = cbad_r_f64(r);
	t.total = cbad_r_f64(r);
	t.scale = cbad_r_f64(r);
	if (!(t.scale >= 1.0 && t.scale <= CBAD_LCALIB_RESCALE / (1.0 - 1.0 / CBAD_LCALIB_MEMORY)))
		return -EINVAL;
	for (int b = 0; b < CBAD_CALIB_BINS; b++)
		if (!(t.count[b] >= 0 && t.count[b] <= (CBAD_LCALIB_MEMORY + 1.0) * t.scale))
			return -EINVAL;
	cbad_r_bytes(r, &t.skipped, sizeof(t.skipped));
	t.seen = cbad_r_u32(r);
	t.record = cbad_r_u8(r);
	if (r->failed || !(t.total >= 0 && t.total <= (CBAD_LCALIB_MEMORY + 1.0) * t.scale) ||
	    !(t.skipped >= 0 && t.skipped <= 1))
		return -EINVAL;
	*c = t;
	return 0;
}

void cbad_values_calib_save(const cbad_values_calib *c, cbad_writer *w)
{
	cbad_w_u32(w, c->n);
	cbad_w_u32(w, c->pos);
	cbad_w_bytes(w, &c->skipped, sizeof(c->skipped));
	cbad_w_bytes(w, c->ring, CBAD_CALIB_WINDOW);
}

int cbad_values_calib_load(cbad_values_calib *c, cbad_reader *r)
{
	uint32_t n = cbad_r_count(r, CBAD_CALIB_WINDOW);
	uint32_t pos = cbad_r_count(r, CBAD_CALIB_WINDOW - 1);
	uint8_t ring[CBAD_CALIB_WINDOW];
	float skipped;

	cbad_r_bytes(r, &skipped, sizeof(skipped));
	cbad_r_bytes(r, ring, sizeof(ring));
	if (!(skipped >= 0 && skipped <= 1))
		return -EINVAL;
	if (r->failed)
		return -EINVAL;
	if (n < CBAD_CALIB_WINDOW && pos != n)
		return -EINVAL;
	cbad_values_calib_init(c);
	memcpy(c->ring, ring, sizeof(ring));
	c->n = (uint16_t)n;
	c->pos = (uint16_t)pos;
	c->skipped = skipped;
	for (uint32_t i = 0; i < n; i++) {
		if (ring[i] >= CBAD_CALIB_BINS)
			return -EINVAL;
		bin_add(c, ring[i], 1);
	}
	return 0;
}

/* ---- value model ---- */

void cbad_values_model_init(cbad_values_model *m)
{
	memset(m, 0, sizeof(*m));
}

bool cbad_values_model_ready(const cbad_values_model *m)
{
	return m->n >= CBAD_VALUES_MIN_N;
}

static double model_sigma(const cbad_values_model *m)
{
	double s = sqrt((double)m->var);
	double floor1 = 0.5 * (double)m->res;
	double floor2 = 1e-9 * (1.0 + fabs(m->mu));

	if (s < floor1)
		s = floor1;
	if (s < floor2)
		s = floor2;
	return s;
}

static double fast_rate(const cbad_values_model *m)
{
	return 1.0 / (double)(m->n + 1 < MODEL_FAST ? m->n + 1 : MODEL_FAST);
}

/* The prediction error's sigma, with the same floors as the model's. */
static double pred_sigma(const cbad_values_model *m)
{
	double s = sqrt((double)m->rvar);
	double floor1 = 0.5 * (double)m->res;
	double floor2 = 1e-9 * (1.0 + fabs(m->mu));

	if (s < floor1)
		s = floor1;
	if (s < floor2)
		s = floor2;
	return s;
}

void cbad_values_model_judge(const cbad_values_model *m, double x, cbad_values_judgement *j)
{
	double sig = model_sigma(m);
	double ps = pred_sigma(m);
	double fast = m->fast + fast_rate(m) * (x - m->fast);

	j->mean = m->mu;
	j->sigma = sig;
	j->fast = fast;
	j->pred = m->fast;
	j->pred_sigma = ps;
	j->z = fabs(x - m->fast) / ps;
	/* A step (a new level that persists) leaves the one-step predictor behind for several
	 * values: two strange values in a row on the same side. The smaller of the two
	 * standardised errors is as rare as both (about the square of one's tail for independent
	 * errors), and stays large while the fast mean catches up; a lone spike gives 0 on the
	 * next value. The rank calibration absorbs the residual autocorrelation. */
	{
		double zs = (x - m->fast) / ps, zq = (double)m->zprev;

		j->shift = zs * zq > 0 ? fmin(fabs(zs), fabs(zq)) : 0.0;
	}
	j->run = (m->n > 0 && x == m->last) ? (uint32_t)m->run + 1 : 1;
}

void cbad_values_model_learn(cbad_values_model *m, double x)
{
	double a, r, sig, var;

	if (!isfinite(x))
		return;
	if (m->n == 0) {
		m->mu = m->fast = m->last = x;
		m->var = 0;
		m->res = 0;
		m->rvar = 0;
		m->run = 1;
		m->n = 1;
		return;
	}
	if (x != m->last) {
		float d = (float)fabs(x - m->last);

		if (d > 0 && (m->res == 0 || d < m->res))
			m->res = d;
		m->run = 1;
	} else if (m->run < UINT16_MAX) {
		m->run++;
	}
	a = 1.0 / (double)(m->n + 1 < MODEL_SLOW ? m->n + 1 : MODEL_SLOW);
	{
		/* the prediction error, clipped like the residual below */
		double e = x - m->fast;

		if (m->n >= 8) {
			e = cbad_huber_clip(e, MODEL_CLIP * pred_sigma(m));
		}
		m->rvar = (float)((1.0 - a) * ((double)m->rvar + a * e * e));
	}
	m->zprev = (float)((x - m->fast) / pred_sigma(m));
	m->fast += fast_rate(m) * (x - m->fast);
	r = x - m->mu;
	if (m->n >= 8) {
		sig = model_sigma(m);
		r = cbad_huber_clip(r, MODEL_CLIP * sig);
	}
	m->mu += a * r;
	var = (1.0 - a) * ((double)m->var + a * r * r);
	m->var = (float)var;
	m->last = x;
	if (m->n < UINT16_MAX)
		m->n++;
}

void cbad_values_model_save(const cbad_values_model *m, cbad_writer *w)
{
	float f[4] = {m->var, m->res, m->rvar, m->zprev};

	cbad_w_f64(w, m->mu);
	cbad_w_f64(w, m->fast);
	cbad_w_f64(w, m->last);
	cbad_w_bytes(w, f, sizeof(f));
	cbad_w_u32(w, (uint32_t)m->n | ((uint32_t)m->run << 16));
}

void cbad_values_model_load(cbad_values_model *m, cbad_reader *r)
{
	float f[4];
	uint32_t nr;

	m->mu = cbad_r_f64(r);
	m->fast = cbad_r_f64(r);
	m->last = cbad_r_f64(r);
	cbad_r_bytes(r, f, sizeof(f));
	nr = cbad_r_u32(r);
	m->var = f[0];
	m->res = f[1];
	m->rvar = f[2];
	m->zprev = f[3];
	m->pad_ = 0;
	m->n = (uint16_t)(nr & 0xffff);
	m->run = (uint16_t)(nr >> 16);
}

/* ---- long-run level ---- */

void cbad_values_level_init(cbad_values_level *l)
{
	memset(l, 0, sizeof(*l));
	cbad_values_lcalib_init(&l->cal);
}

static double level_sigma(const cbad_values_level *l, double res)
{
	double s = sqrt(l->var);

	if (s < 0.5 * res)
		s = 0.5 * res;
	if (s < 1e-9 * (1.0 + fabs(l->mu)))
		s = 1e-9 * (1.0 + fabs(l->mu));
	return s;
}

double cbad_values_level_stat(const cbad_values_level *l, double x, double res)
{
	if (l->n < CBAD_VALUES_MIN_N || !isfinite(x))
		return 0.0;
	return fabs(x - l->mu) / level_sigma(l, res);
}

double cbad_values_level_p(const cbad_values_level *l, double stat)
{
	if (l->cal.seen < CBAD_LEVEL_MIN_CAL)
		return 1.0;
	return cbad_values_lcalib_p(&l->cal, stat);
}

void cbad_values_level_learn(cbad_values_level *l, double x, double stat)
{
	double a, r;

	if (!isfinite(x))
		return;
	/* Every statistic is learned, at its height (p = 1 bypasses the normal-data guard): a
	 * series' routine excursions (a daily peak) must become known, or each one looks like the
	 * first; only the first value of a new excursion is rare among the 4096 remembered. With
	 * the guard, NAB standard 30.0 instead of 33.3 (recurring peaks flagged every day). */
	if (l->n >= CBAD_VALUES_MIN_N)
		cbad_values_lcalib_learn_clip(&l->cal, stat, 1.0, false);
	if (l->n == 0) {
		l->mu = x;
		l->var = 0;
		l->n = 1;
		return;
	}
	a = 1.0 / (double)(l->n + 1 < CBAD_LEVEL_MEMORY ? l->n + 1 : CBAD_LEVEL_MEMORY);
	r = x - l->mu;
	/* Huber clip, as in the value model: one excursion barely moves the long-run level */
	if (l->n >= CBAD_VALUES_MIN_N) {
		r = cbad_huber_clip(r, MODEL_CLIP * level_sigma(l, 0.0));
	}
	l->mu += a * r;
	l->var = (1.0 - a) * (l->var + a * r * r);
	if (l->n < UINT32_MAX)
		l->n++;
}

void cbad_values_level_save(const cbad_values_level *l, cbad_writer *w)
{
	cbad_w_f64(w, l->mu);
	cbad_w_f64(w, l->var);
	cbad_w_u32(w, l->n);
	cbad_values_lcalib_save(&l->cal, w);
}

int cbad_values_level_load(cbad_values_level *l, cbad_reader *r)
{
	cbad_values_level t;

	memset(&t, 0, sizeof(t));
	t.mu = cbad_r_f64(r);
	t.var = cbad_r_f64(r);
	t.n = cbad_r_u32(r);
	if (r->failed || !isfinite(t.mu) || !(t.var >= 0 && isfinite(t.var)))
		return -EINVAL;
	if (cbad_values_lcalib_load(&t.cal, r) < 0)
		return -EINVAL;
	*l = t;
	return 0;
}

/* ---- daily shape ---- */

void cbad_values_season_init(cbad_values_season *s)
{
	memset(s, 0, sizeof(*s));
	cbad_values_level_init(&s->resid);
}

int cbad_values_season_slot(int64_t ts_ms)
{
	const int64_t day = 86400000, width = day / CBAD_SEASON_SLOTS;

	if (ts_ms <= 0)
		return -1;
	return (int)((ts_ms % day) / width);
}

bool cbad_values_season_ready(const cbad_values_season *s, int slot)
{
	return slot >= 0 && slot < CBAD_SEASON_SLOTS && s->n[slot] >= CBAD_SEASON_MIN_SLOT;
}

double cbad_values_season_stat(const cbad_values_season *s, int slot, double x, double res)
{
	if (!cbad_values_season_ready(s, slot) || !isfinite(x))
		return 0.0;
	return cbad_values_level_stat(&s->resid, x - (double)s->mean[slot], res);
}

double cbad_values_season_p(const cbad_values_season *s, double stat)
{
	return cbad_values_level_p(&s->resid, stat);
}

void cbad_values_season_learn(cbad_values_season *s, int slot, double x, double stat, double res)
{
	double a, r;
	uint16_t n;

	if (slot < 0 || slot >= CBAD_SEASON_SLOTS || !isfinite(x))
		return;
	n = s->n[slot];
	if (n == 0) {
		s->mean[slot] = (float)x;
		s->n[slot] = 1;
		return;
	}
	r = x - (double)s->mean[slot];
	if (n >= CBAD_SEASON_MIN_SLOT)
		cbad_values_level_learn(&s->resid, r, stat);
	/* Huber clip, as in the level: one odd day barely moves the slot's mean */
	if (s->resid.n >= CBAD_VALUES_MIN_N) {
		r = cbad_huber_clip(r, MODEL_CLIP * level_sigma(&s->resid, res));
	}
	a = 1.0 / (double)(n + 1 < CBAD_SEASON_MEMORY ? n + 1 : CBAD_SEASON_MEMORY);
	s->mean[slot] = (float)((double)s->mean[slot] + a * r);
	if (n < UINT16_MAX)
		s->n[slot] = (uint16_t)(n + 1);
}

void cbad_values_season_save(const cbad_values_season *s, cbad_writer *w)
{
	cbad_w_bytes(w, s->mean, sizeof(s->mean));
	for (int i = 0; i < CBAD_SEASON_SLOTS; i++)
		cbad_w_u32(w, s->n[i]);
	cbad_values_level_save(&s->resid, w);
}

int cbad_values_season_load(cbad_values_season *s, cbad_reader *r)
{
	cbad_values_season t;

	memset(&t, 0, sizeof(t));
	cbad_r_bytes(r, t.mean, sizeof(t.mean));
	for (int i = 0; i < CBAD_SEASON_SLOTS; i++) {
		uint32_t n = cbad_r_u32(r);

		if (n > UINT16_MAX || !isfinite(t.mean[i]))
			r->failed = true;
		t.n[i] = (uint16_t)n;
	}
	if (r->failed || cbad_values_level_load(&t.resid, r) < 0)
		return -EINVAL;
	*s = t;
	return 0;
}

/* ---- runs ---- */

void cbad_values_runs_init(cbad_values_runs *r)
{
	memset(r, 0, sizeof(*r));
}

bool cbad_values_runs_testable(const cbad_values_runs *r)
{
	return r->opp1 + r->opp2 >= RUNS_MIN_SEEN &&
	       (r->rep1 + 0.5) / (r->opp1 + 1.0) < RUNS_MAX_REPEAT;
}

double cbad_values_runs_p(const cbad_values_runs *r, uint32_t run)
{
	double q1, q2;

	if (run < 2)
		return 1.0;
	q1 = (r->rep1 + 0.5) / (r->opp1 + 1.0);
	q2 = (r->rep2 + 0.5) / (r->opp2 + 1.0);
	return q1 * pow(q2, (double)(run - 2));
}

void cbad_values_runs_learn(cbad_values_runs *r, uint32_t prev_run, uint32_t run)
{
	double rep = run >= 2 ? 1.0 : 0.0;

	/* a run already judged a flatline is not learned as normal, until it has lasted so long
	 * (RUNS_NEW_NORMAL values) that it is the new normal */
	if (run >= 3 && run < RUNS_NEW_NORMAL && cbad_values_runs_p(r, run) < CBAD_CALIB_SKIP)
		return;
	if (prev_run >= 2) {
		r->opp2 += 1.0;
		r->rep2 += rep;
	} else {
		r->opp1 += 1.0;
		r->rep1 += rep;
	}
	if (r->opp1 + r->opp2 > RUNS_CAP) {
		r->opp1 *= 0.5;
		r->rep1 *= 0.5;
		r->opp2 *= 0.5;
		r->rep2 *= 0.5;
	}
}

void cbad_values_runs_save(const cbad_values_runs *r, cbad_writer *w)
{
	cbad_w_f64(w, r->opp1);
	cbad_w_f64(w, r->rep1);
	cbad_w_f64(w, r->opp2);
	cbad_w_f64(w, r->rep2);
}

void cbad_values_runs_load(cbad_values_runs *r, cbad_reader *rd)
{
	r->opp1 = cbad_r_f64(rd);
	r->rep1 = cbad_r_f64(rd);
	r->opp2 = cbad_r_f64(rd);
	r->rep2 = cbad_r_f64(rd);
	if (!(r->opp1 >= 0 && r->rep1 >= 0 && r->opp2 >= 0 && r->rep2 >= 0 &&
	      r->rep1 <= r->opp1 + 1 && r->rep2 <= r->opp2 + 1 && r->opp1 + r->opp2 <= 2 * RUNS_CAP))
		rd->failed = true;
}
