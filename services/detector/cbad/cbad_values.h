/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_values: robust per-field value models (spike, level shift, flatline) and their calibration (internal to cbad). */
#ifndef DL_CBAD_VALUES_H
#define DL_CBAD_VALUES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "services/detector/cbad/cbad_ser.h"

/*
 * The three building blocks are plain fixed-size structs so that the stream and every entity
 * can embed them by value (bounded memory, no allocation per event). Their fields are private
 * to cbad_values.c: use the functions.
 */

#define CBAD_CALIB_WINDOW 256 /* statistics remembered per calibrator */
#define CBAD_CALIB_BINS 128   /* histogram bins over log1p(stat), 1/16 wide */
#define CBAD_CALIB_MIN 64     /* statistics needed before p-values are given */
#define CBAD_CALIB_TAIL 16    /* beyond the 16th largest, the tail is extrapolated */

/* Conformal calibrator: the p-value of a statistic is its upper rank among the last
 * CBAD_CALIB_WINDOW statistics of the same kind; past the largest few, an exponential tail
 * fitted on log1p(stat) of the top CBAD_CALIB_TAIL (a peaks-over-threshold fit) gives p-values
 * finer than 1/window. 520 bytes: exact integer bin counts, O(1) insert, a rank sums at most
 * 64 counts. */
typedef struct cbad_values_calib {
	uint16_t count[CBAD_CALIB_BINS];    /* statistics per bin (ranks and the tail) */
	uint8_t ring[CBAD_CALIB_WINDOW];    /* bins of the remembered statistics, oldest at pos */
	uint16_t pos, n;
	float skipped; /* EW share of statistics not remembered by _learn */
} cbad_values_calib;

void cbad_values_calib_init(cbad_values_calib *c);
bool cbad_values_calib_ready(const cbad_values_calib *c);
/* p-value in (0, 1] of stat >= 0 (larger = stranger). Deterministic. */
double cbad_values_calib_p(const cbad_values_calib *c, double stat);
/* The same for a statistic that is -log10 of a model's p-value: the tail beyond the largest
 * few is extrapolated exponentially in stat itself (see docs/algorithm.md, section 5). */
double cbad_values_calib_p_logp(const cbad_values_calib *c, double stat);
/* Remembers stat (the oldest is forgotten once the window is full). */
void cbad_values_calib_add(cbad_values_calib *c, double stat);
/* Remembers stat as a normal one, given its p-value p: a statistic with p below
 * CBAD_CALIB_SKIP is left out (an anomaly is not the norm it is judged by) unless more than
 * CBAD_CALIB_SKIP_BUDGET of recent statistics were left out: then what looked strange is the
 * new normal and is learned, so a calibration can never lock itself on a stale past. */
#define CBAD_CALIB_SKIP 0.002
#define CBAD_CALIB_SKIP_BUDGET 0.02
#define CBAD_CALIB_SKIP_MEMORY 2048 /* statistics the skipped share is averaged over */
void cbad_values_calib_learn(cbad_values_calib *c, double stat, double p);
/* The stat at upper quantile q (0..1) of the remembered ones, e.g. q=0.5: the median. */
double cbad_values_calib_quantile(const cbad_values_calib *c, double q);
void cbad_values_calib_save(const cbad_values_calib *c, cbad_writer *w);
/* Returns 0 or -EINVAL (r->failed, or a bin or count out of range). */
int cbad_values_calib_load(cbad_values_calib *c, cbad_reader *r);

/* Long calibrator: the same p-value (rank, then the log1p tail past the CBAD_CALIB_TAIL
 * largest) over an exponentially weighted histogram of the last ~CBAD_LCALIB_MEMORY
 * statistics instead of a ring of 256. Ranks go down to 1/4096 before the tail takes over, for
 * the few calibrators that see every event (the kind-level correction of cbad_numeric), where
 * the detector needs p-values below 1/256 that stay calibrated. 1048 bytes, O(bins) per add. */
#define CBAD_LCALIB_MEMORY 4096
typedef struct cbad_values_lcalib {
	/* decayed weights of the bins and their sum, both times scale: the newest statistic adds
	 * scale, and decay is scale /= keep, so a learn is O(1) instead of one multiply per bin */
	double count[CBAD_CALIB_BINS];
	double total;
	double scale; /* >= 1, renormalised to 1 past CBAD_LCALIB_RESCALE */
	float skipped; /* EW share of statistics not remembered */
	uint32_t seen;
	uint8_t record; /* consecutive records with p < CBAD_CALIB_SKIP so far */
} cbad_values_lcalib;

