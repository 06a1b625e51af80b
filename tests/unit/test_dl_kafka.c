/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for dl_kafka against librdkafka's built-in mock cluster. */
#include "common/dl_kafka.h"

#include <check.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka_mock.h>

static rd_kafka_t *mock_rk;
static rd_kafka_mock_cluster_t *mock;
static const char *brokers;

static void mock_setup(void)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    ck_assert_int_eq(rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
    mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    ck_assert_msg(mock_rk != NULL, "%s", errstr);
    mock = rd_kafka_mock_cluster_new(mock_rk, 1);
    ck_assert_ptr_nonnull(mock);
    brokers = rd_kafka_mock_cluster_bootstraps(mock);
    ck_assert_int_eq(rd_kafka_mock_topic_create(mock, "t.one", 1, 1), 0);
    ck_assert_int_eq(rd_kafka_mock_topic_create(mock, "t.two", 2, 1), 0);
}

static void mock_teardown(void)
{
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_rk);
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct report {
    int calls;
    rd_kafka_resp_err_t err;
    int32_t partition;
    int64_t offset;
};

static void on_delivery(void *opaque, rd_kafka_resp_err_t err, int32_t partition,
                        int64_t offset)
{
    struct report *r = opaque;

    r->calls++;
    r->err = err;
    r->partition = partition;
    r->offset = offset;
}

static const char *const quiet_conf[] = { "log_level", "0", NULL };

static dl_kafka_producer *new_producer(const char *const *extra)
{
    dl_kafka_producer *p = NULL;
    char err[256] = "";

    ck_assert_msg(dl_kafka_producer_new(brokers, "test", extra ? extra : quiet_conf, err,
                                        sizeof(err), &p) == 0, "%s", err);
    ck_assert_ptr_nonnull(p);
    return p;
}

START_TEST(test_produce_delivery_report)
{
    const char *const headers[] = { "request_id", "r-1", NULL };
    dl_kafka_producer *p = new_producer(NULL);
    struct report rep = { 0, RD_KAFKA_RESP_ERR__FAIL, -1, -1 };
    struct pollfd pfd = { .fd = dl_kafka_producer_wakeup_fd(p), .events = POLLIN };
    char err[256] = "";
    int64_t deadline;

    ck_assert_msg(dl_kafka_producer_produce(p, "t.one", "k", 1, "hello", 5, headers,
                                            on_delivery, &rep, err, sizeof(err)) == 0,
                  "%s", err);
    ck_assert_int_ge(dl_kafka_producer_queue_depth(p), 1);
    /* The report must not be served before poll, and the wake-up fd must announce it. */
    ck_assert_int_eq(rep.calls, 0);
    ck_assert_int_eq(poll(&pfd, 1, 10000), 1);
    ck_assert(pfd.revents & POLLIN);
    deadline = now_ms() + 10000;
    while (rep.calls == 0 && now_ms() < deadline)
        dl_kafka_producer_poll(p, 100);
    ck_assert_int_eq(rep.calls, 1);
    ck_assert_int_eq(rep.err, RD_KAFKA_RESP_ERR_NO_ERROR);
    ck_assert_int_eq(rep.partition, 0);
    ck_assert_int_eq(rep.offset, 0);
    ck_assert_int_eq(dl_kafka_producer_queue_depth(p), 0);
    /* Served: the wake-up fd is drained and quiet again. */
    ck_assert_int_eq(poll(&pfd, 1, 0), 0);
    ck_assert_int_eq(dl_kafka_producer_check(p, 5000, err, sizeof(err)), 0);
    dl_kafka_producer_free(p);
}
END_TEST

