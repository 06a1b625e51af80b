/* SPDX-License-Identifier: Apache-2.0 */
/* driftlock-scan: runs the CBAD engine over NDJSON or plain log lines from files or stdin and prints the anomalies. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "common/dl_time.h"
#include "services/detector/cbad/cbad.h"

#define SCAN_EXIT_OK 0
#define SCAN_EXIT_INPUT 1
#define SCAN_EXIT_USAGE 2
#define SCAN_DEFAULT_STREAM "default"
#define SCAN_MAX_STREAMS 4096
#define SCAN_STREAM_NAME_MAX 256

typedef enum scan_format { SCAN_FORMAT_NDJSON, SCAN_FORMAT_TEXT } scan_format;

typedef struct scan_stream {
	char name[SCAN_STREAM_NAME_MAX];
	cbad_detector *det;
} scan_stream;

typedef struct scan {
	cbad_settings settings;
	scan_format format;
	bool scores;
	const char *stream; /* --stream: all input is this one stream */
	size_t max_line_bytes;
	bool progress;
	bool multi_input;

	scan_stream *streams;
	size_t nstreams, last;

	uint64_t global_line; /* lines read over every input: the time of lines without "ts" */
	uint64_t lines, events, anomalies, skipped;
	double started, last_progress;
} scan;

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void usage(FILE *f)
{
	cbad_settings d;

	cbad_settings_default(&d);
	fprintf(f,
		"usage: driftlock-scan [options] [FILE...]\n"
		"\n"
		"Runs DriftLock's compression-based anomaly detector (CBAD) over events and prints\n"
		"the anomalies it finds. FILEs may be gzip-compressed; no FILE or '-' reads stdin.\n"
		"\n"
		"Input: one event per line. A line starting with '{' is a JSON object (NDJSON);\n"
		"anything else is a plain log line. A line that starts with '{' but is not valid JSON,\n"
		"a line longer than --max-line-bytes, or an invalid \"ts\" is reported on stderr as\n"
		"\"FILE:line N: ...\" and skipped; the scan goes on. Empty lines are skipped silently.\n"
		"Event time: the JSON field \"ts\" (RFC 3339, or epoch milliseconds as a number or a\n"
		"string of digits); without it, the line's position over all inputs (1, 2, 3, ...) is\n"
		"used as its time in milliseconds. Streams: one detector per value of the JSON field\n"
		"\"stream\" (lines without it, and plain lines, go to \"" SCAN_DEFAULT_STREAM "\"), at most %d\n"
		"streams; --stream puts all input into one stream. Line numbers are 1-based, per file.\n"
		"\n"
		"Options:\n"
		"  --settings JSON       stream settings as a JSON object (applied first; the flags\n"
		"                        below override it)\n"
		"  --sensitivity X       0.0 .. 1.0, higher finds more (default %.2f)\n"
		"  --baseline N          events in the baseline (default %u)\n"
		"  --window N            events per drift window (default %u)\n"
		"  --hop N               rebuild the baseline digest every N events (default %u)\n"
		"  --level N             zstd level of the structure channel (default %d)\n"
		"  --mask LIST           tokens masked for the structure channel: comma-separated\n"
		"                        timestamps,uuids,hex,numbers,ips,emails, or all, or none\n"
		"                        (default all)\n"
		"  --entity FIELD        an entity field (host, user, card, ip); repeatable, up to %d\n"
		"  --value FIELD         a numeric field to check; repeatable, up to %d (default: every\n"
		"                        numeric field found)\n"
		"  --stream NAME         treat all input as the one stream NAME\n"
		"  --format ndjson|text  anomalies as NDJSON (default) or as a readable table\n"
		"  --scores              instead of anomalies, print one JSON line per input line:\n"
		"                        {\"line\":N,\"score\":S,\"p_value\":P,\"anomaly\":B}; skipped lines\n"
		"                        carry \"score\":null and an \"error\"\n"
		"  --max-line-bytes N    longer lines are reported and skipped (default 1048576)\n"
		"  -h, --help            this text\n"
		"\n"
		"A progress bar is drawn on stderr when stderr is a terminal.\n"
		"Exit status: 0 the scan completed (bad lines, if any, were reported and skipped);\n"
		"1 an input could not be opened or read (the other inputs are still scanned);\n"
		"2 usage error (unknown option, bad value, invalid settings).\n",
		SCAN_MAX_STREAMS, d.sensitivity, d.baseline_events, d.window_events, d.hop_events,
		d.zstd_level, CBAD_MAX_ENTITY_FIELDS, CBAD_MAX_VALUE_FIELDS);
}

