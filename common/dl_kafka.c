/* SPDX-License-Identifier: Apache-2.0 */
/* dl_kafka: an idempotent Kafka producer and a manual-commit consumer-group member for one event loop. */
#include "common/dl_kafka.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* How long dl_kafka_producer_free waits for outstanding deliveries before purging. */
#define DL_KAFKA_FREE_FLUSH_MS 5000
/* How long it then waits for the purged messages' reports to be served. */
#define DL_KAFKA_FREE_PURGE_MS 1000

struct dl_kafka_producer {
    rd_kafka_t *rk;
    rd_kafka_queue_t *mainq;
    int wake_rd;
    int wake_wr;
    char last_error[256];
};

struct dl_kafka_consumer {
    rd_kafka_t *rk;
    rd_kafka_queue_t *cq;
    int wake_rd;
    int wake_wr;
    dl_kafka_rebalance_cbs cbs;
    bool closed;
    char last_error[256];
};

/* Per-message delivery target, carried as the message's opaque. */
struct dl_kafka_delivery {
    dl_kafka_delivery_fn fn;
    void *opaque;
};

/* A setting that callers may not change, and the values that keep its meaning. */
struct dl_kafka_fixed {
    const char *key;
    const char *value;
    const char *alias;
};

static const struct dl_kafka_fixed dl_kafka_producer_fixed[] = {
    { "enable.idempotence", "true", NULL },
    { "acks", "all", "-1" },
    { "request.required.acks", "all", "-1" },
    { NULL, NULL, NULL },
};

static const struct dl_kafka_fixed dl_kafka_consumer_fixed[] = {
    { "enable.auto.commit", "false", NULL },
    { "enable.auto.offset.store", "false", NULL },
    { NULL, NULL, NULL },
};

