/* SPDX-License-Identifier: Apache-2.0 */
/* bench_quality: detection quality of the CBAD engine on the labeled streams and on NAB. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "services/detector/cbad/cbad.h"
#include "tests/bench/bench_data.h"
#include "tests/bench/bench_scoring.h"

#define NKINDS 5 /* cbad_kind values */

typedef struct options {
	double sensitivity;
	const char *stream;
	const char *settings_json;
	char streams_dir[2048], nab_dir[2048];
	bool json, no_streams, no_nab, nab_reference, verbose, windows;
} options;

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int make_detector(const options *o, cbad_detector **ret)
{
	cbad_settings s;
	char err[256] = "";
	int rc;

	cbad_settings_default(&s);
	if (o->settings_json) {
		rc = cbad_settings_apply_json(&s, o->settings_json, strlen(o->settings_json), err,
					      sizeof(err));
		if (rc) {
			fprintf(stderr, "bench_quality: --settings: %s\n", err);
			return rc;
		}
	}
	s.sensitivity = o->sensitivity;
	rc = cbad_detector_new(&s, ret, err, sizeof(err));
	if (rc)
		fprintf(stderr, "bench_quality: cbad_detector_new: %s\n", err);
	return rc;
}

/* Flags by the engine's kind of anomaly, split into true and false positives. */
typedef struct by_kind {
	size_t tp[NKINDS], fp[NKINDS];
} by_kind;

static cJSON *stream_json(const bench_data_stream *ds, const bench_scoring_stream *m,
			  const by_kind *bk, double secs)
{
	cJSON *o = cJSON_CreateObject(), *kinds = cJSON_AddObjectToObject(o, "kinds");
	cJSON *flags = cJSON_AddObjectToObject(o, "flags_by_engine_kind");

	cJSON_AddStringToObject(o, "stream", ds->name);
	cJSON_AddNumberToObject(o, "events", (double)m->n);
	cJSON_AddNumberToObject(o, "anomalies", (double)m->positives);
	cJSON_AddNumberToObject(o, "flagged", (double)m->flagged);
	cJSON_AddNumberToObject(o, "tp", (double)m->tp);
	cJSON_AddNumberToObject(o, "fp", (double)m->fp);
	cJSON_AddNumberToObject(o, "precision", m->precision);
	cJSON_AddNumberToObject(o, "recall", m->recall);
	cJSON_AddNumberToObject(o, "f1", m->f1);
	cJSON_AddNumberToObject(o, "best_f1", m->best_f1);
	cJSON_AddNumberToObject(o, "best_threshold", m->best_threshold);
	cJSON_AddNumberToObject(o, "pr_auc", m->pr_auc);
	cJSON_AddNumberToObject(o, "episodes", (double)m->episodes);
	cJSON_AddNumberToObject(o, "episodes_detected", (double)m->episodes_detected);
	cJSON_AddNumberToObject(o, "episode_recall", m->episode_recall);
	cJSON_AddNumberToObject(o, "ttd_median_events", m->ttd_median);
	cJSON_AddNumberToObject(o, "ttd_max_events", m->ttd_max);
	cJSON_AddNumberToObject(o, "ttd_median_s", m->ttd_median_s);
	cJSON_AddNumberToObject(o, "ttd_max_s", m->ttd_max_s);
	cJSON_AddNumberToObject(o, "seconds", secs);
	for (size_t k = 0; k < m->nkinds; k++) {
		cJSON *ko = cJSON_AddObjectToObject(kinds, ds->kind_names[k]);
		const bench_scoring_kind *km = &m->kinds[k];

		cJSON_AddNumberToObject(ko, "labels", (double)km->labels);
		cJSON_AddNumberToObject(ko, "recall",
					km->labels ? (double)km->labels_flagged / (double)km->labels : 0);
		cJSON_AddNumberToObject(ko, "episodes", (double)km->episodes);
		cJSON_AddNumberToObject(ko, "episodes_detected", (double)km->episodes_detected);
		cJSON_AddNumberToObject(ko, "ttd_median_events", km->ttd_median);
		cJSON_AddNumberToObject(ko, "ttd_max_events", km->ttd_max);
	}
	for (int k = 0; k < NKINDS; k++) {
		cJSON *ko = cJSON_AddObjectToObject(flags, cbad_kind_name((cbad_kind)k));

		cJSON_AddNumberToObject(ko, "tp", (double)bk->tp[k]);
		cJSON_AddNumberToObject(ko, "fp", (double)bk->fp[k]);
	}
	return o;
}

