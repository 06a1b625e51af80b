/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_explain: the evidence and the plain sentence of an anomaly's explanation (internal to cbad). */
#ifndef DL_CBAD_EXPLAIN_H
#define DL_CBAD_EXPLAIN_H

#include <stddef.h>
#include <stdint.h>

#include "services/detector/cbad/cbad.h"
#include "services/detector/cbad/cbad_novelty.h"

/* Costs each part of the event alone given the baseline dictionary (each top-level member
 * "key":value of a JSON object, or each whitespace-separated token of a plain line, at most
 * 64 parts), canonicalised with mask, and writes the max costliest into out, costliest first
 * (name = the key or "token", value = the redacted text, bits = its cost). Returns how many.
 * Deterministic (ties keep the event's order). Only for anomalies: it compresses each part. */
size_t cbad_explain_top_parts(cbad_novelty *n, const char *raw, size_t len, uint32_t mask,
			      cbad_evidence *out, size_t max);

/* Writes r->summary: one plain sentence from r->signal, r->value, the baseline range, the
 * p-value and the first evidence item, phrased for r->kind. */
void cbad_explain_sentence(cbad_result *r);

#endif /* DL_CBAD_EXPLAIN_H */