static void dl_kafka_errf(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void dl_kafka_errf(char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (errbuf == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

static int dl_kafka_wake_pipe(int *ret_rd, int *ret_wr, char *errbuf, size_t errlen)
{
    int fds[2];

    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        int err = errno;

        dl_kafka_errf(errbuf, errlen, "kafka: cannot create wake-up pipe: %s", strerror(err));
        return -err;
    }
    *ret_rd = fds[0];
    *ret_wr = fds[1];
    return 0;
}

static void dl_kafka_wake_drain(int fd)
{
    char buf[64];

    while (read(fd, buf, sizeof(buf)) > 0)
        ;
}

static int dl_kafka_conf_set(rd_kafka_conf_t *conf, const char *key, const char *value,
                             char *errbuf, size_t errlen)
{
    char errstr[256];

    if (rd_kafka_conf_set(conf, key, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        dl_kafka_errf(errbuf, errlen, "kafka: config %s: %s", key, errstr);
        return -EINVAL;
    }
    return 0;
}

/* Applies caller pairs, refusing any that would change a fixed setting. */
static int dl_kafka_conf_apply(rd_kafka_conf_t *conf, const char *const *pairs,
                               const struct dl_kafka_fixed *fixed,
                               char *errbuf, size_t errlen)
{
    size_t i;
    int r;

    if (pairs == NULL)
        return 0;
    for (i = 0; pairs[i] != NULL; i += 2) {
        const struct dl_kafka_fixed *f;

        if (pairs[i + 1] == NULL) {
            dl_kafka_errf(errbuf, errlen, "kafka: config %s has no value", pairs[i]);
            return -EINVAL;
        }
        for (f = fixed; f->key != NULL; f++) {
            if (strcmp(f->key, pairs[i]) != 0)
                continue;
            if (strcmp(f->value, pairs[i + 1]) != 0 &&
                (f->alias == NULL || strcmp(f->alias, pairs[i + 1]) != 0)) {
                dl_kafka_errf(errbuf, errlen, "kafka: config %s is fixed to %s", f->key,
                              f->value);
                return -EINVAL;
            }
        }
        r = dl_kafka_conf_set(conf, pairs[i], pairs[i + 1], errbuf, errlen);
        if (r < 0)
            return r;
    }
    return 0;
}

static int dl_kafka_conf_fixed(rd_kafka_conf_t *conf, const struct dl_kafka_fixed *fixed,
                               char *errbuf, size_t errlen)
{
    int r;

    for (; fixed->key != NULL; fixed++) {
        if (strcmp(fixed->key, "request.required.acks") == 0)
            continue; /* alias of acks */
        r = dl_kafka_conf_set(conf, fixed->key, fixed->value, errbuf, errlen);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Shared by producer and consumer: answers whether a broker is reachable now. */
static int dl_kafka_check_handle(rd_kafka_t *rk, const char *last_error, int timeout_ms,
                                 char *errbuf, size_t errlen)
{
    const struct rd_kafka_metadata *md = NULL;
    char fatal[256];
    rd_kafka_resp_err_t err;
    int broker_cnt;

    if (rd_kafka_fatal_error(rk, fatal, sizeof(fatal)) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        dl_kafka_errf(errbuf, errlen, "kafka: fatal error: %s", fatal);
        return -EIO;
    }
    err = rd_kafka_metadata(rk, 0, NULL, &md, timeout_ms);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        dl_kafka_errf(errbuf, errlen, "kafka: no broker answered within %d ms (%s)%s%s",
                      timeout_ms, rd_kafka_err2str(err), last_error[0] ? ": " : "",
                      last_error);
        return err == RD_KAFKA_RESP_ERR__TIMED_OUT ? -ETIMEDOUT : -EHOSTUNREACH;
    }
    broker_cnt = md->broker_cnt;
    rd_kafka_metadata_destroy(md);
    if (broker_cnt <= 0) {
        dl_kafka_errf(errbuf, errlen, "kafka: metadata lists no brokers");
        return -EHOSTUNREACH;
    }
    return 0;
}

static void dl_kafka_producer_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg,
                                    void *opaque)
{
    struct dl_kafka_delivery *d = msg->_private;

    (void)rk;
    (void)opaque;
    if (d == NULL)
        return;
    if (d->fn != NULL)
        d->fn(d->opaque, msg->err, msg->partition, msg->offset);
    free(d);
}

static void dl_kafka_producer_error_cb(rd_kafka_t *rk, int err, const char *reason,
                                       void *opaque)
{
    dl_kafka_producer *p = opaque;

    (void)rk;
    snprintf(p->last_error, sizeof(p->last_error), "%s: %s",
             rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

/* Set once at start-up, before any client exists; read from librdkafka's threads. */
static dl_kafka_log_fn dl_kafka_logger;

void dl_kafka_set_log_fn(dl_kafka_log_fn fn)
{
    dl_kafka_logger = fn;
}

static void dl_kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    if (dl_kafka_logger != NULL)
        dl_kafka_logger(level, fac, rd_kafka_name(rk), buf);
    else
        fprintf(stderr, "%%%d|%s|%s| %s\n", level, fac, rd_kafka_name(rk), buf);
}

int dl_kafka_producer_new(const char *brokers, const char *client_id,
                          const char *const *extra_conf, char *errbuf, size_t errlen,
                          dl_kafka_producer **ret)
{
    dl_kafka_producer *p;
    rd_kafka_conf_t *conf;
    char errstr[512];
    int r;

    if (brokers == NULL || brokers[0] == '\0') {
        dl_kafka_errf(errbuf, errlen, "kafka: brokers list is empty");
        return -EINVAL;
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        dl_kafka_errf(errbuf, errlen, "kafka: out of memory");
        return -ENOMEM;
    }
    r = dl_kafka_wake_pipe(&p->wake_rd, &p->wake_wr, errbuf, errlen);
    if (r < 0)
        goto out_free;

    conf = rd_kafka_conf_new();
    r = dl_kafka_conf_set(conf, "bootstrap.servers", brokers, errbuf, errlen);
    if (r == 0 && client_id != NULL)
        r = dl_kafka_conf_set(conf, "client.id", client_id, errbuf, errlen);
    if (r == 0)
        r = dl_kafka_conf_apply(conf, extra_conf, dl_kafka_producer_fixed, errbuf, errlen);
    if (r == 0)
        r = dl_kafka_conf_fixed(conf, dl_kafka_producer_fixed, errbuf, errlen);
    if (r < 0)
        goto out_destroy_conf;
    rd_kafka_conf_set_log_cb(conf, dl_kafka_log_cb);
    rd_kafka_conf_set_dr_msg_cb(conf, dl_kafka_producer_dr_cb);
    rd_kafka_conf_set_error_cb(conf, dl_kafka_producer_error_cb);
    rd_kafka_conf_set_opaque(conf, p);

    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (p->rk == NULL) {
        dl_kafka_errf(errbuf, errlen, "kafka: cannot create producer: %s", errstr);
        r = -EINVAL;
        goto out_destroy_conf;
    }
    /* conf is owned by p->rk from here on. */
    p->mainq = rd_kafka_queue_get_main(p->rk);
    rd_kafka_queue_io_event_enable(p->mainq, p->wake_wr, "1", 1);
    *ret = p;
    return 0;

out_destroy_conf:
    rd_kafka_conf_destroy(conf);
    close(p->wake_rd);
    close(p->wake_wr);
out_free:
    free(p);
    return r;
}

static int dl_kafka_produce_errno(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
        return -ENOBUFS;
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
        return -EMSGSIZE;
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
        return -ENOENT;
    default:
        return -EIO;
    }
}

int dl_kafka_producer_produce(dl_kafka_producer *p, const char *topic,
                              const void *key, size_t keylen,
                              const void *value, size_t len,
                              const char *const *headers,
                              dl_kafka_delivery_fn on_delivery, void *opaque,
                              char *errbuf, size_t errlen)
{
    struct dl_kafka_delivery *d = NULL;
    rd_kafka_headers_t *hdrs = NULL;
    rd_kafka_resp_err_t err;
    size_t n = 0;
    int r;

    if (topic == NULL || topic[0] == '\0') {
        dl_kafka_errf(errbuf, errlen, "kafka: topic name is empty");
        return -EINVAL;
    }
    if (headers != NULL) {
        while (headers[n] != NULL)
            n++;
        if (n % 2 != 0) {
            dl_kafka_errf(errbuf, errlen, "kafka: header %s has no value", headers[n - 1]);
            return -EINVAL;
        }
    }
    if (on_delivery != NULL) {
        d = malloc(sizeof(*d));
        if (d == NULL) {
            dl_kafka_errf(errbuf, errlen, "kafka: out of memory");
            return -ENOMEM;
        }
        d->fn = on_delivery;
        d->opaque = opaque;
    }
    if (n > 0) {
        size_t i;

        hdrs = rd_kafka_headers_new(n / 2);
        for (i = 0; i < n; i += 2)
            rd_kafka_header_add(hdrs, headers[i], -1, headers[i + 1], -1);
        /* hdrs passes to the message only if producev succeeds. */
        err = rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(topic),
                                RD_KAFKA_V_KEY(key, keylen),
                                RD_KAFKA_V_VALUE((void *)value, len),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                RD_KAFKA_V_HEADERS(hdrs),
                                RD_KAFKA_V_OPAQUE(d),
                                RD_KAFKA_V_END);
    } else {
        err = rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(topic),
                                RD_KAFKA_V_KEY(key, keylen),
                                RD_KAFKA_V_VALUE((void *)value, len),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                RD_KAFKA_V_OPAQUE(d),
                                RD_KAFKA_V_END);
    }
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
        return 0;

    r = dl_kafka_produce_errno(err);
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char fatal[256];

        rd_kafka_fatal_error(p->rk, fatal, sizeof(fatal));
        dl_kafka_errf(errbuf, errlen, "kafka: producer failed fatally: %s", fatal);
    } else {
        dl_kafka_errf(errbuf, errlen, "kafka: cannot produce to %s: %s", topic,
                      rd_kafka_err2str(err));
    }
    if (hdrs != NULL)
        rd_kafka_headers_destroy(hdrs);
    free(d);
    return r;
}