static void stream_text(const bench_data_stream *ds, const bench_scoring_stream *m,
			const by_kind *bk, double secs)
{
	printf("%-14s %7zu %5zu %6zu  %5.3f %5.3f %5.3f  %5.3f@%-8.4g %5.3f  %2zu/%-2zu %6.0f %6.0f  %6.0f\n",
	       ds->name, m->n, m->positives, m->flagged, m->precision, m->recall, m->f1,
	       m->best_f1, m->best_threshold, m->pr_auc, m->episodes_detected, m->episodes,
	       m->ttd_median, m->ttd_max, (double)m->n / secs);
	for (size_t k = 0; k < m->nkinds; k++) {
		const bench_scoring_kind *km = &m->kinds[k];

		printf("    %-18s labels %4zu recall %5.3f  episodes %zu/%zu  ttd median %.0f max %.0f\n",
		       ds->kind_names[k], km->labels,
		       km->labels ? (double)km->labels_flagged / (double)km->labels : 0.0,
		       km->episodes_detected, km->episodes, km->ttd_median, km->ttd_max);
	}
	printf("    flags by engine kind (TP/FP):");
	for (int k = 0; k < NKINDS; k++)
		printf(" %s %zu/%zu", cbad_kind_name((cbad_kind)k), bk->tp[k], bk->fp[k]);
	printf("\n");
}

static int run_streams(const options *o, cJSON *out)
{
	char (*names)[BENCH_DATA_NAME_MAX] = NULL, err[512] = "";
	size_t nnames = 0, nrun = 0;
	double sum_p = 0, sum_r = 0, sum_f1 = 0, sum_best = 0, sum_ap = 0, sum_er = 0;
	cJSON *arr = out ? cJSON_AddArrayToObject(out, "streams") : NULL;
	int rc;

	rc = bench_data_stream_names(o->streams_dir, &names, &nnames, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "bench_quality: %s\n", err);
		return rc;
	}
	if (!o->json)
		printf("%-14s %7s %5s %6s  %5s %5s %5s  %-14s %5s  %5s %6s %6s  %6s\n", "stream",
		       "events", "anom", "flags", "P", "R", "F1", "bestF1@thr", "AP", "epis",
		       "ttd50", "ttdmax", "ev/s");
	for (size_t i = 0; i < nnames && rc == 0; i++) {
		bench_data_stream *ds = NULL;
		cbad_detector *d = NULL;
		double *score = NULL, t0, secs;
		bool *flag = NULL;
		bench_scoring_stream m;
		by_kind bk;

		if (o->stream && strcmp(o->stream, names[i]))
			continue;
		rc = bench_data_stream_load(o->streams_dir, names[i], &ds, err, sizeof(err));
		if (rc) {
			fprintf(stderr, "bench_quality: %s\n", err);
			break;
		}
		rc = make_detector(o, &d);
		score = malloc((ds->n + 1) * sizeof(*score));
		flag = calloc(ds->n + 1, sizeof(*flag));
		if (!rc && (!score || !flag))
			rc = -ENOMEM;
		memset(&bk, 0, sizeof(bk));
		t0 = now_s();
		for (size_t l = 0; l < ds->n && rc == 0; l++) {
			cbad_result r;

			cbad_detector_process(d, ds->text + ds->off[l], ds->len[l], ds->ts_ms[l], &r);
			score[l] = r.score;
			flag[l] = r.anomaly;
			if (r.anomaly && (unsigned)r.kind < NKINDS) {
				if (ds->label[l])
					bk.tp[r.kind]++;
				else
					bk.fp[r.kind]++;
				if (o->verbose)
					fprintf(stderr, "%s line %zu label %d (%s) kind %s signal %s p %.3g: %s\n",
						ds->name, l, ds->label[l],
						ds->label[l] ? ds->kind_names[ds->kind[l]] : "-",
						cbad_kind_name(r.kind), r.signal, r.p_value, r.summary);
			}
		}
		secs = now_s() - t0;
		if (rc == 0)
			rc = bench_scoring_stream_metrics(score, flag, ds->label, ds->kind, ds->nkinds,
							  ds->ts_ms, ds->n, &m);
		if (rc == 0) {
			nrun++;
			sum_p += m.precision;
			sum_r += m.recall;
			sum_f1 += m.f1;
			sum_best += m.best_f1;
			sum_ap += m.pr_auc;
			sum_er += m.episode_recall;
			if (o->json)
				cJSON_AddItemToArray(arr, stream_json(ds, &m, &bk, secs));
			else
				stream_text(ds, &m, &bk, secs);
			fflush(stdout);
		}
		free(flag);
		free(score);
		cbad_detector_free(d);
		bench_data_stream_free(ds);
	}
	if (rc == 0 && nrun > 0) {
		double k = (double)nrun;

		if (o->json) {
			cJSON *mean = cJSON_AddObjectToObject(out, "streams_mean");

			cJSON_AddNumberToObject(mean, "precision", sum_p / k);
			cJSON_AddNumberToObject(mean, "recall", sum_r / k);
			cJSON_AddNumberToObject(mean, "f1", sum_f1 / k);
			cJSON_AddNumberToObject(mean, "best_f1", sum_best / k);
			cJSON_AddNumberToObject(mean, "pr_auc", sum_ap / k);
			cJSON_AddNumberToObject(mean, "episode_recall", sum_er / k);
		} else {
			printf("MEAN over %zu streams: P %.3f R %.3f F1 %.3f best F1 %.3f PR-AUC %.3f episode recall %.3f\n",
			       nrun, sum_p / k, sum_r / k, sum_f1 / k, sum_best / k, sum_ap / k,
			       sum_er / k);
		}
	}
	free(names);
	return rc;
}

