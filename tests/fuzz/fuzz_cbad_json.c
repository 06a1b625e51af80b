/* SPDX-License-Identifier: Apache-2.0 */
/* fuzz_cbad_json: libFuzzer target over cbad_json's field scanner and the JSON-aware masking. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "services/detector/cbad/cbad.h"
#include "services/detector/cbad/cbad_canon.h"
#include "services/detector/cbad/cbad_json.h"

#define FIELDS_MAX 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Checks the scanner's contract on one buffer: it returns at most max fields or -EINVAL, and
 * every field it reports names a NUL-terminated path that fits, with a hash of that path, and
 * a string that lies inside the input. */
static void check_scan(const char *raw, size_t len, size_t max)
{
	cbad_json_field f[FIELDS_MAX];
	int n = cbad_json_scan(raw, len, f, max);

	if (n < 0)
		return;
	if ((size_t)n > max)
		abort();
	for (int i = 0; i < n; i++) {
		size_t plen = strnlen(f[i].path, sizeof(f[i].path));

		if (plen >= sizeof(f[i].path))
			abort();
		if (f[i].path_hash != cbad_json_hash(CBAD_JSON_HASH_INIT, f[i].path, plen))
			abort();
		if (f[i].type < CBAD_JSON_NUMBER || f[i].type > CBAD_JSON_NULL)
			abort();
		if (f[i].type == CBAD_JSON_STRING &&
		    (f[i].str < raw || f[i].str + f[i].str_len > raw + len))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size heap copy, so that AddressSanitizer catches any read past the end: the
	 * input is not NUL-terminated, as events are not. */
	char *raw = malloc(size ? size : 1);
	char *out;
	size_t n;

	if (!raw)
		return 0;
	memcpy(raw, data, size);
	check_scan(raw, size, FIELDS_MAX);
	check_scan(raw, size, size ? data[0] % 4 : 0); /* a small max truncates, never overflows */
	/* The masking of JSON numbers tracks strings and escapes: it never grows the input. */
	out = malloc(size ? size : 1);
	if (out) {
		n = cbad_canon_mask(raw, size, CBAD_MASK_ALL, out, size);
		if (n > size)
			abort();
		free(out);
	}
	free(raw);
	return 0;
}