int dl_kafka_producer_poll(dl_kafka_producer *p, int timeout_ms)
{
    /* Drain first: anything queued after this point writes a fresh wake-up byte. */
    dl_kafka_wake_drain(p->wake_rd);
    return rd_kafka_poll(p->rk, timeout_ms);
}

int dl_kafka_producer_flush(dl_kafka_producer *p, int timeout_ms)
{
    rd_kafka_resp_err_t err;

    err = rd_kafka_flush(p->rk, timeout_ms);
    dl_kafka_wake_drain(p->wake_rd);
    rd_kafka_poll(p->rk, 0);
    return err == RD_KAFKA_RESP_ERR_NO_ERROR ? 0 : -ETIMEDOUT;
}

int dl_kafka_producer_queue_depth(const dl_kafka_producer *p)
{
    return rd_kafka_outq_len(p->rk);
}

int dl_kafka_producer_check(dl_kafka_producer *p, int timeout_ms, char *errbuf, size_t errlen)
{
    return dl_kafka_check_handle(p->rk, p->last_error, timeout_ms, errbuf, errlen);
}

int dl_kafka_producer_wakeup_fd(const dl_kafka_producer *p)
{
    return p->wake_rd;
}

rd_kafka_t *dl_kafka_producer_handle(dl_kafka_producer *p)
{
    return p->rk;
}

