/* SPDX-License-Identifier: Apache-2.0 */
/* dl_kafka: an idempotent Kafka producer and a manual-commit consumer-group member for one event loop. */
#ifndef DL_COMMON_KAFKA_H
#define DL_COMMON_KAFKA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

/*
 * Threading model: every function here is called from the service's one loop thread.
 * librdkafka runs its own internal threads; every callback of this module (delivery
 * reports, rebalances) is served from dl_kafka_producer_poll() / dl_kafka_consumer_poll()
 * (or from the close/free calls, as documented there), never from another thread.
 *
 * Loop integration: each handle exposes a wake-up fd (non-blocking pipe read end) that
 * becomes readable when librdkafka queued something for the application while the queue
 * was empty. Register it with EV_READ|EV_PERSIST and, when it fires, call the poll function
 * with timeout 0 until nothing is left (producer: one call serves everything queued;
 * consumer: call until it returns no message). The poll functions drain the pipe
 * themselves. A service that prefers a short periodic timer may ignore the fd.
 */

/*
 * Where librdkafka's own log lines go, process-wide: fn receives the syslog level (0..7), the
 * facility, the client's name and the text. Without one they are printed on stderr. Set it once
 * before creating any client; fn is called from librdkafka's threads and must be thread-safe.
 */
typedef void (*dl_kafka_log_fn)(int syslog_level, const char *facility, const char *client,
                                const char *message);
void dl_kafka_set_log_fn(dl_kafka_log_fn fn);

typedef struct dl_kafka_producer dl_kafka_producer;
typedef struct dl_kafka_consumer dl_kafka_consumer;

/*
 * Delivery report for one produced message. err is RD_KAFKA_RESP_ERR_NO_ERROR (0) when the
 * message was acknowledged by all in-sync replicas; then partition and offset say where it
 * was written (offset may be -1 if the broker did not return it). Otherwise err is the
 * librdkafka error (rd_kafka_err2str() names it); RD_KAFKA_RESP_ERR__PURGE_QUEUE or
 * __PURGE_INFLIGHT mean the producer was freed before the outcome was known.
 * Must not free the producer.
 */
typedef void (*dl_kafka_delivery_fn)(void *opaque, rd_kafka_resp_err_t err,
                                     int32_t partition, int64_t offset);

/*
 * Creates a producer for the comma-separated brokers list with the given client.id.
 * extra_conf is NULL or a NULL-terminated array of librdkafka key, value pairs applied
 * after our defaults (for example "linger.ms", "message.timeout.ms",
 * "queue.buffering.max.messages"). enable.idempotence=true and acks=all are always set;
 * an extra_conf entry that tries to change them is rejected.
 * On failure returns -EINVAL (bad configuration) or -ENOMEM/-EMFILE, writes a reason into
 * errbuf, and leaves *ret untouched. On success the caller owns *ret (dl_kafka_producer_free).
 */
int dl_kafka_producer_new(const char *brokers, const char *client_id,
                          const char *const *extra_conf, char *errbuf, size_t errlen,
                          dl_kafka_producer **ret);

/*
 * Queues one message for topic. key (may be NULL with keylen 0) and value bytes are copied;
 * headers is NULL or a NULL-terminated array of name, value C-string pairs (copied).
 * on_delivery (may be NULL) is called exactly once with opaque from a later
 * dl_kafka_producer_poll/flush/free call, unless this function fails, in which case it is
 * never called.
 * Returns 0, or -ENOBUFS when the local queue is full (back-pressure: answer 503 and poll),
 * -EMSGSIZE when the message exceeds message.max.bytes, -ENOENT for an unknown topic or
 * partition, -EIO for a fatal producer error (recreate the producer) or anything else; text
 * in errbuf.
 */
int dl_kafka_producer_produce(dl_kafka_producer *p, const char *topic,
                              const void *key, size_t keylen,
                              const void *value, size_t len,
                              const char *const *headers,
                              dl_kafka_delivery_fn on_delivery, void *opaque,
                              char *errbuf, size_t errlen);

/*
 * Serves queued delivery reports and errors, waiting at most timeout_ms (0 = do not block)
 * for the first one. Returns the number of events served (>= 0).
 */
int dl_kafka_producer_poll(dl_kafka_producer *p, int timeout_ms);

/*
 * Waits up to timeout_ms for every queued message to be delivered or fail, serving
 * delivery reports meanwhile. Returns 0, or -ETIMEDOUT if messages are still outstanding.
 */
int dl_kafka_producer_flush(dl_kafka_producer *p, int timeout_ms);

/* Number of messages and requests not yet acknowledged or reported (rd_kafka_outq_len). */
int dl_kafka_producer_queue_depth(const dl_kafka_producer *p);

/*
 * Readiness check: asks the cluster for metadata and waits at most timeout_ms.
 * Returns 0 when a broker answered, -ETIMEDOUT/-EHOSTUNREACH when none did, -EIO when the
 * producer hit a fatal error (it must be recreated); text in errbuf. Blocks the caller.
 */