static int parse_u32(const char *opt, const char *s, uint32_t *ret)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v > UINT32_MAX) {
		fprintf(stderr, "driftlock-scan: %s: not a number in 0..%u: '%s'\n", opt, UINT32_MAX,
			s);
		return -EINVAL;
	}
	*ret = (uint32_t)v;
	return 0;
}

static int parse_mask(const char *s, uint32_t *ret)
{
	static const struct {
		const char *name;
		uint32_t bit;
	} names[] = {
		{ "timestamps", CBAD_MASK_TIMESTAMPS }, { "uuids", CBAD_MASK_UUIDS },
		{ "hex", CBAD_MASK_HEX },		{ "numbers", CBAD_MASK_NUMBERS },
		{ "ips", CBAD_MASK_IPS },		{ "emails", CBAD_MASK_EMAILS },
		{ "all", CBAD_MASK_ALL },		{ "none", 0 },
	};
	uint32_t mask = 0;
	const char *p = s;

	while (*p) {
		size_t len = strcspn(p, ","), k;

		for (k = 0; k < sizeof(names) / sizeof(names[0]); k++)
			if (strlen(names[k].name) == len && strncmp(names[k].name, p, len) == 0)
				break;
		if (k == sizeof(names) / sizeof(names[0])) {
			fprintf(stderr,
				"driftlock-scan: --mask: unknown token kind '%.*s' (timestamps, uuids, hex, numbers, ips, emails, all, none)\n",
				(int)len, p);
			return -EINVAL;
		}
		mask |= names[k].bit;
		p += len;
		if (*p == ',')
			p++;
	}
	*ret = mask;
	return 0;
}

static int add_field(const char *opt, const char *v, char (*fields)[CBAD_FIELD_NAME_MAX],
		     size_t *n, size_t max)
{
	if (*n >= max) {
		fprintf(stderr, "driftlock-scan: %s: at most %zu fields\n", opt, max);
		return -EINVAL;
	}
	if (!*v || strlen(v) >= CBAD_FIELD_NAME_MAX) {
		fprintf(stderr, "driftlock-scan: %s: a field name of 1..%d bytes\n", opt,
			CBAD_FIELD_NAME_MAX - 1);
		return -EINVAL;
	}
	memcpy(fields[*n], v, strlen(v) + 1);
	(*n)++;
	return 0;
}

/* Parses the command line into *sc; returns 0, or SCAN_EXIT_USAGE after printing the problem,
 * or -1 when --help was printed. *ret_first is the index of the first input. */