void dl_kafka_producer_free(dl_kafka_producer *p)
{
    int waited;

    if (p == NULL)
        return;
    rd_kafka_flush(p->rk, DL_KAFKA_FREE_FLUSH_MS);
    if (rd_kafka_outq_len(p->rk) > 0) {
        /* Serve the purged messages' reports so every opaque is released. */
        rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        for (waited = 0; rd_kafka_outq_len(p->rk) > 0 && waited < DL_KAFKA_FREE_PURGE_MS;
             waited += 50)
            rd_kafka_poll(p->rk, 50);
    }
    rd_kafka_poll(p->rk, 0);
    rd_kafka_queue_io_event_enable(p->mainq, -1, NULL, 0);
    rd_kafka_queue_destroy(p->mainq);
    rd_kafka_destroy(p->rk);
    close(p->wake_rd);
    close(p->wake_wr);
    free(p);
}

static void dl_kafka_consumer_error_cb(rd_kafka_t *rk, int err, const char *reason,
                                       void *opaque)
{
    dl_kafka_consumer *c = opaque;

    (void)rk;
    snprintf(c->last_error, sizeof(c->last_error), "%s: %s",
             rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static void dl_kafka_consumer_record_error(dl_kafka_consumer *c, const char *what,
                                           rd_kafka_error_t *error)
{
    if (error == NULL)
        return;
    snprintf(c->last_error, sizeof(c->last_error), "%s: %s", what,
             rd_kafka_error_string(error));
    rd_kafka_error_destroy(error);
}

/*
 * Applies the group's decision. With the cooperative protocol librdkafka hands over only
 * the partitions that move, which must be added or removed incrementally; with an eager
 * protocol (if extra_conf chose one) the whole assignment is replaced.
 */
static void dl_kafka_consumer_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                           rd_kafka_topic_partition_list_t *partitions,
                                           void *opaque)
{
    dl_kafka_consumer *c = opaque;
    bool cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_resp_err_t aerr;

    switch (err) {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        if (cooperative) {
            dl_kafka_consumer_record_error(c, "incremental assign",
                                           rd_kafka_incremental_assign(rk, partitions));
        } else {
            aerr = rd_kafka_assign(rk, partitions);
            if (aerr != RD_KAFKA_RESP_ERR_NO_ERROR)
                snprintf(c->last_error, sizeof(c->last_error), "assign: %s",
                         rd_kafka_err2str(aerr));
        }
        if (c->cbs.on_assign != NULL)
            c->cbs.on_assign(c->cbs.opaque, partitions);
        break;
    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
        if (c->cbs.on_revoke != NULL)
            c->cbs.on_revoke(c->cbs.opaque, partitions, rd_kafka_assignment_lost(rk) != 0);
        if (cooperative) {
            dl_kafka_consumer_record_error(c, "incremental unassign",
                                           rd_kafka_incremental_unassign(rk, partitions));
        } else {
            rd_kafka_assign(rk, NULL);
        }
        break;
    default:
        snprintf(c->last_error, sizeof(c->last_error), "rebalance: %s",
                 rd_kafka_err2str(err));
        rd_kafka_assign(rk, NULL);
        break;
    }
}

int dl_kafka_consumer_new(const char *brokers, const char *group_id,
                          const char *const *topics, const char *const *extra_conf,
                          const dl_kafka_rebalance_cbs *cbs, char *errbuf, size_t errlen,
                          dl_kafka_consumer **ret)
{
    rd_kafka_topic_partition_list_t *subscription;
    rd_kafka_resp_err_t err;
    dl_kafka_consumer *c;
    rd_kafka_conf_t *conf;
    char errstr[512];
    size_t i;
    int r;

    if (brokers == NULL || brokers[0] == '\0' || group_id == NULL || group_id[0] == '\0') {
        dl_kafka_errf(errbuf, errlen, "kafka: brokers and group id are required");
        return -EINVAL;
    }
    if (topics == NULL || topics[0] == NULL) {
        dl_kafka_errf(errbuf, errlen, "kafka: no topics to subscribe to");
        return -EINVAL;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        dl_kafka_errf(errbuf, errlen, "kafka: out of memory");
        return -ENOMEM;
    }
    if (cbs != NULL)
        c->cbs = *cbs;
    r = dl_kafka_wake_pipe(&c->wake_rd, &c->wake_wr, errbuf, errlen);
    if (r < 0)
        goto out_free;

    conf = rd_kafka_conf_new();
    r = dl_kafka_conf_set(conf, "bootstrap.servers", brokers, errbuf, errlen);
    if (r == 0)
        r = dl_kafka_conf_set(conf, "group.id", group_id, errbuf, errlen);
    if (r == 0)
        r = dl_kafka_conf_set(conf, "partition.assignment.strategy", "cooperative-sticky",
                              errbuf, errlen);
    if (r == 0)
        r = dl_kafka_conf_set(conf, "auto.offset.reset", "earliest", errbuf, errlen);
    if (r == 0)
        r = dl_kafka_conf_apply(conf, extra_conf, dl_kafka_consumer_fixed, errbuf, errlen);
    if (r == 0)
        r = dl_kafka_conf_fixed(conf, dl_kafka_consumer_fixed, errbuf, errlen);
    if (r < 0)
        goto out_destroy_conf;
    rd_kafka_conf_set_log_cb(conf, dl_kafka_log_cb);
    rd_kafka_conf_set_rebalance_cb(conf, dl_kafka_consumer_rebalance_cb);
    rd_kafka_conf_set_error_cb(conf, dl_kafka_consumer_error_cb);
    rd_kafka_conf_set_opaque(conf, c);

    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (c->rk == NULL) {
        dl_kafka_errf(errbuf, errlen, "kafka: cannot create consumer: %s", errstr);
        r = -EINVAL;
        goto out_destroy_conf;
    }
    /* conf is owned by c->rk from here on; route every event to the consumer queue. */
    conf = NULL;
    rd_kafka_poll_set_consumer(c->rk);
    c->cq = rd_kafka_queue_get_consumer(c->rk);
    rd_kafka_queue_io_event_enable(c->cq, c->wake_wr, "1", 1);

    subscription = rd_kafka_topic_partition_list_new(4);
    for (i = 0; topics[i] != NULL; i++)
        rd_kafka_topic_partition_list_add(subscription, topics[i], RD_KAFKA_PARTITION_UA);
    err = rd_kafka_subscribe(c->rk, subscription);
    rd_kafka_topic_partition_list_destroy(subscription);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        dl_kafka_errf(errbuf, errlen, "kafka: cannot subscribe: %s", rd_kafka_err2str(err));
        r = -EINVAL;
        goto out_destroy_rk;
    }
    *ret = c;
    return 0;

out_destroy_rk:
    rd_kafka_queue_io_event_enable(c->cq, -1, NULL, 0);
    rd_kafka_queue_destroy(c->cq);
    rd_kafka_destroy(c->rk);
out_destroy_conf:
    if (conf != NULL)
        rd_kafka_conf_destroy(conf);
    close(c->wake_rd);
    close(c->wake_wr);
out_free:
    free(c);
    return r;
}

