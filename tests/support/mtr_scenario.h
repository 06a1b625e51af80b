/* SPDX-License-Identifier: Apache-2.0 */
/* mtr_scenario: anomalies for metering's suites: valid driftlock.anomaly.v1 messages of an org,
 * produced to driftlock.anomalies.v1 keyed org:stream, and a group's committed offsets. Every
 * helper fails the running Check test when something is missing. */
#ifndef DL_TESTS_SUPPORT_MTR_SCENARIO_H
#define DL_TESTS_SUPPORT_MTR_SCENARIO_H

#include <stddef.h>
#include <stdint.h>

#include "proto/proto_anomaly.h"

/* Fills *a with a valid anomaly of org on stream, id "<tag>-<i>" (unique per tag and i),
 * detected at detected_at_ms, a value anomaly with an explanation naming its numbers. */
void mtr_scenario_anomaly(struct proto_anomaly *a, const char *org, const char *stream,
			  const char *tag, size_t i, int64_t detected_at_ms);

/* Produces the n anomalies to driftlock.anomalies.v1 keyed org:stream and waits for Kafka's
 * acknowledgements; partitions[i] / offsets[i] (may be NULL) say where each one went. */
void mtr_scenario_produce(const struct proto_anomaly *a, size_t n, int32_t *partitions,
			  int64_t *offsets);

/* Produces raw bytes (a poison message) with key to driftlock.anomalies.v1; returns its
 * offset and its partition in *ret_partition. */
int64_t mtr_scenario_produce_raw(const char *key, const void *value, size_t len,
				 int32_t *ret_partition);

/* The offset group has committed on partition of driftlock.anomalies.v1, or -1 when none. */
int64_t mtr_scenario_committed(const char *group, int32_t partition);

#endif /* DL_TESTS_SUPPORT_MTR_SCENARIO_H */