void cbad_values_lcalib_init(cbad_values_lcalib *c);
bool cbad_values_lcalib_ready(const cbad_values_lcalib *c);
double cbad_values_lcalib_p(const cbad_values_lcalib *c, double stat);
/* Remembers stat given its p, except (within CBAD_CALIB_SKIP_BUDGET) when p < CBAD_LCALIB_SKIP,
 * or when stat is beyond every remembered one with p < CBAD_CALIB_SKIP right after another
 * such record (a growing anomaly). */
#define CBAD_LCALIB_SKIP 1e-4
#define CBAD_LCALIB_RECORD_RUN 8
void cbad_values_lcalib_learn(cbad_values_lcalib *c, double stat, double p);
/* The same; a record that is learned is clipped to one bin above the current top only when
 * clip (cbad_values_lcalib_learn clips always): for statistics of a growing anomaly. */
void cbad_values_lcalib_learn_clip(cbad_values_lcalib *c, double stat, double p, bool clip);
void cbad_values_lcalib_save(const cbad_values_lcalib *c, cbad_writer *w);
/* Returns 0 or -EINVAL (r->failed, or a weight out of range). */
int cbad_values_lcalib_load(cbad_values_lcalib *c, cbad_reader *r);

/* Robust exponentially weighted model of one numeric series: a Huber-clipped EW mean and
 * variance (memory ~128 values), a fast EW mean (~8 values) that predicts the next value, the
 * EW variance of that prediction's error (spikes are judged against the prediction, so a slow
 * cycle or autocorrelated noise does not hide them), the last value and its run length for
 * flatlines, and the previous value's standardised prediction error (a step is two strange
 * values in a row on the same side). 48 bytes. */
typedef struct cbad_values_model {
	double mu, fast, last;
	float var, res;
	float rvar; /* EW variance of the one-step prediction error x - fast */
	float zprev; /* the previous value's signed prediction error, in prediction sigmas */
	uint16_t n; /* saturates at 65535 */
	uint16_t run;
	uint32_t pad_; /* always 0: no uninitialised padding in a saved or compared state */
} cbad_values_model;

/* What a model says about a value, before learning it. */
typedef struct cbad_values_judgement {
	double z;     /* |x - prediction| / sigma of the prediction error */
	double pred, pred_sigma;
	double shift; /* level step: the smaller of |this| and |the previous| standardised
		       * prediction error when both lie on the same side, else 0 */
	uint32_t run; /* x equals the previous value run-1 times in a row */
	double mean, sigma;
	double fast; /* the fast mean including x */
} cbad_values_judgement;

#define CBAD_VALUES_MIN_N 16 /* values a model needs before it judges */

void cbad_values_model_init(cbad_values_model *m);
bool cbad_values_model_ready(const cbad_values_model *m);
void cbad_values_model_judge(const cbad_values_model *m, double x, cbad_values_judgement *j);
void cbad_values_model_learn(cbad_values_model *m, double x);
void cbad_values_model_save(const cbad_values_model *m, cbad_writer *w);
void cbad_values_model_load(cbad_values_model *m, cbad_reader *r);

/* Long-run level of a series: a Huber-clipped EW mean and variance over ~CBAD_LEVEL_MEMORY
 * values, and a long calibrator of |x - mean| / sigma. It asks whether a value lies outside the
 * range the series kept over its long history (a new high or low), which the spike and step
 * tests, judged against the last few values, cannot say: a series whose spikes are routine
 * gives every spike the same tail p, however far beyond the history it goes. 1080 bytes. */
#define CBAD_LEVEL_MEMORY 1024 /* values the level's mean and variance remember */
#define CBAD_LEVEL_MIN_CAL 256 /* statistics the calibrator needs before p-values are given */
typedef struct cbad_values_level {
	double mu, var;
	uint32_t n; /* values learned (saturates) */
	uint32_t pad_; /* always 0 */
	cbad_values_lcalib cal;
} cbad_values_level;

void cbad_values_level_init(cbad_values_level *l);
/* |x - mean| / sigma, sigma floored at half of res (the series' smallest step, 0 if unknown)
 * and at 1e-9 (1 + |mean|); 0 before the level has CBAD_VALUES_MIN_N values. */