/* The README's reference detector: 1.0 at the middle row of every window, 0.5 on rows with
 * i mod 50 = 0, else 0. */
static void reference_scores(const bench_data_nab_file *f, double *score)
{
	for (size_t i = 0; i < f->n; i++)
		score[i] = i % 50 == 0 ? 0.5 : 0.0;
	for (size_t w = 0; w < f->nwindows; w++)
		score[(f->windows[w][0] + f->windows[w][1]) / 2] = 1.0;
}

/* --windows: one line per NAB window at the corpus' standard threshold theta: its rows, its
 * best score (row, signal: "-" when below the engine's alpha) and the first row scoring
 * >= theta (rows after the window's start), or "missed"; near-misses show as a best score
 * just under theta. */
static void print_windows(const bench_data_nab_file *files, size_t n, double *const *scores,
			  char (*const *signals)[32], double theta)
{
	printf("\nNAB windows at the standard threshold %.6g\n", theta);
	printf("  %-44s %13s %8s %8s %-24s %s\n", "file", "window", "best", "at", "signal",
	       "first >= threshold");
	for (size_t i = 0; i < n; i++) {
		const bench_data_nab_file *f = &files[i];

		for (size_t w = 0; w < f->nwindows; w++) {
			size_t a = f->windows[w][0], b = f->windows[w][1], best = a, first = SIZE_MAX;
			char span[48];

			for (size_t r = a; r <= b && r < f->n; r++) {
				if (scores[i][r] > scores[i][best])
					best = r;
				if (first == SIZE_MAX && scores[i][r] >= theta)
					first = r;
			}
			snprintf(span, sizeof(span), "%zu-%zu", a, b);
			printf("  %-44s %13s %8.4f %8zu %-24s ", f->path, span, scores[i][best], best,
			       signals[i] && signals[i][best][0] ? signals[i][best] : "-");
			if (first == SIZE_MAX)
				printf("missed\n");
			else
				printf("%zu (+%zu)\n", first, first - a);
		}
	}
}