static int parse_args(scan *sc, int argc, char **argv, int *ret_first)
{
	static const struct option longopts[] = {
		{ "settings", required_argument, NULL, 'S' },
		{ "sensitivity", required_argument, NULL, 's' },
		{ "baseline", required_argument, NULL, 'b' },
		{ "window", required_argument, NULL, 'w' },
		{ "hop", required_argument, NULL, 'H' },
		{ "level", required_argument, NULL, 'l' },
		{ "mask", required_argument, NULL, 'm' },
		{ "entity", required_argument, NULL, 'e' },
		{ "value", required_argument, NULL, 'v' },
		{ "stream", required_argument, NULL, 'n' },
		{ "format", required_argument, NULL, 'f' },
		{ "scores", no_argument, NULL, 'c' },
		{ "max-line-bytes", required_argument, NULL, 'M' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	/* The flags override --settings wherever it appears, so they are applied after it. */
	const char *settings_json = NULL;
	cbad_settings flags;
	bool set_sens = false, set_base = false, set_win = false, set_hop = false,
	     set_level = false, set_mask = false;
	size_t nent = 0, nval = 0;
	char ents[CBAD_MAX_ENTITY_FIELDS][CBAD_FIELD_NAME_MAX];
	char vals[CBAD_MAX_VALUE_FIELDS][CBAD_FIELD_NAME_MAX];
	char err[512] = "";
	int c;

	memset(&flags, 0, sizeof(flags));
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		char *end;
		uint32_t u = 0;

		switch (c) {
		case 'S':
			settings_json = optarg;
			break;
		case 's':
			errno = 0;
			flags.sensitivity = strtod(optarg, &end);
			if (errno || end == optarg || *end ||
			    !(flags.sensitivity >= 0.0 && flags.sensitivity <= 1.0)) {
				fprintf(stderr,
					"driftlock-scan: --sensitivity: a number from 0.0 to 1.0, not '%s'\n",
					optarg);
				return SCAN_EXIT_USAGE;
			}
			set_sens = true;
			break;
		case 'b':
			if (parse_u32("--baseline", optarg, &flags.baseline_events))
				return SCAN_EXIT_USAGE;
			set_base = true;
			break;
		case 'w':
			if (parse_u32("--window", optarg, &flags.window_events))
				return SCAN_EXIT_USAGE;
			set_win = true;
			break;
		case 'H':
			if (parse_u32("--hop", optarg, &flags.hop_events))
				return SCAN_EXIT_USAGE;
			set_hop = true;
			break;
		case 'l':
			if (parse_u32("--level", optarg, &u) || u > 22) {
				if (u > 22)
					fprintf(stderr, "driftlock-scan: --level: 1..22, not '%s'\n",
						optarg);
				return SCAN_EXIT_USAGE;
			}
			flags.zstd_level = (int)u;
			set_level = true;
			break;
		case 'm':
			if (parse_mask(optarg, &flags.mask))
				return SCAN_EXIT_USAGE;
			set_mask = true;
			break;
		case 'e':
			if (add_field("--entity", optarg, ents, &nent, CBAD_MAX_ENTITY_FIELDS))
				return SCAN_EXIT_USAGE;
			break;
		case 'v':
			if (add_field("--value", optarg, vals, &nval, CBAD_MAX_VALUE_FIELDS))
				return SCAN_EXIT_USAGE;
			break;
		case 'n':
			if (!*optarg || strlen(optarg) >= SCAN_STREAM_NAME_MAX) {
				fprintf(stderr, "driftlock-scan: --stream: a name of 1..%d bytes\n",
					SCAN_STREAM_NAME_MAX - 1);
				return SCAN_EXIT_USAGE;
			}
			sc->stream = optarg;
			break;
		case 'f':
			if (strcmp(optarg, "ndjson") == 0) {
				sc->format = SCAN_FORMAT_NDJSON;
			} else if (strcmp(optarg, "text") == 0) {
				sc->format = SCAN_FORMAT_TEXT;
			} else {
				fprintf(stderr,
					"driftlock-scan: --format: 'ndjson' or 'text', not '%s'\n",
					optarg);
				return SCAN_EXIT_USAGE;
			}
			break;
		case 'c':
			sc->scores = true;
			break;
		case 'M':
			if (parse_u32("--max-line-bytes", optarg, &u))
				return SCAN_EXIT_USAGE;
			if (u < 1) {
				fprintf(stderr, "driftlock-scan: --max-line-bytes: at least 1\n");
				return SCAN_EXIT_USAGE;
			}
			sc->max_line_bytes = u;
			break;
		case 'h':
			usage(stdout);
			return -1;
		case '?':
		default:
			if (optopt) {
				const char *lname = NULL;

				for (size_t k = 0; longopts[k].name; k++)
					if (longopts[k].val == optopt)
						lname = longopts[k].name;
				if (lname)
					fprintf(stderr, "driftlock-scan: --%s: needs a value\n", lname);
				else
					fprintf(stderr, "driftlock-scan: unknown option -%c\n", optopt);
			} else
				fprintf(stderr, "driftlock-scan: unknown option or missing value: %s\n",
					argv[optind - 1]);
			fprintf(stderr, "Try 'driftlock-scan --help'.\n");
			return SCAN_EXIT_USAGE;
		}
	}
	if (settings_json &&
	    cbad_settings_apply_json(&sc->settings, settings_json, strlen(settings_json), err,
				     sizeof(err))) {
		fprintf(stderr, "driftlock-scan: --settings: %s\n", err);
		return SCAN_EXIT_USAGE;
	}
	if (set_sens)
		sc->settings.sensitivity = flags.sensitivity;
	if (set_base)
		sc->settings.baseline_events = flags.baseline_events;
	if (set_win)
		sc->settings.window_events = flags.window_events;
	if (set_hop)
		sc->settings.hop_events = flags.hop_events;
	if (set_level)
		sc->settings.zstd_level = flags.zstd_level;
	if (set_mask)
		sc->settings.mask = flags.mask;
	if (nent) {
		sc->settings.nentity_fields = nent;
		memcpy(sc->settings.entity_fields, ents, sizeof(ents));
	}
	if (nval) {
		sc->settings.nvalue_fields = nval;
		memcpy(sc->settings.value_fields, vals, sizeof(vals));
	}
	if (cbad_settings_validate(&sc->settings, err, sizeof(err))) {
		fprintf(stderr, "driftlock-scan: invalid settings: %s\n", err);
		return SCAN_EXIT_USAGE;
	}
	*ret_first = optind;
	return 0;
}

/* The detector of a stream, created on first use. NULL when the stream cap is reached or
 * memory ran out (the caller reports the line). */
static cbad_detector *stream_detector(scan *sc, const char *name, const char **ret_name)
{
	scan_stream *ns;
	char err[256] = "";

	if (sc->nstreams && strcmp(sc->streams[sc->last].name, name) == 0) {
		*ret_name = sc->streams[sc->last].name;
		return sc->streams[sc->last].det;
	}
	for (size_t i = 0; i < sc->nstreams; i++) {
		if (strcmp(sc->streams[i].name, name) == 0) {
			sc->last = i;
			*ret_name = sc->streams[i].name;
			return sc->streams[i].det;
		}
	}
	if (sc->nstreams >= SCAN_MAX_STREAMS)
		return NULL;
	ns = realloc(sc->streams, (sc->nstreams + 1) * sizeof(*ns));
	if (!ns)
		return NULL;
	sc->streams = ns;
	ns = &sc->streams[sc->nstreams];
	memset(ns, 0, sizeof(*ns));
	snprintf(ns->name, sizeof(ns->name), "%s", name);
	if (cbad_detector_new(&sc->settings, &ns->det, err, sizeof(err))) {
		fprintf(stderr, "driftlock-scan: stream %s: %s\n", name, err);
		return NULL;
	}
	sc->last = sc->nstreams++;
	*ret_name = ns->name;
	return ns->det;
}

static void print_skipped(scan *sc, uint64_t line, const char *what)
{
	cJSON *o;
	char *s;

	sc->skipped++;
	if (!sc->scores)
		return;
	o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "line", (double)line);
	cJSON_AddNullToObject(o, "score");
	cJSON_AddNullToObject(o, "p_value");
	cJSON_AddFalseToObject(o, "anomaly");
	cJSON_AddStringToObject(o, "error", what);
	s = cJSON_PrintUnformatted(o);
	if (s)
		puts(s);
	free(s);
	cJSON_Delete(o);
}

