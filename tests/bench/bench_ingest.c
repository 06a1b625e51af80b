/* SPDX-License-Identifier: Apache-2.0 */
/* bench_ingest: load generator for POST /v1/events (keep-alive connections, epoll) and the plain librdkafka reference. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#define MAX_CONNS 512
#define RESP_BUF 16384

/*
 * Modes:
 *   single   each connection sends one-event requests back to back (closed loop): requests/s
 *   batch    each connection sends NDJSON bodies of --batch events: events/s
 *   rate     one-event requests at a fixed total --rate (open loop, latency measured from the
 *            scheduled send time so a stalled server is not hidden): p50/p99 latency
 *   kafka    a plain librdkafka producer (idempotent, acks=all, like ingest's) sends the same
 *            event envelopes to the same topic: events/s acknowledged, the reference
 * Output: one JSON line with the numbers (tests/bench/ingest.sh turns it into markdown).
 */

typedef struct conn {
	int fd;
	bool busy;
	int64_t sent_ns; /* when the request in flight was scheduled */
	char resp[RESP_BUF];
	size_t rlen;
	size_t wpos; /* bytes of the request written */
	const char *req;
	size_t reqlen;
} conn;

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* A ~200-byte web-access-like event; seq varies the content. */
static int make_event(char *buf, size_t cap, uint64_t seq)
{
	static const char *const paths[] = { "/api/orders", "/api/cart", "/login", "/static/app.js",
					     "/api/users/me", "/health" };
	static const char *const methods[] = { "GET", "POST", "GET", "GET", "PUT", "GET" };
	unsigned k = (unsigned)(seq * 2654435761u);

	return snprintf(buf, cap,
			"{\"stream\":\"bench.web\",\"method\":\"%s\",\"path\":\"%s\",\"status\":%u,"
			"\"latency_ms\":%u,\"bytes\":%u,\"client_ip\":\"10.%u.%u.%u\","
			"\"ua\":\"Mozilla/5.0 (X11; Linux x86_64)\",\"seq\":%llu}",
			methods[k % 6], paths[(k >> 3) % 6], (k >> 7) % 50 ? 200u : 500u,
			5 + (k >> 9) % 120, 200 + (k >> 11) % 9000, (k >> 13) % 256, (k >> 17) % 256,
			(k >> 21) % 256, (unsigned long long)seq);
}

static char *make_request(int port, const char *key, const char *ctype, const char *body,
			  size_t blen, size_t *ret_len)
{
	size_t cap = blen + 512;
	char *r = malloc(cap);
	int n;

	n = snprintf(r, cap,
		     "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n"
		     "Content-Type: %s\r\nContent-Length: %zu\r\n\r\n",
		     port, key, ctype, blen);
	memcpy(r + n, body, blen);
	*ret_len = (size_t)n + blen;
	return r;
}

static int connect_to(int port)
{
	struct sockaddr_in a = { 0 };
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		perror("connect");
		exit(1);
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	fcntl(fd, F_SETFL, O_NONBLOCK);
	return fd;
}