static int run_nab(const options *o, cJSON *out)
{
	static const bench_scoring_nab_profile *profiles[] = {
		&bench_scoring_nab_standard, &bench_scoring_nab_low_fp, &bench_scoring_nab_low_fn
	};
	bench_data_nab_file *files = NULL;
	bench_scoring_nab_file *sf = NULL;
	double **scores = NULL, t0, secs, theta_std = INFINITY;
	char (**signals)[32] = NULL; /* --windows: the signal behind each row's score */
	size_t n = 0, rows = 0;
	char err[512] = "";
	cJSON *nab = out ? cJSON_AddObjectToObject(out, "nab") : NULL;
	int rc;

	rc = bench_data_nab_load(o->nab_dir, &files, &n, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "bench_quality: %s\n", err);
		return rc;
	}
	sf = calloc(n, sizeof(*sf));
	scores = calloc(n, sizeof(*scores));
	signals = calloc(n, sizeof(*signals));
	if (!sf || !scores || !signals) {
		rc = -ENOMEM;
		goto out;
	}
	t0 = now_s();
	for (size_t i = 0; i < n && rc == 0; i++) {
		bench_data_nab_file *f = &files[i];
		cbad_detector *d = NULL;

		scores[i] = calloc(f->n + 1, sizeof(double));
		if (!scores[i]) {
			rc = -ENOMEM;
			break;
		}
		if (o->windows && !o->nab_reference) {
			signals[i] = calloc(f->n + 1, sizeof(*signals[i]));
			if (!signals[i]) {
				rc = -ENOMEM;
				break;
			}
		}
		rows += f->n;
		if (o->nab_reference) {
			reference_scores(f, scores[i]);
		} else {
			rc = make_detector(o, &d);
			for (size_t r = 0; r < f->n && rc == 0; r++) {
				char ev[64];
				int len = snprintf(ev, sizeof(ev), "{\"value\":%s}", f->value[r]);
				cbad_result res;

				cbad_detector_process(d, ev, (size_t)len, f->ts_ms[r], &res);
				scores[i][r] = res.score;
				if (signals[i])
					snprintf(signals[i][r], sizeof(signals[i][r]), "%s",
						 res.signal);
			}
			cbad_detector_free(d);
		}
		sf[i] = (bench_scoring_nab_file){ scores[i], f->n,
						  (const size_t(*)[2])f->windows, f->nwindows };
	}
	secs = now_s() - t0;
	if (rc)
		goto out;
	if (!o->json)
		printf("\nNAB (%zu files, %zu rows, %.1f s%s)\n", n, rows, secs,
		       o->nab_reference ? ", README reference detector" : "");
	for (size_t p = 0; p < sizeof(profiles) / sizeof(profiles[0]); p++) {
		double theta, raw, norm;
		cJSON *po = nab ? cJSON_AddObjectToObject(nab, profiles[p]->name) : NULL;

		rc = bench_scoring_nab_optimise(sf, n, profiles[p], &theta, &raw, &norm);
		if (rc)
			goto out;
		if (p == 0)
			theta_std = theta;
		if (po) {
			cJSON_AddNumberToObject(po, "threshold", isfinite(theta) ? theta : 1e300);
			cJSON_AddNumberToObject(po, "raw", raw);
			cJSON_AddNumberToObject(po, "score", norm);
		} else {
			printf("  %-14s score %7.2f  raw %9.4f  threshold %.6g\n", profiles[p]->name,
			       norm, raw, theta);
		}
	}
	/* Per group, at the corpus' standard threshold. */
	{
		cJSON *groups = nab ? cJSON_AddObjectToObject(nab, "groups_standard") : NULL;

		for (size_t i = 0; i < n;) {
			size_t j = i, nwin = 0, fps = 0, found = 0;
			double raw = 0.0;

			while (j < n && strcmp(files[j].group, files[i].group) == 0) {
				raw += bench_scoring_nab_file_score(&sf[j], theta_std,
								    &bench_scoring_nab_standard);
				nwin += files[j].nwindows;
				for (size_t r = bench_scoring_nab_probation(files[j].n);
				     r < files[j].n; r++) {
					bool in = false;

					for (size_t w = 0; w < files[j].nwindows; w++)
						in |= files[j].windows[w][0] <= r &&
						      r <= files[j].windows[w][1];
					if (scores[j][r] >= theta_std && !in)
						fps++;
				}
				for (size_t w = 0; w < files[j].nwindows; w++) {
					for (size_t r = files[j].windows[w][0];
					     r <= files[j].windows[w][1]; r++) {
						if (scores[j][r] >= theta_std) {
							found++;
							break;
						}
					}
				}
				j++;
			}
			if (groups) {
				cJSON *g = cJSON_AddObjectToObject(groups, files[i].group);

				cJSON_AddNumberToObject(g, "files", (double)(j - i));
				cJSON_AddNumberToObject(g, "windows", (double)nwin);
				cJSON_AddNumberToObject(g, "windows_detected", (double)found);
				cJSON_AddNumberToObject(g, "false_positives", (double)fps);
				cJSON_AddNumberToObject(g, "raw", raw);
				if (nwin)
					cJSON_AddNumberToObject(g, "score",
						bench_scoring_nab_normalise(raw, nwin,
							&bench_scoring_nab_standard));
			} else {
				printf("  %-22s files %2zu windows %2zu/%-2zu FP rows %5zu raw %9.4f",
				       files[i].group, j - i, found, nwin, fps, raw);
				if (nwin)
					printf(" score %7.2f\n", bench_scoring_nab_normalise(
						raw, nwin, &bench_scoring_nab_standard));
				else
					printf(" (no windows: raw = FP cost)\n");
			}
			i = j;
		}
	}
	if (o->windows && !o->json)
		print_windows(files, n, scores, signals, theta_std);
