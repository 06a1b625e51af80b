/* SPDX-License-Identifier: Apache-2.0 */
/* dl_metrics: a thread-safe Prometheus registry of counters, gauges and histograms, rendered in
 * the text exposition format 0.0.4. */
#ifndef DL_COMMON_METRICS_H
#define DL_COMMON_METRICS_H

#include <stddef.h>

typedef struct dl_metrics_registry dl_metrics_registry;
/* A metric family: a name, a type, label names and one child per distinct label values. */
typedef struct dl_metric dl_metric;

/* Most label names per family. */
#define DL_METRICS_MAX_LABELS 4
/* Most children (distinct label value tuples) per family; updates that would create more are
 * dropped and counted in dl_metrics_dropped_total. */
#define DL_METRICS_MAX_CHILDREN 1000
/* Most histogram buckets (not counting the implicit +Inf). */
#define DL_METRICS_MAX_BUCKETS 64

/* Creates an empty registry holding only the counter dl_metrics_dropped_total (updates the
 * registry refused: too many children, wrong number of label values, a counter decreased, a NaN
 * value, or an update of the wrong kind). Returns NULL when out of memory. */
dl_metrics_registry *dl_metrics_registry_new(void);

/* Frees the registry and every family in it; dl_metric pointers from it become invalid.
 * NULL is a no-op. No other thread may use the registry during or after the call. */
void dl_metrics_registry_free(dl_metrics_registry *reg);

/* Registers a counter, gauge or histogram family named name (matching [a-zA-Z_:][a-zA-Z0-9_:]*)
 * with help text (may be NULL) and nlabels (0..DL_METRICS_MAX_LABELS) label names, passed as
 * that many const char * arguments, each matching [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__",
 * all distinct, and for histograms not "le".
 * Histograms take nbuckets strictly increasing finite upper bounds (+Inf is implicit); buckets
 * NULL with nbuckets 0 selects the Prometheus defaults .005 .. 10 (seconds).
 * Registering a name again returns the existing family when type, label names (and buckets)
 * are the same, and NULL otherwise. Returns NULL as well on an invalid name, label or bucket list
 * or when out of memory. The family belongs to the registry and lives until it is freed.
 * Thread-safe. */
dl_metric *dl_metrics_counter(dl_metrics_registry *reg, const char *name, const char *help,
			      size_t nlabels, ...);
dl_metric *dl_metrics_gauge(dl_metrics_registry *reg, const char *name, const char *help,
			    size_t nlabels, ...);
dl_metric *dl_metrics_histogram(dl_metrics_registry *reg, const char *name, const char *help,
				const double *buckets, size_t nbuckets, size_t nlabels, ...);

/* Updates the child selected by label_values: an array of exactly as many non-NULL strings as
 * the family has label names (NULL for a family without labels), expected to be UTF-8 (they are
 * copied, escaped when rendered, never validated). The first update of a tuple creates its
 * child at 0.
 * inc adds v to a counter (v >= 0) or a gauge (any finite v); set sets a gauge; observe adds
 * an observation to a histogram (finite or infinite, not NaN). Anything else, and updates beyond
 * DL_METRICS_MAX_CHILDREN, are dropped and counted in dl_metrics_dropped_total.
 * m NULL is a no-op. Thread-safe: may be called from any thread (librdkafka callbacks). */
void dl_metric_inc(dl_metric *m, const char *const *label_values, double v);
void dl_metric_set(dl_metric *m, const char *const *label_values, double v);
void dl_metric_observe(dl_metric *m, const char *const *label_values, double v);

/* Reads the current value of a counter or gauge child, or the observation count of a histogram
 * child. Returns 0, or -ENOENT when the child does not exist (yet) or m is NULL, -EINVAL when
 * label_values does not fit the family (*ret_value untouched). Thread-safe. */
int dl_metric_get(dl_metric *m, const char *const *label_values, double *ret_value);

/* Renders every family in registration order in the text exposition format 0.0.4:
 * "# HELP" (with \\ and \n escaped) and "# TYPE" lines, then one sample per child in creation
 * order with label values escaped (\\, \", \n); histograms as cumulative name_bucket{le=".."}
 * lines ending with le="+Inf", then name_sum and name_count. A family without labels always shows
 * its single sample (0 before any update); a labelled family with no children shows only its
 * HELP and TYPE lines.
 * Returns 0 with a NUL-terminated malloc'd text in *ret_text (caller frees) and its length in
 * *ret_len (may be NULL), or -EINVAL / -ENOMEM with the outputs untouched. Thread-safe. */
int dl_metrics_render(const dl_metrics_registry *reg, char **ret_text, size_t *ret_len);

#endif /* DL_COMMON_METRICS_H */