START_TEST(test_queue_full_is_enobufs)
{
    const char *const conf[] = { "log_level", "0", "queue.buffering.max.messages", "1",
                                 "linger.ms", "500", NULL };
    dl_kafka_producer *p = new_producer(conf);
    struct report first = { 0, RD_KAFKA_RESP_ERR__FAIL, -1, -1 };
    struct report second = { 0, RD_KAFKA_RESP_ERR__FAIL, -1, -1 };
    char err[256] = "";

    ck_assert_int_eq(dl_kafka_producer_produce(p, "t.one", NULL, 0, "a", 1, NULL,
                                               on_delivery, &first, err, sizeof(err)), 0);
    err[0] = '\0';
    ck_assert_int_eq(dl_kafka_producer_produce(p, "t.one", NULL, 0, "b", 1, NULL,
                                               on_delivery, &second, err, sizeof(err)),
                     -ENOBUFS);
    ck_assert_msg(strstr(err, "t.one") != NULL, "error text names the topic: %s", err);
    ck_assert_int_eq(dl_kafka_producer_flush(p, 10000), 0);
    ck_assert_int_eq(first.calls, 1);
    ck_assert_int_eq(first.err, RD_KAFKA_RESP_ERR_NO_ERROR);
    /* A refused message never gets a report; once drained the queue accepts again. */
    ck_assert_int_eq(second.calls, 0);
    ck_assert_int_eq(dl_kafka_producer_produce(p, "t.one", NULL, 0, "b", 1, NULL,
                                               on_delivery, &second, err, sizeof(err)), 0);
    ck_assert_int_eq(dl_kafka_producer_flush(p, 10000), 0);
    ck_assert_int_eq(second.calls, 1);
    ck_assert_int_eq(second.offset, 1);
    dl_kafka_producer_free(p);
}
END_TEST

START_TEST(test_free_reports_undelivered)
{
    const char *const conf[] = { "log_level", "0", "message.timeout.ms", "60000", NULL };
    dl_kafka_producer *p = NULL;
    struct report rep = { 0, RD_KAFKA_RESP_ERR_NO_ERROR, -1, -1 };
    char err[256] = "";

    /* Nothing listens on port 1: the message stays queued until free purges it. */
    ck_assert_int_eq(dl_kafka_producer_new("127.0.0.1:1", "test", conf, err, sizeof(err),
                                           &p), 0);
    ck_assert_int_eq(dl_kafka_producer_produce(p, "t.one", NULL, 0, "x", 1, NULL,
                                               on_delivery, &rep, err, sizeof(err)), 0);
    ck_assert_int_lt(dl_kafka_producer_check(p, 500, err, sizeof(err)), 0);
    ck_assert_str_ne(err, "");
    dl_kafka_producer_free(p);
    ck_assert_int_eq(rep.calls, 1);
    ck_assert_int_eq(rep.err, RD_KAFKA_RESP_ERR__PURGE_QUEUE);
}
END_TEST

START_TEST(test_fixed_settings_rejected)
{
    const char *const acks1[] = { "acks", "1", NULL };
    const char *const autocommit[] = { "enable.auto.commit", "true", NULL };
    const char *const topics[] = { "t.one", NULL };
    dl_kafka_producer *p = (dl_kafka_producer *)&p;
    dl_kafka_consumer *c = (dl_kafka_consumer *)&c;
    char err[256] = "";

    ck_assert_int_eq(dl_kafka_producer_new(brokers, "t", acks1, err, sizeof(err), &p),
                     -EINVAL);
    ck_assert_ptr_eq(p, (dl_kafka_producer *)&p);
    ck_assert_msg(strstr(err, "acks") != NULL, "%s", err);
    err[0] = '\0';
    ck_assert_int_eq(dl_kafka_consumer_new(brokers, "g", topics, autocommit, NULL, err,
                                           sizeof(err), &c), -EINVAL);
    ck_assert_ptr_eq(c, (dl_kafka_consumer *)&c);
    ck_assert_msg(strstr(err, "enable.auto.commit") != NULL, "%s", err);
    dl_kafka_producer_free(NULL);
    dl_kafka_consumer_free(NULL);
}
END_TEST