/* JSON numbers must be finite: NaN and infinities are printed as null. */
static void add_number(cJSON *o, const char *key, double v)
{
	if (v == v && v - v == 0.0)
		cJSON_AddNumberToObject(o, key, v);
	else
		cJSON_AddNullToObject(o, key);
}

static void print_result(scan *sc, const char *file, uint64_t line, const char *stream,
			 int64_t ts, const cbad_result *r)
{
	char tsbuf[DL_TIME_RFC3339_BUFSZ] = "";
	cJSON *o;
	char *s;

	if (sc->scores) {
		char buf[160];

		/* The hot path of benchmarks: no allocation. %.17g round-trips a double. */
		snprintf(buf, sizeof(buf), "{\"line\":%llu,\"score\":%.17g,\"p_value\":%.17g,\"anomaly\":%s}",
			 (unsigned long long)line, r->score == r->score ? r->score : 0.0,
			 r->p_value == r->p_value ? r->p_value : 1.0, r->anomaly ? "true" : "false");
		puts(buf);
		return;
	}
	if (!r->anomaly)
		return;
	if (dl_time_format_rfc3339(ts, tsbuf, sizeof(tsbuf), NULL, 0))
		snprintf(tsbuf, sizeof(tsbuf), "%lld", (long long)ts);
	if (sc->format == SCAN_FORMAT_TEXT) {
		printf("%-8llu %-16.16s %-24s %-7s %-8s %-9.3g %-20.20s %s\n",
		       (unsigned long long)line, stream, tsbuf, cbad_kind_name(r->kind),
		       cbad_severity_name(r->severity), r->p_value, r->signal, r->summary);
		return;
	}
	o = cJSON_CreateObject();
	if (sc->multi_input)
		cJSON_AddStringToObject(o, "file", file);
	cJSON_AddNumberToObject(o, "line", (double)line);
	cJSON_AddStringToObject(o, "stream", stream);
	cJSON_AddStringToObject(o, "ts", tsbuf);
	cJSON_AddStringToObject(o, "kind", cbad_kind_name(r->kind));
	add_number(o, "score", r->score);
	add_number(o, "p_value", r->p_value);
	cJSON_AddStringToObject(o, "severity", cbad_severity_name(r->severity));
	cJSON_AddStringToObject(o, "signal", r->signal);
	add_number(o, "value", r->value);
	{
		cJSON *b = cJSON_AddObjectToObject(o, "baseline");

		add_number(b, "low", r->base_low);
		add_number(b, "median", r->base_median);
		add_number(b, "high", r->base_high);
	}
	cJSON_AddStringToObject(o, "summary", r->summary);
	{
		cJSON *ev = cJSON_AddArrayToObject(o, "evidence");

		for (size_t i = 0; i < r->nevidence && i < CBAD_MAX_EVIDENCE; i++) {
			cJSON *e = cJSON_CreateObject();

			cJSON_AddStringToObject(e, "name", r->evidence[i].name);
			cJSON_AddStringToObject(e, "value", r->evidence[i].value);
			add_number(e, "bits", r->evidence[i].bits);
			cJSON_AddStringToObject(e, "detail", r->evidence[i].detail);
			cJSON_AddItemToArray(ev, e);
		}
	}
	cJSON_AddStringToObject(o, "excerpt", r->excerpt);
	if (r->kind == CBAD_KIND_WINDOW) {
		cJSON *w = cJSON_AddObjectToObject(o, "window");
		char a[DL_TIME_RFC3339_BUFSZ] = "", b[DL_TIME_RFC3339_BUFSZ] = "";

		dl_time_format_rfc3339(r->window_start_ts, a, sizeof(a), NULL, 0);
		dl_time_format_rfc3339(r->window_end_ts, b, sizeof(b), NULL, 0);
		cJSON_AddStringToObject(w, "start", a);
		cJSON_AddStringToObject(w, "end", b);
		cJSON_AddNumberToObject(w, "events", (double)r->window_events);
	}
	if (r->entity_field[0]) {
		cJSON_AddStringToObject(o, "entity_field", r->entity_field);
		cJSON_AddStringToObject(o, "entity", r->entity_value);
	}
	s = cJSON_PrintUnformatted(o);
	if (s)
		puts(s);
	free(s);
	cJSON_Delete(o);
}

