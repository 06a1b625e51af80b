/* SPDX-License-Identifier: Apache-2.0 */
/* bench_service: the benchmarks' producer; one /metrics scrape over a plain socket (no client
 * library for a benchmark's polling loop), summed by name and label; clocks. */
#include "tests/bench/bench_service.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

rd_kafka_t *bench_producer_new(const char *prog, const char *brokers)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char err[512];
	rd_kafka_t *rk;

	if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof(err)) ||
	    rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof(err)) ||
	    rd_kafka_conf_set(conf, "linger.ms", "5", err, sizeof(err)) ||
	    rd_kafka_conf_set(conf, "queue.buffering.max.messages", "1000000", err, sizeof(err))) {
		rd_kafka_conf_destroy(conf);
		goto out_die;
	}
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
	if (rk)
		return rk;
out_die:
	fprintf(stderr, "%s: producer: %s\n", prog, err);
	exit(1);
}

double bench_metric_sum(int port, const char *name, const char *label)
{
	static char buf[1 << 20];
	static const char req[] =
		"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
	struct sockaddr_in sa = { 0 };
	char key[256];
	size_t got = 0, klen;
	double sum = 0;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	ssize_t n;

	snprintf(key, sizeof(key), "\n%s", name);
	klen = strlen(key);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    write(fd, req, sizeof(req) - 1) != (ssize_t)(sizeof(req) - 1)) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	while (got < sizeof(buf) - 1 && (n = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0)
		got += (size_t)n;
	close(fd);
	buf[got] = '\0';
	for (char *p = strstr(buf, key); p; p = strstr(p + 1, key)) {
		char *v = p + klen, *eol = strchr(v, '\n'), *sp;

		if (*v != '{' && *v != ' ')
			continue; /* a longer name with this prefix */
		sp = *v == '{' ? strchr(v, '}') : v;
		if (!sp || (eol && sp > eol))
			continue;
		if (label && (*v != '{' || !strstr(v, label) || strstr(v, label) > sp))
			continue;
		if (*v == '{')
			sp++;
		if (*sp == ' ')
			sum += strtod(sp + 1, NULL);
	}
	return sum;
}

int64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t bench_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