/* A whole response in c->resp? Returns its status (>0) and consumes it, 0 if incomplete. */
static int take_response(conn *c)
{
	char *hend, *cl;
	size_t body = 0, total;
	int status;

	c->resp[c->rlen < RESP_BUF ? c->rlen : RESP_BUF - 1] = '\0';
	hend = strstr(c->resp, "\r\n\r\n");
	if (!hend)
		return 0;
	cl = strcasestr(c->resp, "\r\nContent-Length:");
	if (cl && cl < hend)
		body = strtoul(cl + 17, NULL, 10);
	total = (size_t)(hend + 4 - c->resp) + body;
	if (c->rlen < total)
		return 0;
	status = atoi(c->resp + 9);
	memmove(c->resp, c->resp + total, c->rlen - total);
	c->rlen -= total;
	return status;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

typedef struct http_run {
	int port, nconns;
	double seconds, rate; /* rate 0: closed loop */
	char **reqs;
	size_t *reqlens;
	size_t nreqs;
	/* results */
	uint64_t ok, other, first_bad_status;
	int64_t *lat;
	size_t nlat, latcap;
} http_run;

static void send_some(conn *c)
{
	while (c->wpos < c->reqlen) {
		ssize_t w = write(c->fd, c->req + c->wpos, c->reqlen - c->wpos);

		if (w < 0)
			return; /* EAGAIN: epoll tells us when to go on */
		c->wpos += (size_t)w;
	}
}

static void start_request(http_run *r, conn *c, uint64_t seq, int64_t sched_ns)
{
	c->req = r->reqs[seq % r->nreqs];
	c->reqlen = r->reqlens[seq % r->nreqs];
	c->wpos = 0;
	c->busy = true;
	c->sent_ns = sched_ns;
	send_some(c);
}

static void run_http(http_run *r)
{
	conn *cs = calloc((size_t)r->nconns, sizeof(*cs));
	int ep = epoll_create1(0), i;
	int64_t t0, end, next_ns, interval_ns = 0;
	uint64_t seq = 0, backlog = 0;
	struct epoll_event evs[MAX_CONNS];

	for (i = 0; i < r->nconns; i++) {
		struct epoll_event e = { .events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u32 = (uint32_t)i };

		cs[i].fd = connect_to(r->port);
		epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &e);
	}
	t0 = now_ns();
	end = t0 + (int64_t)(r->seconds * 1e9);
	if (r->rate > 0)
		interval_ns = (int64_t)(1e9 / r->rate);
	next_ns = t0;
	if (r->rate <= 0)
		for (i = 0; i < r->nconns; i++)
			start_request(r, &cs[i], seq++, now_ns());
	for (;;) {
		int64_t now = now_ns();
		int n, timeout_ms = 1;

		if (now >= end)
			break;
		if (r->rate > 0) {
			/* Open loop: every due send goes to a free connection; sends that find none
			 * wait in a backlog but keep their scheduled time. */
			while (next_ns <= now) {
				backlog++;
				next_ns += interval_ns;
			}
			for (i = 0; i < r->nconns && backlog; i++) {
				if (!cs[i].busy) {
					start_request(r, &cs[i], seq++,
						      next_ns - (int64_t)backlog * interval_ns);
					backlog--;
				}
			}
		}
		n = epoll_wait(ep, evs, MAX_CONNS, timeout_ms);
		for (int k = 0; k < n; k++) {
			conn *c = &cs[evs[k].data.u32];
			int st;

			if (evs[k].events & EPOLLOUT)
				send_some(c);
			for (;;) {
				ssize_t got = read(c->fd, c->resp + c->rlen, RESP_BUF - 1 - c->rlen);

				if (got <= 0)
					break;
				c->rlen += (size_t)got;
			}
			while (c->busy && (st = take_response(c)) > 0) {
				int64_t done = now_ns();

				if (st == 202) {
					r->ok++;
				} else {
					r->other++;
					if (!r->first_bad_status)
						r->first_bad_status = (uint64_t)st;
				}
				if (r->nlat == r->latcap) {
					r->latcap = r->latcap ? r->latcap * 2 : 1 << 16;
					r->lat = realloc(r->lat, r->latcap * sizeof(*r->lat));
				}
				r->lat[r->nlat++] = done - c->sent_ns;
				c->busy = false;
				if (r->rate <= 0)
					start_request(r, c, seq++, done);
			}
		}
	}
	r->seconds = (double)(now_ns() - t0) / 1e9;
	for (i = 0; i < r->nconns; i++)
		close(cs[i].fd);
	close(ep);
	free(cs);
}

static double pct(int64_t *v, size_t n, double p)
{
	if (!n)
		return NAN;
	return (double)v[(size_t)fmin((double)n - 1, floor(p * (double)n))] / 1e3;
}

/* The reference: librdkafka alone, same envelope sizes, same topic, same guarantees. */
static int delivered, failed;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	(void)rk;
	(void)opaque;
	if (m->err)
		failed++;
	else
		delivered++;
}

