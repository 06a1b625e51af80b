/* SPDX-License-Identifier: Apache-2.0 */
/* bench_data: loads the labeled streams (gzip NDJSON + labels CSV) and the NAB files for the benchmarks. */
#include "tests/bench/bench_data.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "common/dl_time.h"

/* Reads a whole (optionally gzip-compressed) file into a malloc'd NUL-terminated buffer. */
static int slurp(const char *path, char **ret_buf, size_t *ret_len, char *errbuf, size_t errlen)
{
	gzFile gz = gzopen(path, "rb");
	char *buf = NULL, *nb;
	size_t len = 0, cap = 0;
	int rc = 0, got;

	if (!gz) {
		snprintf(errbuf, errlen, "%s: cannot open: %s", path, strerror(errno ? errno : ENOENT));
		return -ENOENT;
	}
	gzbuffer(gz, 1 << 17);
	for (;;) {
		if (cap - len < (1 << 20)) {
			cap = cap ? cap * 2 : (4u << 20);
			nb = realloc(buf, cap + 1);
			if (!nb) {
				rc = -ENOMEM;
				snprintf(errbuf, errlen, "%s: out of memory", path);
				goto out_close;
			}
			buf = nb;
		}
		got = gzread(gz, buf + len, (unsigned)(cap - len));
		if (got < 0) {
			int zerr;

			snprintf(errbuf, errlen, "%s: %s", path, gzerror(gz, &zerr));
			rc = -EIO;
			goto out_close;
		}
		if (got == 0)
			break;
		len += (size_t)got;
	}
	buf[len] = '\0';
	*ret_buf = buf;
	*ret_len = len;
	buf = NULL;
out_close:
	gzclose(gz);
	free(buf);
	return rc;
}

int bench_data_line_ts(const char *line, size_t len, int64_t *ret_ms)
{
	static const char key[] = "\"ts\":";
	const char *p = memmem(line, len, key, sizeof(key) - 1), *end = line + len, *q;

	/* The raw key cannot occur inside a JSON string, where quotes are escaped. */
	if (!p)
		return -ENOENT;
	p += sizeof(key) - 1;
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	if (p < end && *p == '"') {
		p++;
		q = memchr(p, '"', (size_t)(end - p));
	} else {
		q = p;
		while (q < end && (*q == '-' || (*q >= '0' && *q <= '9')))
			q++;
	}
	if (!q || q == p)
		return -EINVAL;
	return dl_time_parse(p, (size_t)(q - p), ret_ms, NULL, 0) ? -EINVAL : 0;
}

int bench_data_stream_names(const char *dir, char (**ret_names)[BENCH_DATA_NAME_MAX],
			    size_t *ret_n, char *errbuf, size_t errlen)
{
	char path[4096], *text = NULL, (*names)[BENCH_DATA_NAME_MAX] = NULL;
	size_t len, n = 0;
	cJSON *root = NULL, *streams, *it;
	int rc;

	snprintf(path, sizeof(path), "%s/manifest.json", dir);
	rc = slurp(path, &text, &len, errbuf, errlen);
	if (rc)
		return rc;
	root = cJSON_ParseWithLength(text, len);
	streams = cJSON_GetObjectItemCaseSensitive(root, "streams");
	if (!cJSON_IsObject(streams)) {
		snprintf(errbuf, errlen, "%s: no \"streams\" object", path);
		rc = -EINVAL;
		goto out;
	}
	names = calloc((size_t)cJSON_GetArraySize(streams) + 1, sizeof(*names));
	if (!names) {
		rc = -ENOMEM;
		goto out;
	}
	cJSON_ArrayForEach(it, streams)
		snprintf(names[n++], BENCH_DATA_NAME_MAX, "%s", it->string);
	*ret_names = names;
	*ret_n = n;
	names = NULL;
out:
	free(names);
	cJSON_Delete(root);
	free(text);
	return rc;
}

void bench_data_stream_free(bench_data_stream *s)
{
	if (!s)
		return;
	free(s->text);
	free(s->off);
	free(s->len);
	free(s->ts_ms);
	free(s->label);
	free(s->kind);
	free(s);
}

static int load_labels(const char *path, bench_data_stream *s, char *errbuf, size_t errlen)
{
	char *text = NULL, *p, *eol;
	size_t len, row = 0;
	int rc;

	rc = slurp(path, &text, &len, errbuf, errlen);
	if (rc)
		return rc;
	p = strchr(text, '\n'); /* header */
	p = p ? p + 1 : text + len;
	for (; p < text + len; p = eol + 1) {
		unsigned long line;
		int label, consumed = 0;
		char kind[32] = "";

		eol = strchr(p, '\n');
		if (!eol)
			eol = text + len;
		*eol = '\0';
		if (eol > p && eol[-1] == '\r')
			eol[-1] = '\0';
		if (*p == '\0')
			continue;
		if (sscanf(p, "%lu,%d,%n", &line, &label, &consumed) < 2 || consumed == 0 ||
		    line != row || row >= s->n) {
			snprintf(errbuf, errlen, "%s: bad row %zu: %s", path, row, p);
			rc = -EINVAL;
			goto out;
		}
		snprintf(kind, sizeof(kind), "%s", p + consumed);
		s->label[row] = label != 0;
		if (label) {
			size_t k;

			for (k = 0; k < s->nkinds && strcmp(s->kind_names[k], kind); k++)
				;
			if (k == s->nkinds) {
				if (k == BENCH_DATA_MAX_KINDS) {
					snprintf(errbuf, errlen, "%s: too many kinds", path);
					rc = -EINVAL;
					goto out;
				}
				snprintf(s->kind_names[s->nkinds++], sizeof(s->kind_names[0]), "%s",
					 kind);
			}
			s->kind[row] = (uint8_t)k;
		}
		row++;
	}
	if (row != s->n) {
		snprintf(errbuf, errlen, "%s: %zu rows for %zu lines", path, row, s->n);
		rc = -EINVAL;
	}
out:
	free(text);
	return rc;
}