struct group_state {
    int assigned;
    int revoked;
    int assign_calls;
};

static void on_assign(void *opaque, const rd_kafka_topic_partition_list_t *parts)
{
    struct group_state *g = opaque;

    g->assign_calls++;
    g->assigned += parts->cnt;
}

static void on_revoke(void *opaque, const rd_kafka_topic_partition_list_t *parts, bool lost)
{
    struct group_state *g = opaque;

    ck_assert(!lost);
    g->revoked += parts->cnt;
}

static dl_kafka_consumer *new_consumer(const char *group, const char *topic,
                                       struct group_state *g)
{
    const char *const topics[] = { topic, NULL };
    const char *const conf[] = { "log_level", "0", "session.timeout.ms", "6000",
                                 "heartbeat.interval.ms", "500", NULL };
    dl_kafka_rebalance_cbs cbs = { on_assign, on_revoke, g };
    dl_kafka_consumer *c = NULL;
    char err[256] = "";

    ck_assert_msg(dl_kafka_consumer_new(brokers, group, topics, conf, &cbs, err, sizeof(err),
                                        &c) == 0, "%s", err);
    return c;
}

/* Polls until a message arrives or 30 s pass; fails the test on error. */
static rd_kafka_message_t *next_message(dl_kafka_consumer *c, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    rd_kafka_message_t *m = NULL;
    char err[256] = "";

    while (m == NULL && now_ms() < deadline) {
        int r = dl_kafka_consumer_poll(c, 200, &m, err, sizeof(err));

        ck_assert_msg(r == 0, "poll: %d %s", r, err);
    }
    return m;
}

static void produce_n(const char *topic, int n)
{
    dl_kafka_producer *p = new_producer(NULL);
    const char *const headers[] = { "source", "unit", NULL };
    char err[256] = "";
    char key[16], val[16];
    int i;

    for (i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(val, sizeof(val), "m%d", i);
        ck_assert_msg(dl_kafka_producer_produce(p, topic, key, strlen(key), val, strlen(val),
                                                headers, NULL, NULL, err, sizeof(err)) == 0,
                      "%s", err);
    }
    ck_assert_int_eq(dl_kafka_producer_flush(p, 10000), 0);
    dl_kafka_producer_free(p);
}

static bool value_is(const rd_kafka_message_t *m, const char *want)
{
    return m->len == strlen(want) && memcmp(m->payload, want, m->len) == 0;
}

START_TEST(test_group_commit_and_resume)
{
    struct group_state ga = { 0, 0, 0 }, gb = { 0, 0, 0 };
    rd_kafka_topic_partition_list_t *committed;
    dl_kafka_consumer *a, *b;
    rd_kafka_message_t *m;
    rd_kafka_headers_t *hdrs;
    const void *hval;
    size_t hlen;
    char want[16], err[256] = "";
    int i;

    produce_n("t.one", 10);

    a = new_consumer("g.resume", "t.one", &ga);
    for (i = 0; i < 10; i++) {
        m = next_message(a, 30000);
        ck_assert_msg(m != NULL, "message %d not consumed", i);
        snprintf(want, sizeof(want), "m%d", i);
        ck_assert_msg(value_is(m, want), "message %d is %.*s", i, (int)m->len,
                      (const char *)m->payload);
        ck_assert_int_eq(rd_kafka_message_headers(m, &hdrs), 0);
        ck_assert_int_eq(rd_kafka_header_get_last(hdrs, "source", &hval, &hlen), 0);
        ck_assert_int_eq(hlen, 4);
        ck_assert(memcmp(hval, "unit", 4) == 0);
        if (i == 4)
            ck_assert_msg(dl_kafka_consumer_commit_message(a, m, true, err,
                                                           sizeof(err)) == 0, "%s", err);
        rd_kafka_message_destroy(m);
    }
    ck_assert_int_eq(ga.assign_calls, 1);
    ck_assert_int_eq(ga.assigned, 1);

    committed = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(committed, "t.one", 0);
    ck_assert_int_eq(rd_kafka_committed(dl_kafka_consumer_handle(a), committed, 5000), 0);
    ck_assert_int_eq(committed->elems[0].offset, 5);
    rd_kafka_topic_partition_list_destroy(committed);

    ck_assert_int_eq(dl_kafka_consumer_close(a, err, sizeof(err)), 0);
    ck_assert_int_eq(ga.revoked, 1);
    ck_assert_int_eq(dl_kafka_consumer_close(a, err, sizeof(err)), 0);
    dl_kafka_consumer_free(a);

    /* Closing committed nothing more: a new member resumes right after m4. */
    b = new_consumer("g.resume", "t.one", &gb);
    for (i = 5; i < 10; i++) {
        m = next_message(b, 30000);
        ck_assert_msg(m != NULL, "message %d not consumed after resume", i);
        snprintf(want, sizeof(want), "m%d", i);
        ck_assert_msg(value_is(m, want), "resumed at %.*s, want %s", (int)m->len,
                      (const char *)m->payload, want);
        rd_kafka_message_destroy(m);
    }
    m = next_message(b, 1000);
    ck_assert_ptr_null(m);
    ck_assert_int_eq(gb.assigned, 1);
    dl_kafka_consumer_free(b);
}
END_TEST