static void run_kafka(const char *brokers, double seconds, int window)
{
	char errstr[512], ev[512], env[1024];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_t *rk;
	int64_t t0, end;
	uint64_t seq = 0;
	double secs;

	rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr));
	rd_kafka_conf_set(conf, "enable.idempotence", "true", errstr, sizeof(errstr));
	rd_kafka_conf_set(conf, "acks", "all", errstr, sizeof(errstr));
	rd_kafka_conf_set(conf, "linger.ms", "2", errstr, sizeof(errstr));
	rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (!rk) {
		fprintf(stderr, "kafka: %s\n", errstr);
		exit(1);
	}
	t0 = now_ns();
	end = t0 + (int64_t)(seconds * 1e9);
	/* Like ingest under the same load: at most window events queued and not yet acknowledged
	 * (connections x events per request), refilled as acknowledgements come back. */
	while (now_ns() < end) {
		while (seq - (uint64_t)(delivered + failed) < (uint64_t)window) {
			int n = make_event(ev, sizeof(ev), seq++);
			int m = snprintf(env, sizeof(env),
					 "{\"schema\":\"driftlock.event.v1\",\"id\":\"0193a6c2-7f1e-7b3a-9c4d-%012llx\","
					 "\"org_id\":\"00000000-0000-4000-8000-00000000bench\",\"stream\":\"bench.web\","
					 "\"ts\":\"2026-11-26T17:55:07.123Z\",\"received_at\":\"2026-11-26T17:55:07.123Z\","
					 "\"source\":\"http\",\"payload\":%.*s}",
					 (unsigned long long)seq, n, ev);

			if (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("driftlock.events.v1"),
					      RD_KAFKA_V_KEY("bench:bench.web", 15),
					      RD_KAFKA_V_VALUE(env, (size_t)m),
					      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
					      RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
				seq--;
				break;
			}
		}
		rd_kafka_poll(rk, 1);
	}
	secs = (double)(now_ns() - t0) / 1e9;
	rd_kafka_flush(rk, 10000);
	printf("{\"mode\":\"kafka\",\"window\":%d,\"seconds\":%.2f,\"events\":%d,\"failed\":%d,"
	       "\"events_per_s\":%.0f}\n",
	       window, secs, delivered, failed, delivered / secs);
	rd_kafka_destroy(rk);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: bench_ingest --mode single|batch|rate|kafka [options]\n"
		"  --port N        ingest's public port (http modes)\n"
		"  --key K         API key (http modes)\n"
		"  --brokers B     Kafka bootstrap servers (kafka mode)\n"
		"  --conns N       keep-alive connections (default 32)\n"
		"  --seconds S     duration (default 10)\n"
		"  --batch N       events per request in batch mode (1000); in kafka mode at most\n"
		"                  conns x batch events wait for acknowledgement at once\n"
		"  --rate R        requests/s in rate mode\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "mode", required_argument, NULL, 'm' },    { "port", required_argument, NULL, 'p' },
		{ "key", required_argument, NULL, 'k' },     { "brokers", required_argument, NULL, 'b' },
		{ "conns", required_argument, NULL, 'c' },   { "seconds", required_argument, NULL, 's' },
		{ "batch", required_argument, NULL, 'n' },   { "rate", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};
	const char *mode = NULL, *key = NULL, *brokers = NULL;
	http_run r = { .nconns = 32, .seconds = 10 };
	int batch = 1000, o;
	char ev[512];

	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'm': mode = optarg; break;
		case 'p': r.port = atoi(optarg); break;
		case 'k': key = optarg; break;
		case 'b': brokers = optarg; break;
		case 'c': r.nconns = atoi(optarg); break;
		case 's': r.seconds = atof(optarg); break;
		case 'n': batch = atoi(optarg); break;
		case 'r': r.rate = atof(optarg); break;
		default: usage();
		}
	}
	if (!mode || r.nconns < 1 || r.nconns > MAX_CONNS || batch < 1)
		usage();
	if (!strcmp(mode, "kafka")) {
		if (!brokers)
			usage();
		run_kafka(brokers, r.seconds, r.nconns * batch);
		return 0;
	}
	if (!key || !r.port)
		usage();
	r.nreqs = 64;
	r.reqs = calloc(r.nreqs, sizeof(char *));
	r.reqlens = calloc(r.nreqs, sizeof(size_t));
	for (size_t i = 0; i < r.nreqs; i++) {
		if (!strcmp(mode, "batch")) {
			size_t cap = (size_t)batch * 512, len = 0;
			char *body = malloc(cap);

			for (int e = 0; e < batch; e++) {
				int n = make_event(body + len, cap - len, i * (size_t)batch + (size_t)e);

				len += (size_t)n;
				body[len++] = '\n';
			}
			r.reqs[i] = make_request(r.port, key, "application/x-ndjson", body, len,
						 &r.reqlens[i]);
			free(body);
		} else {
			int n = make_event(ev, sizeof(ev), i);

			r.reqs[i] = make_request(r.port, key, "application/json", ev, (size_t)n,
						 &r.reqlens[i]);
		}
	}
	if (!strcmp(mode, "rate") && r.rate <= 0)
		usage();
	if (strcmp(mode, "rate") && strcmp(mode, "single") && strcmp(mode, "batch"))
		usage();
	if (strcmp(mode, "rate"))
		r.rate = 0;
	run_http(&r);
	qsort(r.lat, r.nlat, sizeof(*r.lat), cmp_i64);
	printf("{\"mode\":\"%s\",\"conns\":%d,\"batch\":%d,\"seconds\":%.2f,\"requests_ok\":%llu,"
	       "\"requests_other\":%llu,\"first_other_status\":%llu,\"requests_per_s\":%.0f,"
	       "\"events_per_s\":%.0f,\"p50_us\":%.0f,\"p99_us\":%.0f}\n",
	       mode, r.nconns, strcmp(mode, "batch") ? 1 : batch, r.seconds,
	       (unsigned long long)r.ok, (unsigned long long)r.other,
	       (unsigned long long)r.first_bad_status, (double)r.ok / r.seconds,
	       (double)r.ok * (strcmp(mode, "batch") ? 1 : batch) / r.seconds,
	       pct(r.lat, r.nlat, 0.50), pct(r.lat, r.nlat, 0.99));
	return r.other && !r.ok ? 1 : 0;
}
