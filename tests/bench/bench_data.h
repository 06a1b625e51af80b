/* SPDX-License-Identifier: Apache-2.0 */
/* bench_data: loads the labeled streams (gzip NDJSON + labels CSV) and the NAB files for the benchmarks. */
#ifndef DL_BENCH_DATA_H
#define DL_BENCH_DATA_H

#include <stddef.h>
#include <stdint.h>

#define BENCH_DATA_NAME_MAX 128
#define BENCH_DATA_MAX_KINDS 16

/* One labeled stream held in memory: line i is text + off[i], len[i] bytes (NUL-terminated). */
typedef struct bench_data_stream {
	char name[BENCH_DATA_NAME_MAX];
	size_t n;
	char *text;
	size_t *off, *len;
	int64_t *ts_ms;  /* the line's "ts" (RFC 3339 or epoch ms); the line number when absent */
	uint8_t *label;  /* 0/1 */
	uint8_t *kind;   /* index into kind_names for a labeled line */
	size_t nkinds;
	char kind_names[BENCH_DATA_MAX_KINDS][32];
} bench_data_stream;

/* Lists the streams of dir/manifest.json ("streams" keys, in file order) into a malloc'd array
 * of names. Returns 0 or a negative errno with text in errbuf; outputs untouched on failure. */
int bench_data_stream_names(const char *dir, char (**ret_names)[BENCH_DATA_NAME_MAX],
			    size_t *ret_n, char *errbuf, size_t errlen);

/* Loads dir/<name>.ndjson.gz and dir/<name>.labels.csv (which must have one row per line).
 * Returns 0 or a negative errno with text in errbuf; *ret untouched on failure. */
int bench_data_stream_load(const char *dir, const char *name, bench_data_stream **ret,
			   char *errbuf, size_t errlen);

void bench_data_stream_free(bench_data_stream *s);

/* Extracts the "ts" of a JSON line as epoch ms. Returns 0, or -ENOENT when there is none,
 * -EINVAL when it does not parse; *ret_ms untouched on failure. */
int bench_data_line_ts(const char *line, size_t len, int64_t *ret_ms);

/* One NAB data file: rows of (timestamp text, value text) and its windows as row ranges. */
typedef struct bench_data_nab_file {
	char path[BENCH_DATA_NAME_MAX]; /* "<group>/<file>.csv", relative to data/ */
	char group[BENCH_DATA_NAME_MAX];
	size_t n;
	char (*ts)[20];    /* "YYYY-MM-DD HH:MM:SS" */
	int64_t *ts_ms;    /* the timestamp read as UTC */
	char (*value)[32]; /* the value as written */
	size_t nwindows;
	size_t (*windows)[2];
} bench_data_nab_file;

/* Loads every dir/data/<group>/<file>.csv (groups and files in name order) with the windows of
 * dir/windows.json. Returns 0 or a negative errno with text in errbuf. */
int bench_data_nab_load(const char *dir, bench_data_nab_file **ret_files, size_t *ret_n,
			char *errbuf, size_t errlen);

void bench_data_nab_free(bench_data_nab_file *files, size_t n);

#endif /* DL_BENCH_DATA_H */
