/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_rate: bursts and drops in how often a kind of event occurs (internal to cbad). */
#ifndef DL_CBAD_RATE_H
#define DL_CBAD_RATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "services/detector/cbad/cbad_ser.h"
#include "services/detector/cbad/cbad_values.h"

/*
 * Rates are shares of the stream's events, not events per second: "this kind of event makes
 * up 40 % of the last 32 events but 2 % of the last 4096". That keeps the test independent of
 * the stream's traffic, needs no clock and stays deterministic. The count of a kind in the
 * recent window is compared with a Poisson law whose mean is the kind's long-run share times
 * the window; the Poisson tail is then calibrated conformally over the stream's own history
 * (cbad_values_calib), which absorbs the over-dispersion of real traffic.
 */

#define CBAD_RATE_SHORT 32    /* events: window of the burst test */
#define CBAD_RATE_MID 256     /* events: window of the drop test */
#define CBAD_RATE_LONG 4096   /* events: memory of the long-run share */
#define CBAD_RATE_LASTING 2048 /* events: an excess this old is a change of the mix, not a burst */
#define CBAD_RATE_SETS 64     /* kinds table: 64 sets of 4, least recently seen evicted */
#define CBAD_RATE_WAYS 4
#define CBAD_RATE_LABEL_MAX 48

/* Lazily decayed EW shares of one kind (or entity) among the stream's events. 24 bytes. */
typedef struct cbad_rate_ew {
	float s_short, s_mid, s_long;
	float s_aux;   /* a fourth share: the kinds table's over CBAD_RATE_LASTING events, or one
			* the caller keeps itself (an entity's recent share) */
	uint64_t last; /* stream event index of the last update */
} cbad_rate_ew;

/* log10 P(X >= c) and log10 P(X <= c) for X ~ Poisson(lambda), c real >= 0 (regularised
 * incomplete gamma). Return 0 (p = 1) for degenerate arguments. */
double cbad_rate_log10_upper(double c, double lambda);
double cbad_rate_log10_lower(double c, double lambda);
/* log10 P(X >= c) for an exponentially weighted count X over a window of w events with mean
 * lambda: the Poisson tail of the count with the same mean and variance (a count of
 * (2 - 1/w) times as many events). The law of the burst test's statistic, the floor of its
 * calibrated p-value. Pure. */
double cbad_rate_log10_upper_ew(double c, double lambda, double w);
/* log10 P(X <= c) for the same count. Pure. */
double cbad_rate_log10_lower_ew(double c, double lambda, double w);

/* The helpers below decay a share over the events between its last occurrence and now only:
 * learning an occurrence is itself one step of decay. */
/* Burst test of one occurrence at stream index now, before learning it: observed = the
 * occurrences in the last w_short events plus this one, expected = w_short times the long-run
 * share (at least prior). Returns -log10 of the Poisson upper tail (>= 0, continuous). */
double cbad_rate_ew_burst(const cbad_rate_ew *e, uint64_t now, double w_short, double w_long,
			  double prior, double *ret_observed, double *ret_expected);
/* The same comparison as a cheap standardised excess (obs - exp) / sqrt(exp + 1/4), to pick the
 * strongest of several kinds before computing one exact tail. */
double cbad_rate_ew_excess(const cbad_rate_ew *e, uint64_t now, double w_short, double w_long,
			   double prior, double *ret_observed, double *ret_expected);
/* Learns one occurrence at stream index now. */
void cbad_rate_ew_learn(cbad_rate_ew *e, uint64_t now, double w_short, double w_long);

/* Learns a rate statistic (a burst count, an entity's share, new partners) into its calibrator
 * only when it is ordinary (p >= CBAD_CALIB_SKIP), with no budget for a lasting change: the
 * statistic is measured against the kind's own EW share, which absorbs a lasting change by
 * itself, so every event of a burst is judged against the calibration from before it. */
void cbad_rate_calib_learn(cbad_values_calib *c, double stat, double p);

typedef struct cbad_rate cbad_rate;

/* One kind the current event belongs to: a key (hash) and a label for explanations. */
typedef struct cbad_rate_key {
	uint64_t key;
	const char *label;
	size_t label_len;
} cbad_rate_key;

typedef struct cbad_rate_verdict {
	bool valid;     /* false until the channel has enough history */
	double stat;    /* -log10 of the Poisson tail */
	double p_value; /* calibrated */
	double observed, expected; /* occurrences in the window, and the usual number */
	double window;             /* events in the window */
	double base_low, base_high; /* the usual range of the count (central 98 %) */
	uint64_t key;   /* the kind's key */
	char label[CBAD_RATE_LABEL_MAX]; /* a drop's label is empty in an unlabeled table */
} cbad_rate_verdict;

/* Creates an empty channel. Returns 0 or -ENOMEM; *ret untouched on failure. */
int cbad_rate_new(cbad_rate **ret);
/* The same without label text (12 KiB less): a burst's label is the event's own key label, a
 * drop's is left empty (the caller rebuilds it from verdict.key, or does not report drops). */
int cbad_rate_new_unlabeled(cbad_rate **ret);

/* One event, belonging to keys[0..nkeys): the strongest burst among its kinds, and a drop test
 * of one remembered kind (round robin, only kinds common enough for a drop to be visible).
 * Counts the event in its kinds' windows always; learns the calibrators only when learn.
 * Deterministic; no allocation. */
void cbad_rate_observe(cbad_rate *r, const cbad_rate_key *keys, size_t nkeys, bool learn,
		       cbad_rate_verdict *burst, cbad_rate_verdict *drop);

size_t cbad_rate_memory(const cbad_rate *r);
/* r may be NULL: a table not made yet saves what a new table saves. */
void cbad_rate_save(const cbad_rate *r, cbad_writer *w);
/* Returns 0 or -EINVAL when the state is corrupt. */
int cbad_rate_load(cbad_rate *r, cbad_reader *rd);
void cbad_rate_free(cbad_rate *r);

#endif /* DL_CBAD_RATE_H */