/* Reads the event time of a JSON object: 0 with *ret_ms set, 1 when there is no "ts",
 * -EINVAL when it is not a valid time. */
static int event_time(const cJSON *root, int64_t *ret_ms)
{
	const cJSON *ts = cJSON_GetObjectItemCaseSensitive(root, "ts");

	if (!ts)
		return 1;
	if (cJSON_IsString(ts))
		return dl_time_parse(ts->valuestring, strlen(ts->valuestring), ret_ms, NULL, 0) ?
			       -EINVAL : 0;
	if (cJSON_IsNumber(ts)) {
		double v = ts->valuedouble;

		if (!(v >= (double)DL_TIME_MIN_MS && v <= (double)DL_TIME_MAX_MS) ||
		    v != (double)(int64_t)v)
			return -EINVAL;
		*ret_ms = (int64_t)v;
		return 0;
	}
	return -EINVAL;
}

static void handle_line(scan *sc, const char *file, uint64_t lineno, const char *line, size_t len)
{
	const char *p = line, *stream = sc->stream ? sc->stream : SCAN_DEFAULT_STREAM;
	const char *stream_name;
	int64_t ts = (int64_t)sc->global_line;
	cbad_detector *det;
	cbad_result r;
	cJSON *root = NULL;

	while (p < line + len && (*p == ' ' || *p == '\t'))
		p++;
	if (p == line + len) {
		print_skipped(sc, lineno, "empty line");
		return;
	}
	if (*p == '{') {
		const cJSON *st;
		int trc;

		/* line is NUL-terminated: parsing len + 1 bytes makes trailing garbage an error. */
		root = cJSON_ParseWithLengthOpts(line, len + 1, NULL, 1);
		if (!root || !cJSON_IsObject(root)) {
			const char *ep = cJSON_GetErrorPtr();
			long at = ep && ep >= line && ep <= line + len ? (long)(ep - line) + 1 : -1;

			if (at > 0)
				fprintf(stderr, "%s:line %llu: invalid JSON: syntax error at byte %ld; skipped\n",
					file, (unsigned long long)lineno, at);
			else
				fprintf(stderr, "%s:line %llu: invalid JSON: not an object; skipped\n",
					file, (unsigned long long)lineno);
			print_skipped(sc, lineno, "invalid JSON");
			goto out;
		}
		trc = event_time(root, &ts);
		if (trc < 0) {
			fprintf(stderr,
				"%s:line %llu: invalid \"ts\": expected RFC 3339 or epoch milliseconds; skipped\n",
				file, (unsigned long long)lineno);
			print_skipped(sc, lineno, "invalid ts");
			goto out;
		}
		st = cJSON_GetObjectItemCaseSensitive(root, "stream");
		if (!sc->stream && cJSON_IsString(st) && st->valuestring[0]) {
			if (strlen(st->valuestring) >= SCAN_STREAM_NAME_MAX) {
				fprintf(stderr, "%s:line %llu: \"stream\" longer than %d bytes; skipped\n",
					file, (unsigned long long)lineno, SCAN_STREAM_NAME_MAX - 1);
				print_skipped(sc, lineno, "stream name too long");
				goto out;
			}
			stream = st->valuestring;
		}
	}
	det = stream_detector(sc, stream, &stream_name);
	if (!det) {
		fprintf(stderr, "%s:line %llu: stream %s: cannot create a detector (at most %d streams); skipped\n",
			file, (unsigned long long)lineno, stream, SCAN_MAX_STREAMS);
		print_skipped(sc, lineno, "too many streams");
		goto out;
	}
	cbad_detector_process(det, line, len, ts, &r);
	sc->events++;
	sc->anomalies += r.anomaly;
	print_result(sc, file, lineno, stream_name, ts, &r);
out:
	cJSON_Delete(root);
}

