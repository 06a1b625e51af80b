/* SPDX-License-Identifier: Apache-2.0 */
/* det_anomaly: turns a CBAD verdict on one event into a driftlock.anomaly.v1 message. */
#ifndef DL_DETECTOR_ANOMALY_H
#define DL_DETECTOR_ANOMALY_H

#include <stddef.h>
#include <stdint.h>

#include "proto/proto_anomaly.h"
#include "proto/proto_event.h"
#include "services/detector/cbad/cbad.h"

/* The namespace of anomaly ids given to dl_id_derive(). */
#define DET_ANOMALY_ID_NS "driftlock.anomaly.v1"

/*
 * Writes the anomaly id of the event (org_id, stream, event_id): derived from the event's
 * identity only, so a replayed event gives the same id in every process. Cannot fail.
 */
void det_anomaly_id(const char *org_id, const char *stream, const char *event_id,
		    char out[PROTO_ID_MAX + 1]);

/*
 * Fills *ret from the event ev and the verdict r (r->anomaly must be true) judged with
 * sensitivity, detected at detected_at_ms. What CBAD says and the schema does not allow is
 * made to fit, never dropped silently: names outside A-Za-z0-9._:- get '_' for the offending
 * characters, non-finite numbers become 0, a baseline out of order is sorted, an evidence
 * value that is not a number moves into its detail, an empty summary gets a generic one.
 * Returns 0, or -EINVAL when r is not an anomaly (*ret untouched). Pure; thread-safe.
 */
int det_anomaly_from_result(const struct proto_event *ev, const cbad_result *r,
			    double sensitivity, int64_t detected_at_ms, struct proto_anomaly *ret);

#endif /* DL_DETECTOR_ANOMALY_H */
