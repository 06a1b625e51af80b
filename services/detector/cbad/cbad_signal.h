/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_signal: what one channel of the detector says about one event (internal to cbad). */
#ifndef DL_CBAD_SIGNAL_H
#define DL_CBAD_SIGNAL_H

#include <stdint.h>

#include "services/detector/cbad/cbad.h"

/* One channel's verdict. p_value is calibrated on that channel's own recent history of normal
 * events: on exchangeable normal data, P(p_value < a) <= a (up to the calibration's
 * resolution). The detector combines signals; the explanation is built from the strongest. */
typedef struct cbad_chan_signal {
	cbad_kind kind;
	char name[32];   /* "novelty", "drift", "value:cpu", "entity:host:cpu", "rate:result=failure" */
	double stat;     /* the channel's own statistic, larger = stranger */
	double p_value;  /* (0, 1] */
	double value;    /* what was observed */
	double base_low, base_median, base_high; /* the typical range it is compared with */
	char field[CBAD_FIELD_NAME_MAX];
	char entity_field[CBAD_FIELD_NAME_MAX]; /* empty when not per entity */
	char entity_value[128];
	char detail[160]; /* a plain phrase: "cpu 97.5 is far above host web-3's usual 20-35" */
} cbad_chan_signal;

#endif /* DL_CBAD_SIGNAL_H */