static void draw_progress(scan *sc, gzFile gz, off_t total, bool done)
{
	double t = now_s(), rate;

	if (!sc->progress || (!done && t - sc->last_progress < 0.2))
		return;
	sc->last_progress = t;
	rate = t > sc->started ? (double)sc->lines / (t - sc->started) : 0.0;
	if (done) {
		fprintf(stderr, "\r\033[K");
		return;
	}
	if (total > 0) {
		/* gzoffset: compressed bytes read so far, which is what the file size counts. */
		double frac = (double)gzoffset(gz) / (double)total;
		int width = 30, fill;

		frac = frac < 0 ? 0 : frac > 1 ? 1 : frac;
		fill = (int)(frac * width);
		fprintf(stderr, "\r[%.*s%*s] %3.0f%% %llu lines %.0f lines/s %llu anomalies\033[K",
			fill, "##############################", width - fill, "", frac * 100.0,
			(unsigned long long)sc->lines, rate, (unsigned long long)sc->anomalies);
	} else {
		fprintf(stderr, "\r%llu lines %.0f lines/s %llu anomalies\033[K",
			(unsigned long long)sc->lines, rate, (unsigned long long)sc->anomalies);
	}
}

/* Scans one input. Returns 0, or -EIO when it could not be opened or read. */
static int scan_input(scan *sc, const char *path)
{
	bool is_stdin = strcmp(path, "-") == 0;
	const char *name = is_stdin ? "<stdin>" : path;
	gzFile gz;
	char *buf = NULL, chunk[65536];
	size_t len = 0, cap = 0;
	bool too_long = false;
	uint64_t lineno = 0;
	off_t total = 0;
	int rc = 0;

	if (is_stdin) {
		int fd = dup(STDIN_FILENO);

		gz = fd >= 0 ? gzdopen(fd, "rb") : NULL;
		if (!gz && fd >= 0)
			close(fd);
	} else {
		struct stat st;

		if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
			fprintf(stderr, "driftlock-scan: %s: is a directory\n", path);
			return -EIO;
		}
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
			total = st.st_size;
		gz = gzopen(path, "rb");
	}
	if (!gz) {
		fprintf(stderr, "driftlock-scan: %s: cannot open: %s\n", name,
			strerror(errno ? errno : ENOENT));
		return -EIO;
	}
	gzbuffer(gz, 1 << 17);
	for (;;) {
		size_t got;
		char *nl;

		/* gzgets stops at a newline: a line is one or more chunks; an over-long one is
		 * dropped chunk by chunk and never held whole. */
		if (!gzgets(gz, chunk, sizeof(chunk))) {
			int zerr;
			const char *msg = gzerror(gz, &zerr);

			if (zerr != Z_OK && zerr != Z_STREAM_END) {
				fprintf(stderr, "driftlock-scan: %s: read error after line %llu: %s\n",
					name, (unsigned long long)lineno, msg);
				rc = -EIO;
			}
			if (len == 0 && !too_long)
				break;
			nl = NULL; /* a last line without a newline */
			got = 0;
		} else {
			got = strlen(chunk);
			nl = got && chunk[got - 1] == '\n' ? &chunk[got - 1] : NULL;
			if (nl)
				got--;
			if (!too_long && len + got > sc->max_line_bytes)
				too_long = true;
			if (!too_long) {
				if (len + got + 1 > cap) {
					size_t ncap = cap ? cap : 65536;
					char *nb;

					while (ncap < len + got + 1)
						ncap *= 2;
					nb = realloc(buf, ncap);
					if (!nb) {
						fprintf(stderr, "driftlock-scan: %s: out of memory\n",
							name);
						rc = -ENOMEM;
						break;
					}
					buf = nb;
					cap = ncap;
				}
				memcpy(buf + len, chunk, got);
				len += got;
			}
			if (!nl && !gzeof(gz))
				continue;
		}
		lineno++;
		sc->lines++;
		sc->global_line++;
		if (buf)
			buf[len] = '\0'; /* cap > len always: room was made for it */
		if (too_long) {
			fprintf(stderr, "%s:line %llu: longer than --max-line-bytes (%zu); skipped\n",
				name, (unsigned long long)lineno, sc->max_line_bytes);
			print_skipped(sc, lineno, "line too long");
		} else {
			if (len && buf[len - 1] == '\r')
				buf[--len] = '\0';
			handle_line(sc, name, lineno, buf ? buf : "", len);
		}
		len = 0;
		too_long = false;
		if (sc->progress && (sc->lines & 1023) == 0)
			draw_progress(sc, gz, total, false);
		if (rc)
			break;
	}
	draw_progress(sc, gz, total, true);
	free(buf);
	gzclose(gz);
	return rc ? -EIO : 0;
}