START_TEST(test_commit_touches_only_its_partition)
{
    struct group_state g = { 0, 0, 0 };
    rd_kafka_topic_partition_list_t *committed;
    dl_kafka_consumer *c;
    rd_kafka_message_t *m;
    int32_t part;
    int64_t off;
    char err[256] = "";
    int i;

    produce_n("t.two", 20);
    c = new_consumer("g.part", "t.two", &g);
    m = next_message(c, 30000);
    ck_assert_ptr_nonnull(m);
    /* Let the other partition's messages arrive too, so both have a position. */
    for (i = 0; i < 19; i++) {
        rd_kafka_message_t *n = next_message(c, 10000);

        ck_assert_ptr_nonnull(n);
        rd_kafka_message_destroy(n);
    }
    ck_assert_int_eq(g.assigned, 2);
    part = m->partition;
    off = m->offset;
    ck_assert_msg(dl_kafka_consumer_commit_message(c, m, true, err, sizeof(err)) == 0, "%s",
                  err);
    rd_kafka_message_destroy(m);

    committed = rd_kafka_topic_partition_list_new(2);
    rd_kafka_topic_partition_list_add(committed, "t.two", 0);
    rd_kafka_topic_partition_list_add(committed, "t.two", 1);
    ck_assert_int_eq(rd_kafka_committed(dl_kafka_consumer_handle(c), committed, 5000), 0);
    for (i = 0; i < 2; i++) {
        if (committed->elems[i].partition == part)
            ck_assert_int_eq(committed->elems[i].offset, off + 1);
        else
            ck_assert_int_eq(committed->elems[i].offset, RD_KAFKA_OFFSET_INVALID);
    }
    rd_kafka_topic_partition_list_destroy(committed);
    ck_assert_int_eq(dl_kafka_consumer_check(c, 5000, err, sizeof(err)), 0);
    dl_kafka_consumer_free(c);
    ck_assert_int_eq(g.revoked, 2);
}
END_TEST

static Suite *dl_kafka_suite(void)
{
    Suite *s = suite_create("dl_kafka");
    TCase *tc = tcase_create("mock_cluster");

    tcase_add_checked_fixture(tc, mock_setup, mock_teardown);
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_produce_delivery_report);
    tcase_add_test(tc, test_queue_full_is_enobufs);
    tcase_add_test(tc, test_free_reports_undelivered);
    tcase_add_test(tc, test_fixed_settings_rejected);
    tcase_add_test(tc, test_group_commit_and_resume);
    tcase_add_test(tc, test_commit_touches_only_its_partition);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(dl_kafka_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
