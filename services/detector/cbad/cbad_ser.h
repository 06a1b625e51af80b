/* SPDX-License-Identifier: Apache-2.0 */
/* cbad_ser: bounded little-endian writer and reader for detector state (internal to cbad). */
#ifndef DL_CBAD_SER_H
#define DL_CBAD_SER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A growing buffer. Any failed allocation sets failed; later writes are ignored, so a caller
 * checks failed once at the end. */
typedef struct cbad_writer {
	uint8_t *buf;
	size_t len, cap;
	bool failed;
} cbad_writer;

void cbad_w_bytes(cbad_writer *w, const void *p, size_t n);
void cbad_w_u8(cbad_writer *w, uint8_t v);
void cbad_w_u32(cbad_writer *w, uint32_t v);
void cbad_w_u64(cbad_writer *w, uint64_t v);
void cbad_w_i64(cbad_writer *w, int64_t v);
void cbad_w_f64(cbad_writer *w, double v); /* bit-exact */
void cbad_w_str(cbad_writer *w, const char *s); /* u32 length + bytes */
void cbad_writer_free(cbad_writer *w);

/* A reader over a buffer it does not own. Reading past the end sets failed and returns zeros,
 * so a caller checks failed once after reading a section. */
typedef struct cbad_reader {
	const uint8_t *p;
	size_t len, off;
	bool failed;
} cbad_reader;

void cbad_reader_init(cbad_reader *r, const void *p, size_t len);
bool cbad_r_bytes(cbad_reader *r, void *out, size_t n);
uint8_t cbad_r_u8(cbad_reader *r);
uint32_t cbad_r_u32(cbad_reader *r);
uint64_t cbad_r_u64(cbad_reader *r);
int64_t cbad_r_i64(cbad_reader *r);
double cbad_r_f64(cbad_reader *r);
/* Reads a string written by cbad_w_str into out (NUL-terminated); fails if it does not fit. */
bool cbad_r_str(cbad_reader *r, char *out, size_t outlen);
/* A u32 that must be <= max (a count read from untrusted state); fails otherwise. */
uint32_t cbad_r_count(cbad_reader *r, uint32_t max);

#endif /* DL_CBAD_SER_H */