double cbad_values_level_stat(const cbad_values_level *l, double x, double res);
/* p-value of stat, 1 until the calibrator has CBAD_LEVEL_MIN_CAL statistics. */
double cbad_values_level_p(const cbad_values_level *l, double stat);
/* Learns x, and its stat (from cbad_values_level_stat, before learning) into the
 * calibrator: every one, at its height, so that a recurring excursion becomes known. */
void cbad_values_level_learn(cbad_values_level *l, double x, double stat);
void cbad_values_level_save(const cbad_values_level *l, cbad_writer *w);
/* Returns 0 or -EINVAL. */
int cbad_values_level_load(cbad_values_level *l, cbad_reader *r);

/* Daily shape of a series: the mean of each time-of-day slot (CBAD_SEASON_SLOTS slots of the
 * UTC day, an EW over its last ~CBAD_SEASON_MEMORY values), and a long-run level of the residual
 * x - slot mean. It asks whether a value lies off the series' usual daily shape by more than
 * such departures usually do: a daily pattern at the wrong height, or a daily swing that did
 * not come, which neither the level (the whole day's range) nor the spike test (the last few
 * values) can see. The residual is judged against its own long-run spread over every slot,
 * not against a slot's own: a slot's few values make its spread thin, and ordinary noise
 * around the shape looked strange (round 9). */
#define CBAD_SEASON_SLOTS 48     /* half-hour slots of the UTC day */
#define CBAD_SEASON_MEMORY 16    /* values a slot's mean remembers */
#define CBAD_SEASON_MIN_SLOT 3   /* values a slot needs before its residual is judged */
typedef struct cbad_values_season {
	float mean[CBAD_SEASON_SLOTS];
	uint16_t n[CBAD_SEASON_SLOTS]; /* values learned per slot (saturates) */
	cbad_values_level resid;
} cbad_values_season;

void cbad_values_season_init(cbad_values_season *s);
/* The slot of a timestamp (ms since the epoch, UTC), or -1 when ts_ms <= 0. */
int cbad_values_season_slot(int64_t ts_ms);
/* Whether the slot has a mean to compare with. */
bool cbad_values_season_ready(const cbad_values_season *s, int slot);
/* The residual's statistic |r - mean_r| / sigma_r of x in slot (the level statistic of
 * x - slot mean); 0 when the slot is not ready. */
double cbad_values_season_stat(const cbad_values_season *s, int slot, double x, double res);
/* p-value of stat, 1 until the residual's calibrator has CBAD_LEVEL_MIN_CAL statistics. */
double cbad_values_season_p(const cbad_values_season *s, double stat);
/* Learns x into its slot (Huber-clipped at 4 residual sigmas once the residual has a spread),
 * and the residual and its stat into the residual's level when the slot was ready. */
void cbad_values_season_learn(cbad_values_season *s, int slot, double x, double stat, double res);
void cbad_values_season_save(const cbad_values_season *s, cbad_writer *w);
/* Returns 0 or -EINVAL. */
int cbad_values_season_load(cbad_values_season *s, cbad_reader *r);

/* Run-length statistics of repeated values, a two-state Markov chain (value changed / value
 * repeated) with decaying counts: P(a run reaches length r) = q1 * q2^(r-2). */
typedef struct cbad_values_runs {
	double opp1, rep1; /* after a change: transitions seen, of which repeats */
	double opp2, rep2; /* after a repeat: transitions seen, of which repeats */
} cbad_values_runs;

void cbad_values_runs_init(cbad_values_runs *r);
/* Whether flatlines of this series are worth testing: exact repeats are rare in it (a
 * continuous-looking value, unlike a status code or a count). */
bool cbad_values_runs_testable(const cbad_values_runs *r);
/* p-value of a run of length run (>= 2); 1 for shorter runs. */
double cbad_values_runs_p(const cbad_values_runs *r, uint32_t run);
/* Learns one transition: the previous value's run length was prev_run (0 or 1 = it had just
 * changed), the new one's is run (1 = the value changed, >= 2 = it repeated). */
void cbad_values_runs_learn(cbad_values_runs *r, uint32_t prev_run, uint32_t run);
void cbad_values_runs_save(const cbad_values_runs *r, cbad_writer *w);
void cbad_values_runs_load(cbad_values_runs *r, cbad_reader *r_);

/* r clipped to [-lim, lim] (lim >= 0): Huber's clip of a residual before it updates a mean, so
 * that one excursion barely moves it. NaN passes unchanged. */
static inline double cbad_huber_clip(double r, double lim)
{
	return r > lim ? lim : r < -lim ? -lim : r;
}

#endif /* DL_CBAD_VALUES_H */
