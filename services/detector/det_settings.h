/* SPDX-License-Identifier: Apache-2.0 */
/* det_settings: each stream's detector settings from PostgreSQL (registered on first sight, changes
 * polled) and its status written back in batches; all database work runs on a dl_pgpool. */
#ifndef DL_DETECTOR_SETTINGS_H
#define DL_DETECTOR_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "common/dl_metrics.h"
#include "common/dl_pgpool.h"
#include "services/detector/cbad/cbad.h"

typedef struct det_settings det_settings;

#define DET_SETTINGS_POLL_MIN_MS 100
#define DET_SETTINGS_POLL_MAX_MS 10000 /* a change made through the API applies within 10 s */
#define DET_SETTINGS_FLUSH_MIN_MS 100
#define DET_SETTINGS_FLUSH_MAX_MS 60000
#define DET_SETTINGS_STREAM_MAX 128 /* streams.name: [A-Za-z0-9._:-]{1,128} */

/*
 * A stream's settings, delivered on the loop thread. rc is 0 with s (valid for the call only),
 * the effective sensitivity (the stream's own, else its org's; already in s->sensitivity) and
 * paused (the user paused the stream: the caller stops judging its events); or negative with s
 * NULL:
 *   -EINVAL     org_id is not a UUID or stream is not a valid stream name (permanent: DLQ)
 *   -ENOENT     the org does not exist (permanent: DLQ)
 *   -ENOTCONN, -ECONNRESET, -ETIMEDOUT, -EAGAIN (pool queue full), -ECANCELED (shutting down),
 *   -EIO        transient: the caller retries later, keeping the stream's events
 * Stored settings the engine refuses (they were validated when written, so this means the
 * engine and the API disagree) are logged once per change and replaced by the defaults with
 * the effective sensitivity, so a stream is never stalled by its settings.
 */
typedef void (*det_settings_cb)(int rc, const char *org_id, const char *stream,
				const cbad_settings *s, double sensitivity, bool paused, void *arg);

/*
 * Makes the module on base (the loop), borrowing pool (the driftlock_detector role) and
 * registering its metrics in m. poll_ms (100 .. 10000) is how often changed settings are
 * polled; flush_ms (100 .. 60000) how often buffered status is written. Returns 0 and *ret, or
 * -EINVAL / -ENOMEM with text in errbuf. Loop thread.
 */
int det_settings_new(struct event_base *base, dl_pgpool *pool, dl_metrics_registry *m,
		     int64_t poll_ms, int64_t flush_ms, det_settings **ret, char *errbuf,
		     size_t errlen);

/*
 * Reads the settings of (org_id, stream), registering the stream with its org's defaults when
 * it has no row yet (INSERT ... ON CONFLICT DO NOTHING), and from then on watches it for
 * changes (det_settings_on_change) until det_settings_forget. cb runs exactly once, later, on
 * the loop (also on failure); the strings need not outlive the call. Loop thread.
 */
void det_settings_get(det_settings *ds, const char *org_id, const char *stream,
		      det_settings_cb cb, void *arg);

/*
 * Sets the callback that runs (rc 0) for each watched stream whose effective settings,
 * sensitivity or paused state changed since it was last delivered; a change made through the
 * API is delivered within poll_ms plus a query. cb NULL stops the polling. Loop thread.
 */
void det_settings_on_change(det_settings *ds, det_settings_cb cb, void *arg);

/* Stops watching (org_id, stream) (an evicted or revoked stream); a later get watches it again.
 * Buffered status of the stream is still written. Loop thread. */
void det_settings_forget(det_settings *ds, const char *org_id, const char *stream);

/*
 * Buffers the status of (org_id, stream): calibrating or active, calibration progress, events
 * seen, and the time of its last event (epoch ms; < 0 = unknown). Cheap enough to call per
 * event: the latest value per stream is kept and written every flush_ms in one transaction
 * (one UPDATE per org and 1000 streams). A paused stream stays paused; counters never move
 * backwards. A failed write is retried with the next flush. Loop thread.
 */
void det_settings_status(det_settings *ds, const char *org_id, const char *stream,
			 const cbad_status *st, int64_t last_event_ms);

/* Starts writing the buffered status now (for the drain) instead of at the next tick. */
void det_settings_flush(det_settings *ds);

/* Buffered status rows plus database jobs still running; the drain waits for 0. */
size_t det_settings_pending(const det_settings *ds);

/* Frees the module: buffered status not yet written is dropped (flush and wait for
 * det_settings_pending() == 0 first), callbacks of running jobs are not called. Must not be
 * called from one of its own callbacks. Loop thread; accepts NULL. */
void det_settings_free(det_settings *ds);

/* Pure helpers, exposed for tests. */

/* True when stream matches streams.name's rule ([A-Za-z0-9._:-]{1,128}). */
bool det_settings_stream_valid(const char *stream);

/* True when org_id is a UUID in text form (8-4-4-4-12 hex digits). */
bool det_settings_org_valid(const char *org_id);

/* The effective settings of a stream: the defaults, then the stored JSON object (len bytes; NULL
 * or empty = none) through cbad_settings_apply_json, then sensitivity (0..1). Returns 0 and
 * *ret, or -EINVAL with text (then *ret holds the defaults with the sensitivity when that is in
 * range, else the defaults). */
int det_settings_resolve(const char *json, size_t len, double sensitivity, cbad_settings *ret,
			 char *errbuf, size_t errlen);

#endif /* DL_DETECTOR_SETTINGS_H */
