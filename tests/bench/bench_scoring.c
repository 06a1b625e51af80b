/* SPDX-License-Identifier: Apache-2.0 */
/* bench_scoring: detection-quality metrics of the labeled streams and NAB's scoring rules. */
#include "tests/bench/bench_scoring.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const bench_scoring_nab_profile bench_scoring_nab_standard = { "standard", 1.0, 0.11, 1.0 };
const bench_scoring_nab_profile bench_scoring_nab_low_fp = { "reward_low_FP", 1.0, 0.22, 1.0 };
const bench_scoring_nab_profile bench_scoring_nab_low_fn = { "reward_low_FN", 1.0, 0.11, 2.0 };

typedef struct scored_line {
	double score;
	uint8_t label;
} scored_line;

/* Highest score first; NaN after every number. */
static int cmp_score_desc(const void *a, const void *b)
{
	double x = ((const scored_line *)a)->score, y = ((const scored_line *)b)->score;

	if (isnan(x) || isnan(y))
		return isnan(x) - isnan(y);
	return (x < y) - (x > y);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Median of v[0..n-1] (sorted in place); 0 for n == 0. */
static double median(double *v, size_t n)
{
	if (n == 0)
		return 0.0;
	qsort(v, n, sizeof(*v), cmp_double);
	if (n % 2)
		return v[n / 2];
	return (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

static double f1_of(size_t tp, size_t fp, size_t fn)
{
	double p = tp + fp ? (double)tp / (double)(tp + fp) : 0.0;
	double r = tp + fn ? (double)tp / (double)(tp + fn) : 0.0;

	return p + r > 0.0 ? 2.0 * p * r / (p + r) : 0.0;
}

typedef struct episode {
	uint8_t kind;
	size_t first, last, first_flagged; /* first_flagged == SIZE_MAX: not detected */
} episode;

int bench_scoring_stream_metrics(const double *score, const bool *flagged, const uint8_t *label,
				 const uint8_t *kind, size_t nkinds, const int64_t *ts_ms, size_t n,
				 bench_scoring_stream *ret)
{
	bench_scoring_stream m;
	scored_line *sl = NULL;
	episode *eps = NULL;
	double *ttd = NULL, *ttd_s = NULL;
	size_t neps = 0, cur[BENCH_SCORING_MAX_KINDS];
	int rc = 0;

	if (nkinds > BENCH_SCORING_MAX_KINDS)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (label[i] && kind[i] >= nkinds)
			return -EINVAL;
	memset(&m, 0, sizeof(m));
	m.n = n;
	m.nkinds = nkinds;

	/* 1. At the detector's own decisions. */
	for (size_t i = 0; i < n; i++) {
		m.positives += label[i] != 0;
		m.flagged += flagged[i];
		m.tp += flagged[i] && label[i];
		m.fp += flagged[i] && !label[i];
		m.fn += !flagged[i] && label[i];
		if (label[i]) {
			m.kinds[kind[i]].labels++;
			m.kinds[kind[i]].labels_flagged += flagged[i];
		}
	}
	m.precision = m.tp + m.fp ? (double)m.tp / (double)(m.tp + m.fp) : 0.0;
	m.recall = m.tp + m.fn ? (double)m.tp / (double)(m.tp + m.fn) : 0.0;
	m.f1 = m.precision + m.recall > 0.0 ?
		       2.0 * m.precision * m.recall / (m.precision + m.recall) : 0.0;

	/* 2, 3. Best F1 and average precision over the distinct score values, highest first;
	 * equal scores are flagged together. */
	sl = malloc((n ? n : 1) * sizeof(*sl));
	if (!sl) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		sl[i].score = score[i];
		sl[i].label = label[i] != 0;
	}
	qsort(sl, n, sizeof(*sl), cmp_score_desc);
	m.best_threshold = n ? sl[0].score : 0.0;
	{
		size_t tp = 0, fp = 0;
		double prev_r = 0.0;

		for (size_t i = 0; i < n;) {
			size_t j = i;
			double r, p, f;

			/* NaN never equals itself: the NaN scores form one last group. */
			while (j < n && (sl[j].score == sl[i].score ||
					 (isnan(sl[j].score) && isnan(sl[i].score)))) {
				tp += sl[j].label;
				fp += !sl[j].label;
				j++;
			}
			r = m.positives ? (double)tp / (double)m.positives : 0.0;
			p = tp + fp ? (double)tp / (double)(tp + fp) : 0.0;
			m.pr_auc += (r - prev_r) * p;
			prev_r = r;
			f = f1_of(tp, fp, m.positives - tp);
			if (f > m.best_f1) {
				m.best_f1 = f;
				m.best_threshold = sl[i].score;
			}
			i = j;
		}
	}

	/* 4. Episodes: a labeled line joins the current episode of its kind when it is at most
	 * BENCH_SCORING_EPISODE_GAP lines after that episode's last labeled line. */
	eps = malloc((m.positives ? m.positives : 1) * sizeof(*eps));
	ttd = malloc((m.positives ? m.positives : 1) * sizeof(*ttd));
	ttd_s = malloc((m.positives ? m.positives : 1) * sizeof(*ttd_s));
	if (!eps || !ttd || !ttd_s) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t k = 0; k < BENCH_SCORING_MAX_KINDS; k++)
		cur[k] = SIZE_MAX;
	for (size_t i = 0; i < n; i++) {
		episode *e;
		uint8_t k;

		if (!label[i])
			continue;
		k = kind[i];
		if (cur[k] == SIZE_MAX || i - eps[cur[k]].last > BENCH_SCORING_EPISODE_GAP) {
			cur[k] = neps++;
			eps[cur[k]] = (episode){ .kind = k, .first = i, .last = i,
						 .first_flagged = SIZE_MAX };
		}
		e = &eps[cur[k]];
		e->last = i;
		if (flagged[i] && e->first_flagged == SIZE_MAX)
			e->first_flagged = i;
	}
	m.episodes = neps;
	for (size_t k = 0; k <= nkinds; k++) {
		/* k == nkinds: all kinds together */
		size_t nd = 0, ne = 0;

		for (size_t e = 0; e < neps; e++) {
			if (k < nkinds && eps[e].kind != k)
				continue;
			ne++;
			if (eps[e].first_flagged == SIZE_MAX)
				continue;
			ttd[nd] = (double)(eps[e].first_flagged - eps[e].first);
			ttd_s[nd] = ts_ms ? (double)(ts_ms[eps[e].first_flagged] -
						     ts_ms[eps[e].first]) / 1000.0 : 0.0;
			nd++;
		}
		if (k < nkinds) {
			m.kinds[k].episodes = ne;
			m.kinds[k].episodes_detected = nd;
			m.kinds[k].ttd_max = 0.0;
			for (size_t d = 0; d < nd; d++)
				m.kinds[k].ttd_max = fmax(m.kinds[k].ttd_max, ttd[d]);
			m.kinds[k].ttd_median = median(ttd, nd);
		} else {
			m.episodes_detected = nd;
			m.episode_recall = ne ? (double)nd / (double)ne : 0.0;
			for (size_t d = 0; d < nd; d++) {
				m.ttd_max = fmax(m.ttd_max, ttd[d]);
				m.ttd_max_s = fmax(m.ttd_max_s, ttd_s[d]);
			}
			m.ttd_median = median(ttd, nd);
			m.ttd_median_s = median(ttd_s, nd);
		}
	}
	*ret = m;
out:
	free(ttd_s);
	free(ttd);
	free(eps);
	free(sl);
	return rc;
}

double bench_scoring_nab_sigmoid(double y)
{
	if (y > 3.0)
		return -1.0;
	return 2.0 / (1.0 + exp(5.0 * y)) - 1.0;
}

size_t bench_scoring_nab_probation(size_t n)
{
	size_t p = (size_t)floor(0.15 * (double)n);

	return p < 750 ? p : 750;
}

/* What the first detection at row i of window [l, r] earns. */
static double nab_tp_value(size_t i, size_t l, size_t r, const bench_scoring_nab_profile *p)
{
	double w = (double)(r - l + 1);
	double y = -((double)(r - i) + 1.0) / w;

	return p->tp_weight * bench_scoring_nab_sigmoid(y) / bench_scoring_nab_sigmoid(-1.0);
}

/* What a detection at row i outside every window costs (a negative number), 0 in the
 * probationary period. */
static double nab_fp_value(const bench_scoring_nab_file *f, size_t i,
			   const bench_scoring_nab_profile *p, size_t probation)
{
	const size_t(*prev)[2] = NULL;
	double y;

	if (i < probation)
		return 0.0;
	for (size_t w = 0; w < f->nwindows; w++)
		if (f->windows[w][1] < i && (!prev || f->windows[w][1] > (*prev)[1]))
			prev = &f->windows[w];
	if (!prev)
		return -p->fp_weight;
	{
		double wp = (double)((*prev)[1] - (*prev)[0] + 1);

		y = wp > 1.0 ? (double)(i - (*prev)[1]) / (wp - 1.0) : INFINITY;
	}
	return p->fp_weight * bench_scoring_nab_sigmoid(y);
}

/* The window holding row i, or -1. */
static long nab_window_of(const bench_scoring_nab_file *f, size_t i)
{
	for (size_t w = 0; w < f->nwindows; w++)
		if (f->windows[w][0] <= i && i <= f->windows[w][1])
			return (long)w;
	return -1;
}

double bench_scoring_nab_file_score(const bench_scoring_nab_file *f, double theta,
				    const bench_scoring_nab_profile *p)
{
	size_t probation = bench_scoring_nab_probation(f->n);
	double s = 0.0;

	for (size_t w = 0; w < f->nwindows; w++) {
		double v = -p->fn_weight;

		for (size_t i = f->windows[w][0]; i <= f->windows[w][1] && i < f->n; i++) {
			if (f->score[i] >= theta) {
				v = nab_tp_value(i, f->windows[w][0], f->windows[w][1], p);
				break;
			}
		}
		s += v;
	}
	for (size_t i = 0; i < f->n; i++)
		if (f->score[i] >= theta && nab_window_of(f, i) < 0)
			s += nab_fp_value(f, i, p, probation);
	return s;
}

double bench_scoring_nab_normalise(double raw, size_t nwindows,
				   const bench_scoring_nab_profile *p)
{
	double null_s = -p->fn_weight * (double)nwindows;
	double perfect = p->tp_weight * (double)nwindows;

	if (nwindows == 0)
		return NAN;
	return 100.0 * (raw - null_s) / (perfect - null_s);
}

typedef struct nab_event {
	double theta; /* the change applies once the threshold is at or below theta */
	double delta;
} nab_event;

static int cmp_event_desc(const void *a, const void *b)
{
	double x = ((const nab_event *)a)->theta, y = ((const nab_event *)b)->theta;

	return (x < y) - (x > y);
}

/* The corpus score is a step function of theta. Lowering theta adds detections: a detection
 * outside the windows adds its own fixed cost; a window's value is set by its earliest
 * detection, which moves earlier exactly when theta passes a new prefix maximum of the window's
 * scores. So every change is an event (theta, delta), and one sorted sweep evaluates S at every
 * distinct score value. */
int bench_scoring_nab_optimise(const bench_scoring_nab_file *files, size_t nfiles,
			       const bench_scoring_nab_profile *p, double *ret_theta,
			       double *ret_raw, double *ret_normalised)
{
	nab_event *ev = NULL;
	size_t nev = 0, cap = 0, nwindows = 0;
	double best_theta = INFINITY, best, s;
	int rc = 0;

	for (size_t f = 0; f < nfiles; f++) {
		cap += files[f].n;
		nwindows += files[f].nwindows;
	}
	if (nwindows == 0)
		return -EINVAL;
	ev = malloc((cap ? cap : 1) * sizeof(*ev));
	if (!ev)
		return -ENOMEM;
	for (size_t fi = 0; fi < nfiles; fi++) {
		const bench_scoring_nab_file *f = &files[fi];
		size_t probation = bench_scoring_nab_probation(f->n);

		for (size_t w = 0; w < f->nwindows; w++) {
			size_t l = f->windows[w][0], r = f->windows[w][1];
			size_t rec[64], nrec = 0, *recs = rec;
			double maxs = -INFINITY;

			if (r >= f->n)
				r = f->n - 1;
			/* records of the prefix maximum, left to right */
			if (r - l + 1 > sizeof(rec) / sizeof(rec[0])) {
				recs = malloc((r - l + 1) * sizeof(*recs));
				if (!recs) {
					rc = -ENOMEM;
					goto out;
				}
			}
			for (size_t i = l; i <= r; i++) {
				/* NaN is never a detection: it is never a record either. */
				if (f->score[i] > maxs) {
					maxs = f->score[i];
					recs[nrec++] = i;
				}
			}
			/* The highest record is the last one: first reached while lowering theta. */
			for (size_t k = nrec; k-- > 0;) {
				double now = nab_tp_value(recs[k], l, f->windows[w][1], p);
				double before = k + 1 < nrec ?
					nab_tp_value(recs[k + 1], l, f->windows[w][1], p) :
					-p->fn_weight;

				ev[nev++] = (nab_event){ f->score[recs[k]], now - before };
			}
			if (recs != rec)
				free(recs);
		}
		for (size_t i = probation; i < f->n; i++) {
			if (isnan(f->score[i]) || nab_window_of(f, i) >= 0)
				continue;
			ev[nev++] = (nab_event){ f->score[i], nab_fp_value(f, i, p, probation) };
		}
	}
	qsort(ev, nev, sizeof(*ev), cmp_event_desc);
	s = -p->fn_weight * (double)nwindows;
	best = s;
	for (size_t i = 0; i < nev;) {
		size_t j = i;

		while (j < nev && ev[j].theta == ev[i].theta)
			s += ev[j++].delta;
		if (s > best) {
			best = s;
			best_theta = ev[i].theta;
		}
		i = j;
	}
	/* The sweep accumulates rounding; report the exact score of the chosen threshold. */
	if (isfinite(best_theta)) {
		best = 0.0;
		for (size_t f = 0; f < nfiles; f++)
			best += bench_scoring_nab_file_score(&files[f], best_theta, p);
	}
	*ret_theta = best_theta;
	*ret_raw = best;
	*ret_normalised = bench_scoring_nab_normalise(best, nwindows, p);
out:
	free(ev);
	return rc;
}
