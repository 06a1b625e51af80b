/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_drift: whether the mix of the recent window of events drifted from the baseline (internal to cbad). */
#ifndef DL_CBAD_DRIFT_H
#define DL_CBAD_DRIFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "services/detector/cbad/cbad_ser.h"

#define CBAD_DRIFT_BUCKETS 512u /* template ids are hashed into this many buckets */

typedef struct cbad_drift cbad_drift;

/* What one window evaluation found. */
typedef struct cbad_drift_report {
	double kl_bits;  /* KL(window || baseline) of template frequencies, bits per event */
	double p_value;  /* conformal, against the stats of earlier non-drifting windows */
	uint32_t events; /* window length */
	int64_t start_ts, end_ts;
	double top_share, top_base_share; /* most over-represented template: window vs baseline */
	uint32_t top_bucket;              /* ... its bucket */
} cbad_drift_report;

/* Creates a drift channel: windows of window events, judged every step events against the
 * baseline_events events that preceded the window. Returns 0, -EINVAL or -ENOMEM. */
int cbad_drift_new(uint32_t window, uint32_t baseline_events, cbad_drift **ret);

/* Adds one event (its template id and time; learn = whether it may enter the baseline once it
 * leaves the window). Returns true and fills *out when a window was evaluated at this event
 * (then the caller tells cbad_drift_verdict whether it was a drift). Deterministic. */
bool cbad_drift_observe(cbad_drift *d, uint64_t template_id, int64_t ts_ms, bool learn,
			cbad_drift_report *out);

/* After an evaluation: drift = the caller flagged it. The stat joins the calibration
 * (winsorised at its largest when it was a drift). */
void cbad_drift_verdict(cbad_drift *d, const cbad_drift_report *rep, bool drift);

/* How much more often the template occurs in the window than in the baseline (>= 0); its
 * share of the window goes to *ret_share. */
double cbad_drift_overrep(const cbad_drift *d, uint64_t template_id, double *ret_share);

/* The share of template bucket among the last n events of the window (n is clamped to the
 * window's length; 0 for an empty window). O(n). */
double cbad_drift_recent_share(const cbad_drift *d, uint32_t bucket, uint32_t n);

/* Compression metrics, computed with zstd at level on whole buffers (no frame checksum or
 * content size). NCD(x,y) = (C(xy) - min(C(x),C(y))) / max(C(x),C(y)); 0 for two empty inputs. */
double cbad_drift_ncd(const void *x, size_t nx, const void *y, size_t ny, int level);
/* Compressed size over input size of buf (1 for an empty input). */
double cbad_drift_ratio(const void *buf, size_t len, int level);
/* Shannon entropy of the byte distribution of buf, in bits per byte (0 for an empty input). */
double cbad_drift_entropy(const void *buf, size_t len);

size_t cbad_drift_memory(const cbad_drift *d);
void cbad_drift_save(const cbad_drift *d, cbad_writer *w);
int cbad_drift_load(cbad_drift *d, cbad_reader *r);
void cbad_drift_free(cbad_drift *d);

#endif /* DL_CBAD_DRIFT_H */