int dl_kafka_consumer_poll(dl_kafka_consumer *c, int timeout_ms, rd_kafka_message_t **ret,
                           char *errbuf, size_t errlen)
{
    rd_kafka_message_t *m;
    int r;

    /* The wake-up fd is drained only when the queue looks empty (a read per message cost more
     * than the poll): drain, then look again, so a message queued before the drain is seen now
     * and one queued after it writes a fresh byte. */
    m = rd_kafka_consumer_poll(c->rk, 0);
    if (m == NULL) {
        dl_kafka_wake_drain(c->wake_rd);
        m = rd_kafka_consumer_poll(c->rk, timeout_ms);
    }
    if (m == NULL || m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        if (m != NULL)
            rd_kafka_message_destroy(m);
        *ret = NULL;
        return 0;
    }
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        *ret = m;
        return 0;
    }
    if (m->err == RD_KAFKA_RESP_ERR__FATAL) {
        char fatal[256];

        rd_kafka_fatal_error(c->rk, fatal, sizeof(fatal));
        dl_kafka_errf(errbuf, errlen, "kafka: consumer failed fatally: %s", fatal);
        r = -EIO;
    } else {
        dl_kafka_errf(errbuf, errlen, "kafka: consumer error%s%s [%d]: %s",
                      m->rkt != NULL ? " on " : "",
                      m->rkt != NULL ? rd_kafka_topic_name(m->rkt) : "",
                      (int)m->partition, rd_kafka_message_errstr(m));
        r = -EAGAIN;
    }
    rd_kafka_message_destroy(m);
    return r;
}

