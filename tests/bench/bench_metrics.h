/* SPDX-License-Identifier: Apache-2.0 */
/* bench_metrics: what the service benchmarks read from a running service, and their clocks. */
#ifndef DL_BENCH_METRICS_H
#define DL_BENCH_METRICS_H

#include <stdint.h>

/* The sum of every sample of the Prometheus metric `name` (exactly that name) on the admin
 * port 127.0.0.1:port, counting only samples whose label set contains `label` (e.g.
 * "result=\"stored\""; NULL: all). -1 when the port does not answer. */
double bench_metric_sum(int port, const char *name, const char *label);

/* CLOCK_MONOTONIC in ns, and the wall clock in epoch ms. */
int64_t bench_now_ns(void);
int64_t bench_wall_ms(void);

#endif /* DL_BENCH_METRICS_H */
