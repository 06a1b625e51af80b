/* SPDX-License-Identifier: Apache-2.0 */
/* fuzz_cbad_canon: libFuzzer target over canonicalisation, redaction, field scan and the detector. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "services/detector/cbad/cbad.h"
#include "services/detector/cbad/cbad_canon.h"
#include "services/detector/cbad/cbad_explain.h"
#include "services/detector/cbad/cbad_novelty.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static cbad_novelty *nov;
	const char *in = (const char *)data;
	char *out = malloc(size + 1);
	char red[64], big[4096];
	cbad_evidence ev[3];
	cbad_settings s;
	cbad_detector *d = NULL;
	cbad_result r;
	size_t n;

	if (!out)
		return 0;
	/* Masking never grows the input and respects its buffer, whatever the mask. */
	n = cbad_canon_mask(in, size, CBAD_MASK_ALL, out, size);
	if (n > size)
		abort();
	(void)cbad_canon_template(out, n);
	n = cbad_canon_mask(in, size, size ? data[0] & CBAD_MASK_ALL : 0, out, size / 2);
	if (n > size / 2)
		abort();
	/* Redaction is NUL-terminated and truncated to fit, small and large (the input may hold
	 * NUL bytes of its own, so only the terminator is checked). */
	n = cbad_canon_redact(in, size, red, sizeof(red));
	if (n >= sizeof(red) || red[n] != '\0')
		abort();
	n = cbad_canon_redact(in, size, big, sizeof(big));
	if (n >= sizeof(big) || big[n] != '\0')
		abort();
	/* The field scan of the explanation. */
	if (!nov && cbad_novelty_new(1, 4096, &nov) == 0)
		cbad_novelty_rebuild(nov, "{\"a\":1,\"b\":\"x\"}\n", 16);
	if (nov && size < 8192)
		(void)cbad_explain_top_parts(nov, in, size, CBAD_MASK_ALL, ev, 3);
	/* The detector over the input split into lines, with the JSON field scanner. */
	cbad_settings_default(&s);
	s.baseline_events = 32;
	s.hop_events = 4;
	s.window_events = 16;
	s.baseline_bytes = 4096;
	if (cbad_detector_new(&s, &d, NULL, 0) == 0) {
		size_t start = 0;

		for (size_t i = 0; i <= size; i++)
			if (i == size || data[i] == '\n') {
				cbad_detector_process(d, in + start, i - start, (int64_t)i, &r);
				if (r.anomaly && strlen(r.summary) >= sizeof(r.summary))
					abort();
				start = i + 1;
			}
		cbad_detector_free(d);
	}
	free(out);
	return 0;
}