int dl_kafka_consumer_commit_message(dl_kafka_consumer *c, const rd_kafka_message_t *msg,
                                     bool sync, char *errbuf, size_t errlen)
{
    rd_kafka_topic_partition_list_t *offsets;
    rd_kafka_topic_partition_t *tp;
    rd_kafka_resp_err_t err;

    if (msg == NULL || msg->err != RD_KAFKA_RESP_ERR_NO_ERROR || msg->rkt == NULL ||
        msg->offset < 0) {
        dl_kafka_errf(errbuf, errlen, "kafka: cannot commit an error or offsetless message");
        return -EINVAL;
    }
    offsets = rd_kafka_topic_partition_list_new(1);
    tp = rd_kafka_topic_partition_list_add(offsets, rd_kafka_topic_name(msg->rkt),
                                           msg->partition);
    tp->offset = msg->offset + 1;
    err = rd_kafka_commit(c->rk, offsets, sync ? 0 : 1);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR && sync)
        err = tp->err;
    rd_kafka_topic_partition_list_destroy(offsets);
    switch (err) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
        return 0;
    case RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS:
    case RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION:
    case RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID:
    case RD_KAFKA_RESP_ERR__STATE:
    case RD_KAFKA_RESP_ERR__ASSIGNMENT_LOST:
        dl_kafka_errf(errbuf, errlen, "kafka: commit of %s [%d] offset %lld refused: %s",
                      rd_kafka_topic_name(msg->rkt), (int)msg->partition,
                      (long long)msg->offset + 1, rd_kafka_err2str(err));
        return -ECANCELED;
    default:
        dl_kafka_errf(errbuf, errlen, "kafka: commit of %s [%d] offset %lld failed: %s",
                      rd_kafka_topic_name(msg->rkt), (int)msg->partition,
                      (long long)msg->offset + 1, rd_kafka_err2str(err));
        return -EIO;
    }
}

int dl_kafka_consumer_check(dl_kafka_consumer *c, int timeout_ms, char *errbuf, size_t errlen)
{
    return dl_kafka_check_handle(c->rk, c->last_error, timeout_ms, errbuf, errlen);
}

int dl_kafka_consumer_wakeup_fd(const dl_kafka_consumer *c)
{
    return c->wake_rd;
}

rd_kafka_t *dl_kafka_consumer_handle(dl_kafka_consumer *c)
{
    return c->rk;
}

/*
 * librdkafka before 2.4 can hang in rd_kafka_consumer_close when an incremental assignment
 * arrives while it closes (librdkafka#4527; Debian 12 ships 2.0.2): the bench saw a worker
 * stopped right after a second worker joined wait out its whole drain timeout. So the group is
 * left first: unsubscribe, then serve the rebalance callbacks (the application's revoke runs
 * as usual) until nothing is assigned, for at most DL_KAFKA_LEAVE_MS. Messages polled meanwhile
 * are dropped: they are past the last commit, so the next owner reads them.
 */
#define DL_KAFKA_LEAVE_MS 10000

static void dl_kafka_consumer_leave(dl_kafka_consumer *c)
{
    rd_kafka_topic_partition_list_t *a;
    rd_kafka_message_t *m;
    int waited = 0, assigned;

    if (rd_kafka_unsubscribe(c->rk) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    do {
        m = rd_kafka_consumer_poll(c->rk, 50);
        if (m != NULL)
            rd_kafka_message_destroy(m);
        waited += 50;
        a = NULL;
        if (rd_kafka_assignment(c->rk, &a) != RD_KAFKA_RESP_ERR_NO_ERROR || a == NULL)
            break;
        assigned = a->cnt;
        rd_kafka_topic_partition_list_destroy(a);
    } while (assigned > 0 && waited < DL_KAFKA_LEAVE_MS);
}

int dl_kafka_consumer_close(dl_kafka_consumer *c, char *errbuf, size_t errlen)
{
    rd_kafka_resp_err_t err;

    if (c->closed)
        return 0;
    c->closed = true;
    dl_kafka_consumer_leave(c);
    err = rd_kafka_consumer_close(c->rk);
    dl_kafka_wake_drain(c->wake_rd);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        dl_kafka_errf(errbuf, errlen, "kafka: consumer close: %s", rd_kafka_err2str(err));
        return -EIO;
    }
    return 0;
}

void dl_kafka_consumer_free(dl_kafka_consumer *c)
{
    if (c == NULL)
        return;
    dl_kafka_consumer_close(c, NULL, 0);
    rd_kafka_queue_io_event_enable(c->cq, -1, NULL, 0);
    rd_kafka_queue_destroy(c->cq);
    rd_kafka_destroy(c->rk);
    close(c->wake_rd);
    close(c->wake_wr);
    free(c);
}
