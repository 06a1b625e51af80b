/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_calib: conformal p-values against a ring of recent normal scores (internal to cbad). */
#ifndef DL_CBAD_CALIB_H
#define DL_CBAD_CALIB_H

#include <stddef.h>
#include <stdint.h>

#include "services/detector/cbad/cbad_ser.h"

typedef struct cbad_calib cbad_calib;

/* Creates a calibrator remembering the last cap (>= 8) scores; min_scale floors the scale of
 * the exponential tail used beyond the largest remembered score (in the score's unit).
 * Returns 0 or -ENOMEM / -EINVAL. */
int cbad_calib_new(uint32_t cap, double min_scale, cbad_calib **ret);

/* Conformal p-value of score s: (1 + #{remembered >= s}) / (1 + n). Above the largest
 * remembered score it continues as (1/(1+n)) * exp(-(s - max)/scale), scale being the mean
 * excess of the top max(4, n/32) scores over the smallest of them (floored at min_scale), so
 * that extreme scores stay ordered. n == 0 gives 1. O(log n). */
double cbad_calib_pvalue(const cbad_calib *c, double s);

/* Remembers s (forgetting the oldest once full). O(n) memmove of a sorted array. Scores are
 * stored as floats (4 B) while all of them are exact floats, as doubles (8 B) from the first
 * that is not, so ranks and p-values are always those of the exact scores. Out of memory
 * while moving to doubles, s is not remembered. */
void cbad_calib_add(cbad_calib *c, double s);

/* Remembers an anomaly's score: as it is when it is within one tail scale of the largest
 * remembered score (a borderline anomaly may raise the bar), else winsorised at the largest
 * (it counts as extreme without raising the bar for the next clear anomaly of a burst).
 * Leaving anomalies out instead would truncate the history at the threshold and ratchet the
 * false-positive rate upwards. */
void cbad_calib_add_capped(cbad_calib *c, double s);

size_t cbad_calib_count(const cbad_calib *c);

/* The q-quantile (0..1) of the remembered scores, 0 when empty. */
double cbad_calib_quantile(const cbad_calib *c, double q);

size_t cbad_calib_memory(const cbad_calib *c);

void cbad_calib_save(const cbad_calib *c, cbad_writer *w);
/* Loads into a calibrator created with the same cap; -EINVAL when the state is corrupt,
 * -ENOMEM when out of memory. */
int cbad_calib_load(cbad_calib *c, cbad_reader *r);

void cbad_calib_free(cbad_calib *c);

#endif /* DL_CBAD_CALIB_H */