int main(int argc, char **argv)
{
	scan sc;
	int first = 0, rc, status = SCAN_EXIT_OK;

	memset(&sc, 0, sizeof(sc));
	cbad_settings_default(&sc.settings);
	sc.format = SCAN_FORMAT_NDJSON;
	sc.max_line_bytes = 1u << 20;
	rc = parse_args(&sc, argc, argv, &first);
	if (rc < 0)
		return SCAN_EXIT_OK;
	if (rc)
		return rc;
	sc.progress = isatty(STDERR_FILENO);
	sc.multi_input = argc - first > 1;
	sc.started = now_s();
	/* Output is a stream of lines another program reads: fully buffered unless a person
	 * watches it. */
	setvbuf(stdout, NULL, isatty(STDOUT_FILENO) ? _IOLBF : _IOFBF, 1 << 16);
	if (!sc.scores && sc.format == SCAN_FORMAT_TEXT)
		printf("%-8s %-16s %-24s %-7s %-8s %-9s %-20s %s\n", "line", "stream", "ts", "kind",
		       "severity", "p_value", "signal", "summary");
	if (first >= argc) {
		if (scan_input(&sc, "-"))
			status = SCAN_EXIT_INPUT;
	}
	for (int i = first; i < argc; i++)
		if (scan_input(&sc, argv[i]))
			status = SCAN_EXIT_INPUT;
	if (fflush(stdout) != 0) {
		fprintf(stderr, "driftlock-scan: writing the output: %s\n", strerror(errno));
		status = SCAN_EXIT_INPUT;
	}
	if (sc.progress)
		fprintf(stderr, "%llu lines, %llu events, %llu anomalies, %llu skipped, %zu streams\n",
			(unsigned long long)sc.lines, (unsigned long long)sc.events,
			(unsigned long long)sc.anomalies, (unsigned long long)sc.skipped,
			sc.nstreams);
	for (size_t i = 0; i < sc.nstreams; i++)
		cbad_detector_free(sc.streams[i].det);
	free(sc.streams);
	return status;
}
