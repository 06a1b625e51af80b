/* SPDX-License-Identifier: Apache-2.0 */
/* Integration test for dl_kafka against the real broker named by DRIFTLOCK_KAFKA_BROKERS. */
#include "common/dl_kafka.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TOPIC "driftlock.events.v1"

static const char *brokers(void)
{
    const char *b = getenv("DRIFTLOCK_KAFKA_BROKERS");

    ck_assert_msg(b != NULL && b[0] != '\0',
                  "DRIFTLOCK_KAFKA_BROKERS is not set (source the stack.env of infra/stack.sh)");
    return b;
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

static int assigned;

static void on_assign(void *opaque, const rd_kafka_topic_partition_list_t *parts)
{
    (void)opaque;
    assigned += parts->cnt;
}

static dl_kafka_consumer *new_consumer(const char *group)
{
    const char *const topics[] = { TOPIC, NULL };
    const char *const conf[] = { "session.timeout.ms", "10000", NULL };
    dl_kafka_rebalance_cbs cbs = { on_assign, NULL, NULL };
    dl_kafka_consumer *c = NULL;
    char err[512] = "";

    ck_assert_msg(dl_kafka_consumer_new(brokers(), group, topics, conf, &cbs, err, sizeof(err),
                                        &c) == 0, "%s", err);
    return c;
}

/*
 * Consumes until a message of partition part with value want shows up and returns it.
 * With first set, the first message seen from that partition must be it.
 */
static rd_kafka_message_t *find_value(dl_kafka_consumer *c, int32_t part, const char *want,
                                      bool first)
{
    int64_t deadline = now_ms() + 60000;
    char err[512] = "";

    while (now_ms() < deadline) {
        rd_kafka_message_t *m = NULL;
        int r = dl_kafka_consumer_poll(c, 500, &m, err, sizeof(err));

        ck_assert_msg(r == 0 || r == -EAGAIN, "poll: %d %s", r, err);
        if (m == NULL)
            continue;
        if (m->partition == part) {
            if (m->len == strlen(want) && memcmp(m->payload, want, m->len) == 0)
                return m;
            ck_assert_msg(!first, "resumed at offset %lld, not at %s", (long long)m->offset,
                          want);
        }
        rd_kafka_message_destroy(m);
    }
    ck_abort_msg("value %s never consumed", want);
    return NULL;
}

START_TEST(test_produce_acks_all_consume_commit_resume)
{
    const char *const headers[] = { "content-type", "application/json", NULL };
    struct report r1 = { 0, RD_KAFKA_RESP_ERR__FAIL, -1, -1 };
    struct report r2 = { 0, RD_KAFKA_RESP_ERR__FAIL, -1, -1 };
    rd_kafka_topic_partition_list_t *committed;
    char key[96], v1[128], v2[128], group[96], err[512] = "";
    dl_kafka_producer *p = NULL;
    dl_kafka_consumer *c;
    rd_kafka_message_t *m;
    int64_t deadline;
    long tag = (long)getpid() * 1000 + (long)(now_ms() % 1000);

    snprintf(key, sizeof(key), "0191f2a4-7c3e-7b61-9a2f-3c4d5e6f7a8b:io-%ld", tag);
    snprintf(v1, sizeof(v1), "{\"n\":1,\"tag\":%ld}", tag);
    snprintf(v2, sizeof(v2), "{\"n\":2,\"tag\":%ld}", tag);
    snprintf(group, sizeof(group), "io-itest-%ld", tag);

    ck_assert_msg(dl_kafka_producer_new(brokers(), "io-itest", NULL, err, sizeof(err), &p) == 0,
                  "%s", err);
    ck_assert_msg(dl_kafka_producer_check(p, 10000, err, sizeof(err)) == 0, "%s", err);
    ck_assert_msg(rd_kafka_conf_get(rd_kafka_conf(dl_kafka_producer_handle(p)), "acks", err,
                                    &(size_t){ sizeof(err) }) == RD_KAFKA_CONF_OK, "acks");
    ck_assert_str_eq(err, "-1");
    ck_assert_int_eq(dl_kafka_producer_produce(p, TOPIC, key, strlen(key), v1, strlen(v1),
                                               headers, on_delivery, &r1, err, sizeof(err)), 0);
    ck_assert_int_eq(dl_kafka_producer_produce(p, TOPIC, key, strlen(key), v2, strlen(v2),
                                               headers, on_delivery, &r2, err, sizeof(err)), 0);
    deadline = now_ms() + 30000;
    while ((r1.calls == 0 || r2.calls == 0) && now_ms() < deadline)
        dl_kafka_producer_poll(p, 200);
    ck_assert_int_eq(r1.calls, 1);
    ck_assert_int_eq(r2.calls, 1);
    ck_assert_msg(r1.err == 0, "%s", rd_kafka_err2str(r1.err));
    ck_assert_msg(r2.err == 0, "%s", rd_kafka_err2str(r2.err));
    /* Same key, same partition, in order. */
    ck_assert_int_eq(r1.partition, r2.partition);
    ck_assert_int_eq(r2.offset, r1.offset + 1);
    dl_kafka_producer_free(p);

    /* A fresh group reads from the earliest offset; commit exactly the first message. */
    c = new_consumer(group);
    m = find_value(c, r1.partition, v1, false);
    ck_assert_int_eq(m->offset, r1.offset);
    ck_assert_int_eq(m->key_len, strlen(key));
    ck_assert(memcmp(m->key, key, m->key_len) == 0);
    ck_assert_msg(dl_kafka_consumer_commit_message(c, m, true, err, sizeof(err)) == 0, "%s",
                  err);
    rd_kafka_message_destroy(m);
    ck_assert_int_gt(assigned, 0);

    committed = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(committed, TOPIC, r1.partition);
    ck_assert_int_eq(rd_kafka_committed(dl_kafka_consumer_handle(c), committed, 10000), 0);
    ck_assert_int_eq(committed->elems[0].offset, r1.offset + 1);
    rd_kafka_topic_partition_list_destroy(committed);
    ck_assert_int_eq(dl_kafka_consumer_close(c, err, sizeof(err)), 0);
    dl_kafka_consumer_free(c);

    /* A new member of the group resumes after the committed message. */
    c = new_consumer(group);
    m = find_value(c, r1.partition, v2, true);
    ck_assert_int_eq(m->offset, r2.offset);
    rd_kafka_message_destroy(m);
    dl_kafka_consumer_free(c);
}
END_TEST

static Suite *dl_kafka_broker_suite(void)
{
    Suite *s = suite_create("dl_kafka_broker");
    TCase *tc = tcase_create("broker");

    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, test_produce_acks_all_consume_commit_resume);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(dl_kafka_broker_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