out:
	for (size_t i = 0; scores && i < n; i++)
		free(scores[i]);
	for (size_t i = 0; signals && i < n; i++)
		free(signals[i]);
	free(scores);
	free(signals);
	free(sf);
	bench_data_nab_free(files, n);
	return rc;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: bench_quality [options]\n"
		"Runs one CBAD detector per labeled stream (and per NAB file) at default settings and\n"
		"prints the scores of datasets/streams/README.md and NAB's standard profile.\n"
		"  --sensitivity X     0..1 (default: the engine's default)\n"
		"  --settings JSON     settings applied on top of the defaults (tuning only)\n"
		"  --stream NAME       only this stream\n"
		"  --streams-dir DIR   default $DRIFTLOCK_DATASETS/streams (default: ../shared/datasets\n"
		"                      beside the source tree)\n"
		"  --nab-dir DIR       default $DRIFTLOCK_DATASETS/nab\n"
		"  --no-streams        skip the streams\n"
		"  --no-nab            skip NAB\n"
		"  --nab-reference     score NAB's README reference detector instead (self-check:\n"
		"                      expect 93.09 / 93.09 / 95.39)\n"
		"  --windows           after NAB, one line per window: best score in it (row, signal)\n"
		"                      and the first row at/above the standard threshold, or missed\n"
		"  --verbose           every flagged line on stderr\n"
		"  --json              one JSON document on stdout\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "sensitivity", required_argument, NULL, 's' },
		{ "settings", required_argument, NULL, 'S' },
		{ "stream", required_argument, NULL, 'n' },
		{ "streams-dir", required_argument, NULL, 'd' },
		{ "nab-dir", required_argument, NULL, 'D' },
		{ "no-streams", no_argument, NULL, '1' },
		{ "no-nab", no_argument, NULL, '2' },
		{ "nab-reference", no_argument, NULL, 'r' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "windows", no_argument, NULL, 'w' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *root = getenv("DRIFTLOCK_DATASETS");
	cbad_settings def;
	options o;
	cJSON *out = NULL;
	int c, rc = 0;

	memset(&o, 0, sizeof(o));
	cbad_settings_default(&def);
	o.sensitivity = def.sensitivity;
	/* The datasets live in shared/, beside the repository (as on CI). */
	if (!root || !*root)
		root = DRIFTLOCK_SOURCE_ROOT "/../shared/datasets";
	snprintf(o.streams_dir, sizeof(o.streams_dir), "%s/streams", root);
	snprintf(o.nab_dir, sizeof(o.nab_dir), "%s/nab", root);
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		char *end;

		switch (c) {
		case 's':
			o.sensitivity = strtod(optarg, &end);
			if (*end || !(o.sensitivity >= 0.0 && o.sensitivity <= 1.0)) {
				fprintf(stderr, "bench_quality: --sensitivity must be 0..1\n");
				return 2;
			}
			break;
		case 'S': o.settings_json = optarg; break;
		case 'n': o.stream = optarg; break;
		case 'd': snprintf(o.streams_dir, sizeof(o.streams_dir), "%s", optarg); break;
		case 'D': snprintf(o.nab_dir, sizeof(o.nab_dir), "%s", optarg); break;
		case '1': o.no_streams = true; break;
		case '2': o.no_nab = true; break;
		case 'r': o.nab_reference = true; break;
		case 'v': o.verbose = true; break;
		case 'w': o.windows = true; break;
		case 'j': o.json = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return 2;
	}
	if (o.stream)
		o.no_nab = true;
	if (o.json) {
		out = cJSON_CreateObject();
		cJSON_AddNumberToObject(out, "sensitivity", o.sensitivity);
	}
	if (!o.no_streams && !o.nab_reference)
		rc = run_streams(&o, out);
	if (rc == 0 && !o.no_nab)
		rc = run_nab(&o, out);
	if (out) {
		char *s = cJSON_Print(out);

		if (s)
			printf("%s\n", s);
		free(s);
		cJSON_Delete(out);
	}
	return rc ? 1 : 0;
}
