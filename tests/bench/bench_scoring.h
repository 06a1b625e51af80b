/* SPDX-License-Identifier: Apache-2.0 */
/* bench_scoring: detection-quality metrics of the labeled streams and NAB's scoring rules. */
#ifndef DL_BENCH_SCORING_H
#define DL_BENCH_SCORING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BENCH_SCORING_MAX_KINDS 16
#define BENCH_SCORING_EPISODE_GAP 200 /* lines: the episode rule of datasets/streams/README.md */

/* One anomaly kind's share of a stream's metrics. */
typedef struct bench_scoring_kind {
	size_t labels, labels_flagged;
	size_t episodes, episodes_detected;
	double ttd_median, ttd_max; /* events, over detected episodes; 0 when none */
} bench_scoring_kind;

/* A stream's metrics, as datasets/streams/README.md "Scoring a detector" defines them. */
typedef struct bench_scoring_stream {
	size_t n, positives, flagged, tp, fp, fn;
	double precision, recall, f1;      /* at the detector's own decisions */
	double best_f1, best_threshold;    /* over every distinct score value */
	double pr_auc;                     /* step-wise average precision */
	size_t episodes, episodes_detected;
	double episode_recall;
	double ttd_median, ttd_max;        /* events, over detected episodes */
	double ttd_median_s, ttd_max_s;    /* seconds (difference of the two lines' times) */
	size_t nkinds;
	bench_scoring_kind kinds[BENCH_SCORING_MAX_KINDS];
} bench_scoring_stream;

/* Scores one stream of n lines: score[i] (higher = more anomalous; NaN ranks lowest),
 * flagged[i] (the detector's decision), label[i] (0/1), kind[i] (0..nkinds-1 for a labeled
 * line, ignored otherwise), ts_ms[i] (may be NULL: no times in seconds). Returns 0, -EINVAL
 * (nkinds too large, kind out of range) or -ENOMEM; *ret untouched on failure. */
int bench_scoring_stream_metrics(const double *score, const bool *flagged, const uint8_t *label,
				 const uint8_t *kind, size_t nkinds, const int64_t *ts_ms, size_t n,
				 bench_scoring_stream *ret);

/* A NAB scoring profile. */
typedef struct bench_scoring_nab_profile {
	const char *name;
	double tp_weight, fp_weight, fn_weight;
} bench_scoring_nab_profile;

extern const bench_scoring_nab_profile bench_scoring_nab_standard;
extern const bench_scoring_nab_profile bench_scoring_nab_low_fp;
extern const bench_scoring_nab_profile bench_scoring_nab_low_fn;

/* One NAB data file: its scores and its windows as inclusive row ranges. */
typedef struct bench_scoring_nab_file {
	const double *score;
	size_t n;
	const size_t (*windows)[2];
	size_t nwindows;
} bench_scoring_nab_file;

/* NAB's scaled sigmoid: 2/(1+e^(5y)) - 1, and exactly -1 when y > 3. */
double bench_scoring_nab_sigmoid(double y);

/* The probationary period of a file of n rows: min(floor(0.15 n), 750). */
size_t bench_scoring_nab_probation(size_t n);

/* Raw score S of one file at threshold theta (a detection is score >= theta). */
double bench_scoring_nab_file_score(const bench_scoring_nab_file *f, double theta,
				    const bench_scoring_nab_profile *p);

/* Searches the threshold that maximises the corpus' raw score over every distinct score of the
 * scored rows and a value above 1 (no detections): writes the best theta (INFINITY for "no
 * detections"), its raw score and the normalised score 100 (S - S_null)/(S_perfect - S_null).
 * Returns 0, -EINVAL (no windows in the corpus) or -ENOMEM; outputs untouched on failure. */
int bench_scoring_nab_optimise(const bench_scoring_nab_file *files, size_t nfiles,
			       const bench_scoring_nab_profile *p, double *ret_theta,
			       double *ret_raw, double *ret_normalised);

/* 100 (raw - S_null)/(S_perfect - S_null) for a set of files holding nwindows windows; NAN when
 * nwindows is 0. */
double bench_scoring_nab_normalise(double raw, size_t nwindows,
				   const bench_scoring_nab_profile *p);

#endif /* DL_BENCH_SCORING_H */
