/* SPDX-License-Identifier: Apache-2.0 */
/* bench_service: what the service benchmarks share: their Kafka producer, what they read from a
 * running service, and their clocks. */
#ifndef DL_BENCH_SERVICE_H
#define DL_BENCH_SERVICE_H

#include <stdint.h>

#include <librdkafka/rdkafka.h>

/* A producer like dl_kafka's (idempotent, acks=all, librdkafka's default partitioner) with a
 * queue deep enough to pre-fill a topic; exits the program with prog's name on failure. */
rd_kafka_t *bench_producer_new(const char *prog, const char *brokers);

/* The sum of every sample of the Prometheus metric `name` (exactly that name) on the admin
 * port 127.0.0.1:port, counting only samples whose label set contains `label` (e.g.
 * "result=\"stored\""; NULL: all). -1 when the port does not answer. */
double bench_metric_sum(int port, const char *name, const char *label);

/* CLOCK_MONOTONIC in ns, and the wall clock in epoch ms. */
int64_t bench_now_ns(void);
int64_t bench_wall_ms(void);

#endif /* DL_BENCH_SERVICE_H */
