/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_detector_private: test hooks of the detector, choosing which channels run (internal to cbad). */
#ifndef DL_CBAD_DETECTOR_PRIVATE_H
#define DL_CBAD_DETECTOR_PRIVATE_H

#include <stddef.h>
#include <stdint.h>

#include "services/detector/cbad/cbad.h"

enum {
	CBAD_CHANNEL_DRIFT = 1u << 0,   /* window drift */
	CBAD_CHANNEL_NUMERIC = 1u << 1, /* values, entities, rates (cbad_numeric) */
	CBAD_CHANNEL_TEXT = 1u << 2,    /* prose fields (cbad_text) */
	CBAD_CHANNEL_ALL = (1u << 3) - 1,
};

/* cbad_detector_new with only the novelty channel plus the channels set in channels
 * (CBAD_CHANNEL_*); cbad_detector_new uses CBAD_CHANNEL_ALL. Same contract otherwise. */
int cbad_detector_new_channels(const cbad_settings *s, uint32_t channels, cbad_detector **ret,
			       char *errbuf, size_t errlen);

#endif /* DL_CBAD_DETECTOR_PRIVATE_H */