int bench_data_stream_load(const char *dir, const char *name, bench_data_stream **ret,
			   char *errbuf, size_t errlen)
{
	bench_data_stream *s;
	char path[4096];
	size_t len, n = 0;
	int rc;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	snprintf(s->name, sizeof(s->name), "%s", name);
	snprintf(path, sizeof(path), "%s/%s.ndjson.gz", dir, name);
	rc = slurp(path, &s->text, &len, errbuf, errlen);
	if (rc)
		goto out_free;
	for (size_t i = 0; i < len; i++)
		n += s->text[i] == '\n';
	n += len > 0 && s->text[len - 1] != '\n';
	s->off = malloc((n + 1) * sizeof(*s->off));
	s->len = malloc((n + 1) * sizeof(*s->len));
	s->ts_ms = malloc((n + 1) * sizeof(*s->ts_ms));
	s->label = calloc(n + 1, 1);
	s->kind = calloc(n + 1, 1);
	if (!s->off || !s->len || !s->ts_ms || !s->label || !s->kind) {
		rc = -ENOMEM;
		goto out_free;
	}
	{
		char *p = s->text, *end = s->text + len;

		while (p < end) {
			char *eol = memchr(p, '\n', (size_t)(end - p));

			if (!eol)
				eol = end;
			*eol = '\0';
			s->off[s->n] = (size_t)(p - s->text);
			s->len[s->n] = (size_t)(eol - p);
			if (bench_data_line_ts(p, s->len[s->n], &s->ts_ms[s->n]))
				s->ts_ms[s->n] = (int64_t)s->n;
			s->n++;
			p = eol + 1;
		}
	}
	snprintf(path, sizeof(path), "%s/%s.labels.csv", dir, name);
	rc = load_labels(path, s, errbuf, errlen);
	if (rc)
		goto out_free;
	*ret = s;
	return 0;
out_free:
	bench_data_stream_free(s);
	return rc;
}

void bench_data_nab_free(bench_data_nab_file *files, size_t n)
{
	if (!files)
		return;
	for (size_t i = 0; i < n; i++) {
		free(files[i].ts);
		free(files[i].ts_ms);
		free(files[i].value);
		free(files[i].windows);
	}
	free(files);
}

/* Copies src into dst (truncating): returns -ENAMETOOLONG when it did not fit. */
static int copy_name(char *dst, size_t dstlen, const char *a, const char *sep, const char *b)
{
	size_t la = strlen(a), ls = strlen(sep), lb = strlen(b);

	if (la + ls + lb + 1 > dstlen)
		return -ENAMETOOLONG;
	memcpy(dst, a, la);
	memcpy(dst + la, sep, ls);
	memcpy(dst + la + ls, b, lb + 1);
	return 0;
}

static int csv_filter(const struct dirent *d)
{
	size_t l = strlen(d->d_name);

	return l > 4 && strcmp(d->d_name + l - 4, ".csv") == 0;
}