int dl_kafka_producer_check(dl_kafka_producer *p, int timeout_ms, char *errbuf, size_t errlen);

/* The wake-up fd described at the top of this header (owned by the producer). */
int dl_kafka_producer_wakeup_fd(const dl_kafka_producer *p);

/* The underlying librdkafka handle (owned by the producer), for metrics or advanced use. */
rd_kafka_t *dl_kafka_producer_handle(dl_kafka_producer *p);

/*
 * Flushes for at most 5 seconds (call dl_kafka_producer_flush first for a longer drain),
 * then purges what is left, serving its delivery reports with the __PURGE_* errors, and
 * destroys the producer. Accepts NULL. Must not be called from a delivery callback.
 */
void dl_kafka_producer_free(dl_kafka_producer *p);

/*
 * Rebalance callbacks, served from dl_kafka_consumer_poll() and dl_kafka_consumer_close().
 * on_assign runs after the partitions were added to the assignment (consumption starts
 * from the committed offsets, or the earliest offset when none). on_revoke runs before
 * they are removed, so a service can finish or commit work for them; lost is true when
 * the partitions were lost (session timeout, fenced) and commits for them will fail.
 * With the cooperative protocol the lists hold only the partitions that change.
 * Either callback may be NULL. The lists are owned by the consumer.
 */
typedef struct dl_kafka_rebalance_cbs {
    void (*on_assign)(void *opaque, const rd_kafka_topic_partition_list_t *partitions);
    void (*on_revoke)(void *opaque, const rd_kafka_topic_partition_list_t *partitions,
                      bool lost);
    void *opaque;
} dl_kafka_rebalance_cbs;

/*
 * Creates a consumer in group_id subscribed to topics (NULL-terminated, at least one).
 * Defaults: partition.assignment.strategy=cooperative-sticky, auto.offset.reset=earliest
 * (extra_conf may change them); enable.auto.commit=false and enable.auto.offset.store=false
 * are always set and cannot be overridden. cbs may be NULL. The subscription is joined
 * lazily by dl_kafka_consumer_poll().
 * On failure returns -EINVAL (bad configuration or topics) or -ENOMEM/-EMFILE with text in
 * errbuf and leaves *ret untouched. On success the caller owns *ret.
 */
int dl_kafka_consumer_new(const char *brokers, const char *group_id,
                          const char *const *topics, const char *const *extra_conf,
                          const dl_kafka_rebalance_cbs *cbs, char *errbuf, size_t errlen,
                          dl_kafka_consumer **ret);

/*
 * Waits up to timeout_ms for the next message, serving rebalance callbacks meanwhile.
 * Returns 0 and *ret = the message (caller destroys it with rd_kafka_message_destroy), or
 * 0 and *ret = NULL on timeout or partition EOF. A consumer error is returned as -EAGAIN
 * (reported, keep polling) or -EIO (fatal: recreate the consumer) with text in errbuf;
 * *ret is untouched then.
 */
int dl_kafka_consumer_poll(dl_kafka_consumer *c, int timeout_ms, rd_kafka_message_t **ret,
                           char *errbuf, size_t errlen);

/*
 * Commits offset msg->offset + 1 for msg's topic and partition only (call it after the
 * message's effects are durable). sync waits for the coordinator's answer (blocking the
 * caller); otherwise the commit is sent in the background and its result is not reported.
 * Returns 0, -EINVAL for an error message, or -EIO / -ECANCELED (partition no longer
 * assigned, rebalance in progress) with text in errbuf. Does not take ownership of msg.
 */
int dl_kafka_consumer_commit_message(dl_kafka_consumer *c, const rd_kafka_message_t *msg,
                                     bool sync, char *errbuf, size_t errlen);

/*
 * Readiness check like dl_kafka_producer_check(), for the consumer's handle.
 */
int dl_kafka_consumer_check(dl_kafka_consumer *c, int timeout_ms, char *errbuf, size_t errlen);

/* The consumer's wake-up fd (see the top of this header; owned by the consumer). */
int dl_kafka_consumer_wakeup_fd(const dl_kafka_consumer *c);

/* The underlying librdkafka handle (owned by the consumer), e.g. for rd_kafka_committed. */
rd_kafka_t *dl_kafka_consumer_handle(dl_kafka_consumer *c);

/*
 * Leaves the group cleanly: revokes the assignment (on_revoke is called from here) and
 * closes the consumer. Commits nothing. Blocks until the group coordinator acknowledged or
 * the session timed out. Returns 0 or -EIO with text. Calling it twice is a no-op.
 */
int dl_kafka_consumer_close(dl_kafka_consumer *c, char *errbuf, size_t errlen);

/* Closes (if not yet closed) and destroys the consumer. Accepts NULL. */
void dl_kafka_consumer_free(dl_kafka_consumer *c);

#endif /* DL_COMMON_KAFKA_H */