static int dir_filter(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

static int nab_load_file(const char *path, bench_data_nab_file *f, char *errbuf, size_t errlen)
{
	char *text = NULL, *p, *eol;
	size_t len, n = 0;
	int rc;

	rc = slurp(path, &text, &len, errbuf, errlen);
	if (rc)
		return rc;
	for (size_t i = 0; i < len; i++)
		n += text[i] == '\n';
	f->ts = calloc(n + 1, sizeof(*f->ts));
	f->ts_ms = calloc(n + 1, sizeof(*f->ts_ms));
	f->value = calloc(n + 1, sizeof(*f->value));
	if (!f->ts || !f->ts_ms || !f->value) {
		rc = -ENOMEM;
		goto out;
	}
	p = strchr(text, '\n'); /* header */
	p = p ? p + 1 : text + len;
	for (; p < text + len; p = eol + 1) {
		char *comma, iso[32];

		eol = strchr(p, '\n');
		if (!eol)
			eol = text + len;
		*eol = '\0';
		if (eol > p && eol[-1] == '\r')
			eol[-1] = '\0';
		if (*p == '\0')
			continue;
		comma = strchr(p, ',');
		if (!comma || comma - p != 19 || strlen(comma + 1) >= sizeof(f->value[0]) ||
		    !comma[1]) {
			snprintf(errbuf, errlen, "%s: bad row %zu: %s", path, f->n, p);
			rc = -EINVAL;
			goto out;
		}
		memcpy(f->ts[f->n], p, 19);
		f->ts[f->n][19] = '\0';
		snprintf(f->value[f->n], sizeof(f->value[0]), "%s", comma + 1);
		snprintf(iso, sizeof(iso), "%.10sT%.8sZ", p, p + 11);
		if (dl_time_parse_rfc3339(iso, strlen(iso), &f->ts_ms[f->n], NULL, 0)) {
			snprintf(errbuf, errlen, "%s: bad timestamp in row %zu: %s", path, f->n, p);
			rc = -EINVAL;
			goto out;
		}
		f->n++;
	}
out:
	free(text);
	return rc;
}

static int nab_row_of(const bench_data_nab_file *f, const char *ts, size_t *ret)
{
	for (size_t i = 0; i < f->n; i++) {
		if (strncmp(f->ts[i], ts, 19) == 0) {
			*ret = i;
			return 0;
		}
	}
	return -ENOENT;
}

static int nab_windows(const char *dir, bench_data_nab_file *files, size_t n, char *errbuf,
		       size_t errlen)
{
	char path[4096], *text = NULL;
	size_t len;
	cJSON *root = NULL;
	int rc;

	snprintf(path, sizeof(path), "%s/windows.json", dir);
	rc = slurp(path, &text, &len, errbuf, errlen);
	if (rc)
		return rc;
	root = cJSON_ParseWithLength(text, len);
	if (!cJSON_IsObject(root)) {
		snprintf(errbuf, errlen, "%s: not a JSON object", path);
		rc = -EINVAL;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		bench_data_nab_file *f = &files[i];
		cJSON *w = cJSON_GetObjectItemCaseSensitive(root, f->path), *it;

		if (!cJSON_IsArray(w))
			continue; /* not scored: no windows listed */
		f->windows = calloc((size_t)cJSON_GetArraySize(w) + 1, sizeof(*f->windows));
		if (!f->windows) {
			rc = -ENOMEM;
			goto out;
		}
		cJSON_ArrayForEach(it, w) {
			cJSON *a = cJSON_GetArrayItem(it, 0), *b = cJSON_GetArrayItem(it, 1);
			size_t *win = f->windows[f->nwindows];

			if (!cJSON_IsString(a) || !cJSON_IsString(b) ||
			    nab_row_of(f, a->valuestring, &win[0]) ||
			    nab_row_of(f, b->valuestring, &win[1]) || win[1] < win[0]) {
				snprintf(errbuf, errlen, "%s: a window of %s matches no rows", path,
					 f->path);
				rc = -EINVAL;
				goto out;
			}
			f->nwindows++;
		}
	}
out:
	cJSON_Delete(root);
	free(text);
	return rc;
}

int bench_data_nab_load(const char *dir, bench_data_nab_file **ret_files, size_t *ret_n,
			char *errbuf, size_t errlen)
{
	struct dirent **groups = NULL;
	bench_data_nab_file *files = NULL;
	size_t n = 0, cap = 0;
	char path[4096];
	int ngroups, rc = 0;

	snprintf(path, sizeof(path), "%s/data", dir);
	ngroups = scandir(path, &groups, dir_filter, alphasort);
	if (ngroups < 0) {
		snprintf(errbuf, errlen, "%s: %s", path, strerror(errno));
		return -ENOENT;
	}
	for (int g = 0; g < ngroups && rc == 0; g++) {
		struct dirent **csvs = NULL;
		int ncsv;

		snprintf(path, sizeof(path), "%s/data/%s", dir, groups[g]->d_name);
		ncsv = scandir(path, &csvs, csv_filter, alphasort);
		for (int c = 0; c < ncsv; c++) {
			if (rc == 0 && n == cap) {
				bench_data_nab_file *nf;

				cap = cap ? cap * 2 : 64;
				nf = realloc(files, cap * sizeof(*files));
				if (!nf)
					rc = -ENOMEM;
				else
					files = nf;
			}
			if (rc == 0) {
				bench_data_nab_file *f = &files[n++];

				memset(f, 0, sizeof(*f));
				if (copy_name(f->group, sizeof(f->group), groups[g]->d_name, "", "") ||
				    copy_name(f->path, sizeof(f->path), groups[g]->d_name, "/",
					      csvs[c]->d_name)) {
					snprintf(errbuf, errlen, "%s: a name is too long", path);
					rc = -ENAMETOOLONG;
				} else {
					snprintf(path, sizeof(path), "%s/data/%s", dir, f->path);
					rc = nab_load_file(path, f, errbuf, errlen);
				}
			}
			free(csvs[c]);
		}
		free(csvs);
	}
	for (int g = 0; g < ngroups; g++)
		free(groups[g]);
	free(groups);
	if (rc == 0)
		rc = nab_windows(dir, files, n, errbuf, errlen);
	if (rc) {
		bench_data_nab_free(files, n);
		return rc;
	}
	*ret_files = files;
	*ret_n = n;
	return 0;
}
