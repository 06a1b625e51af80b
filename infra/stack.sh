#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs the local DriftLock stack (PostgreSQL 15, Redis, a single-node KRaft Kafka 4.1.1)
# as ordinary processes whose data, logs, ports, passwords and pids all live in one run dir.
#
# Usage: infra/stack.sh start|status|stop|env [--run-dir DIR]
#   The run dir is --run-dir, else $DRIFTLOCK_RUN_DIR, else <repo>/run/local.
#   Stacks with different run dirs are independent and can run side by side.
# See docs/operations.md.
set -euo pipefail

DL_PROG=stack
# shellcheck source=infra/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

REPO=$(dl_repo_root)
SERVERS=(postgres redis kafka)
ROLES=(INGEST DETECTOR METERING BILLING NOTIFIER DASHBOARD)
STOP_TIMEOUT=20

usage() {
	cat <<EOF
usage: infra/stack.sh start|status|stop|env [--run-dir DIR] [--only postgres|redis|kafka]

  start   start whatever of PostgreSQL, Redis and Kafka is not already running in the run
          dir, create the Kafka topics of infra/kafka/topics.conf, write \$RUN_DIR/stack.env
  status  one line per server; exits non-zero if any is down
  stop    stop the servers this run dir started (by recorded pid: TERM, then KILL after ${STOP_TIMEOUT}s);
          with --only NAME just that one (fault tests: 'start' brings it back on the same port)
  env     print the path of the env file (source it to get the DRIFTLOCK_* variables)

  run dir: --run-dir DIR, else \$DRIFTLOCK_RUN_DIR, else $REPO/run/local
EOF
}

# ---------------------------------------------------------------- paths and settings

set_paths() {
	if [ "$2" = start ]; then
		mkdir -p "$1" 2>/dev/null || dl_die "cannot create run dir $1"
	fi
	if [ -d "$1" ]; then
		RUN=$(cd "$1" && pwd -P)
	else
		RUN=$1
	fi
	LOGS=$RUN/logs
	PIDS=$RUN/pids
	SECRETS=$RUN/secrets
	PORTS_FILE=$RUN/ports.env
	ENV_FILE=$RUN/stack.env
	PG_DIR=$RUN/pg
	PG_DATA=$PG_DIR/data
	PG_SOCK=$PG_DIR/sock
	REDIS_DIR=$RUN/redis
	KAFKA_DIR=$RUN/kafka
	KAFKA_HOME=$(dl_kafka_home)
	KAFKA_LIBS=$KAFKA_HOME/libs
	if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then
		JAVA=$JAVA_HOME/bin/java
	else
		JAVA=java
	fi
	PG_BIN=${DRIFTLOCK_PG_BIN:-/usr/lib/postgresql/15/bin}
	[ -x "$PG_BIN/postgres" ] || PG_BIN=$(dirname "$(command -v postgres 2>/dev/null || echo /nonexistent/postgres)")
}

log_file() {
	case "$1" in
	postgres) echo "$LOGS/postgres.log" ;;
	redis) echo "$LOGS/redis.log" ;;
	kafka) echo "$LOGS/kafka.log" ;;
	esac
}

port_of() {
	case "$1" in
	postgres) echo "$PG_PORT" ;;
	redis) echo "$REDIS_PORT" ;;
	kafka) echo "$KAFKA_PORT" ;;
	esac
}

# secret NAME [BYTES]: print the password stored under NAME (BYTES random bytes in hex,
# 16 by default), generating it on first use.
secret() {
	local f=$SECRETS/$1
	if [ ! -s "$f" ]; then
		(umask 077 && openssl rand -hex "${2:-16}" >"$f.tmp" && mv "$f.tmp" "$f") ||
			dl_die "cannot write secret $f"
	fi
	cat "$f"
}

# Ports are picked once per run dir (all at once, so they differ from each other) and then
# remembered, so the addresses in stack.env stay the same across restarts.
load_ports() {
	local picked pg redis kafka controller
	if [ ! -s "$PORTS_FILE" ]; then
		picked=$(python3 -c '
import socket
socks = []
for _ in range(4):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))') || dl_die "python3 could not pick free ports"
		read -r pg redis kafka controller <<<"$picked"
		printf 'PG_PORT=%s\nREDIS_PORT=%s\nKAFKA_PORT=%s\nKAFKA_CONTROLLER_PORT=%s\n' \
			"$pg" "$redis" "$kafka" "$controller" >"$PORTS_FILE.tmp"
		mv "$PORTS_FILE.tmp" "$PORTS_FILE"
	fi
	PG_PORT='' REDIS_PORT='' KAFKA_PORT='' KAFKA_CONTROLLER_PORT=''
	# shellcheck disable=SC1090
	. "$PORTS_FILE"
	local p
	for p in "$PG_PORT" "$REDIS_PORT" "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
		case "$p" in
		'' | *[!0-9]*) dl_die "$PORTS_FILE is damaged; delete it to pick new ports" ;;
		esac
	done
}

# port_free PORT: true when nothing listens on 127.0.0.1:PORT.
port_free() {
	python3 -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}

require_port_free() {
	port_free "$2" ||
		dl_die "$1 cannot start: 127.0.0.1:$2 is in use by another process" \
			"(find it with: ss -ltnp 'sport = :$2'; or delete $PORTS_FILE to pick new ports)"
}

# ---------------------------------------------------------------- process bookkeeping

pid_file() {
	echo "$PIDS/$1.pid"
}

recorded_pid() {
	local f
	f=$(pid_file "$1")
	[ -s "$f" ] && cat "$f"
	return 0
}

# pid_is_ours PID: alive and working inside this run dir (each server's cwd is in it:
# postgres in its data dir, redis in its dir, kafka started there). Guards against a
# recycled pid: we never signal a process that is not ours.
pid_is_ours() {
	local pid=$1 cwd
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
	cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) || return 1
	case "$cwd" in
	"$RUN" | "$RUN"/*) return 0 ;;
	esac
	return 1
}

answering() {
	case "$1" in
	postgres)
		"$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2 >/dev/null 2>&1
		;;
	redis)
		[ "$(REDISCLI_AUTH=$(secret redis) timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]
		;;
	kafka)
		timeout 10 kcat -L -b "127.0.0.1:$KAFKA_PORT" -m 3 -t __none__ 2>/dev/null | grep -q "broker 1 at"
		;;
	esac
}

running() {
	pid_is_ours "$(recorded_pid "$1")" && answering "$1"
}

# fail_server NAME MSG: the error, then the end of that server's log.
fail_server() {
	local name=$1 log f
	shift
	log=$(log_file "$name")
	{
		printf '%s: error: %s\n' "$DL_PROG" "$*"
		# EXTRA_LOG names a step's own log; by default the server's stdout/stderr file.
		for f in "$log" "${EXTRA_LOG:-$LOGS/$name.out}"; do
			if [ -n "$f" ] && [ -s "$f" ]; then
				printf -- '--- last lines of %s ---\n' "$f"
				tail -n 30 "$f"
			fi
		done
		printf -- '--- (servers already started keep running; stop them with: infra/stack.sh stop --run-dir %s)\n' "$RUN"
	} >&2
	exit 1
}

# wait_answering NAME SECONDS: until the server answers; fails early if its process dies.
wait_answering() {
	local name=$1 deadline=$((SECONDS + $2)) pid
	pid=$(recorded_pid "$name")
	while :; do
		if ! kill -0 "$pid" 2>/dev/null; then
			fail_server "$name" "$name (pid $pid) exited during start"
		fi
		answering "$name" && return 0
		if [ "$SECONDS" -ge "$deadline" ]; then
			fail_server "$name" "$name (pid $pid) is running but did not answer within $2 s"
		fi
		sleep 0.25
	done
}

# already_running NAME: true if NAME is up; waits a little for a live but silent one
# (e.g. PostgreSQL replaying its WAL) instead of starting a second copy next to it.
already_running() {
	local name=$1 pid
	pid=$(recorded_pid "$name")
	if pid_is_ours "$pid"; then
		wait_answering "$name" 30
		dl_info "$name already running (pid $pid, 127.0.0.1:$(port_of "$name"))"
		return 0
	fi
	rm -f "$(pid_file "$name")"
	return 1
}

# ---------------------------------------------------------------- PostgreSQL

# PostgreSQL refuses to run as root: as root it runs as the 'postgres' system user
# (created by the postgresql package) or, failing that, a 'driftlock' system user.
pg_os_user() {
	if [ "$(id -u)" -ne 0 ]; then
		id -un
	elif id postgres >/dev/null 2>&1; then
		echo postgres
	else
		id driftlock >/dev/null 2>&1 ||
			useradd --system --no-create-home --shell /usr/sbin/nologin driftlock ||
			dl_die "cannot create system user driftlock to run PostgreSQL"
		echo driftlock
	fi
}

as_pg() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u "$PG_USER" -- "$@"
	else
		"$@"
	fi
}

pg_prepare_dirs() {
	mkdir -p "$PG_DIR" "$PG_SOCK"
	touch "$LOGS/postgres.log"
	if [ "$(id -u)" -eq 0 ]; then
		chown "$PG_USER": "$PG_DIR" "$PG_SOCK" "$LOGS/postgres.log"
		[ ! -d "$PG_DATA" ] || chown -R "$PG_USER": "$PG_DATA"
		# The run dir itself may be private (mktemp -d): let the server user through.
		chmod o+x "$RUN" "$LOGS"
		as_pg test -w "$PG_DIR" ||
			dl_die "user $PG_USER cannot reach $PG_DIR: a parent directory of the run dir is" \
				"not searchable by others (chmod o+x it, or choose another --run-dir)"
	fi
	# The socket path must fit in sockaddr_un (107 bytes).
	[ "${#PG_SOCK}" -le 90 ] || dl_die "run dir path too long for a PostgreSQL socket: $PG_SOCK"
}

pg_initdb() {
	local pwfile
	[ -s "$PG_DATA/PG_VERSION" ] && return 0
	dl_info "postgres: initdb $PG_DATA"
	rm -rf "$PG_DATA"
	pwfile=$PG_DIR/.initdb-pw
	(umask 077 && secret pg_postgres >"$pwfile")
	[ "$(id -u)" -ne 0 ] || chown "$PG_USER": "$pwfile"
	if ! as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=scram-sha-256 \
		--pwfile="$pwfile" --encoding=UTF8 --no-locale >"$LOGS/initdb.log" 2>&1; then
		rm -f "$pwfile"
		EXTRA_LOG=$LOGS/initdb.log fail_server postgres "initdb failed"
	fi
	rm -f "$pwfile"
	printf "\n# Local stack settings (infra/stack.sh rewrites driftlock.conf at each start).\ninclude_if_exists = 'driftlock.conf'\n" \
		>>"$PG_DATA/postgresql.conf"
}

start_postgres() {
	local pid pw
	already_running postgres && return 0
	require_port_free postgres "$PG_PORT"
	pg_prepare_dirs
	pg_initdb
	cat >"$PG_DATA/driftlock.conf" <<EOF
# Written by infra/stack.sh for run dir $RUN.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 200
password_encryption = 'scram-sha-256'
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
EOF
	[ "$(id -u)" -ne 0 ] || chown "$PG_USER": "$PG_DATA/driftlock.conf"
	dl_info "postgres: starting on 127.0.0.1:$PG_PORT"
	# pg_ctl puts the postmaster in its own session; -w waits until it accepts connections.
	# 9>&-: the server must not inherit (and so hold) the run dir's lock.
	if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$LOGS/postgres.log" -w -t 60 -s start \
		>"$LOGS/pg_ctl.log" 2>&1 9>&-; then
		EXTRA_LOG=$LOGS/pg_ctl.log fail_server postgres "PostgreSQL did not start"
	fi
	pid=$(head -n1 "$PG_DATA/postmaster.pid" 2>/dev/null || true)
	[ -n "$pid" ] || fail_server postgres "PostgreSQL started but wrote no postmaster.pid"
	echo "$pid" >"$(pid_file postgres)"
	wait_answering postgres 30
	pw=$(secret pg_postgres)
	if [ "$(PGPASSWORD=$pw "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -XAtq \
		-c "SELECT 1 FROM pg_database WHERE datname = 'driftlock'" 2>&1)" != 1 ]; then
		PGPASSWORD=$pw "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Xq \
			-v ON_ERROR_STOP=1 -c "CREATE DATABASE driftlock" >"$LOGS/createdb.log" 2>&1 ||
			EXTRA_LOG=$LOGS/createdb.log fail_server postgres "cannot create database driftlock"
	fi
}

# ---------------------------------------------------------------- Redis

start_redis() {
	local conf=$REDIS_DIR/redis.conf deadline pid=''
	already_running redis && return 0
	require_port_free redis "$REDIS_PORT"
	mkdir -p "$REDIS_DIR/data"
	rm -f "$REDIS_DIR/redis.pid"
	(umask 077 && cat >"$conf" <<EOF
# Written by infra/stack.sh for run dir $RUN (holds the password: mode 600).
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
requirepass $(secret redis)
daemonize yes
pidfile "$REDIS_DIR/redis.pid"
logfile "$LOGS/redis.log"
dir "$REDIS_DIR/data"
appendonly yes
appendfsync everysec
save 3600 1 300 100 60 10000
EOF
	)
	dl_info "redis: starting on 127.0.0.1:$REDIS_PORT"
	# With daemonize the started process forks and exits; the daemon writes the pidfile.
	redis-server "$conf" >"$LOGS/redis.out" 2>&1 9>&- ||
		EXTRA_LOG=$LOGS/redis.out fail_server redis "redis-server did not start"
	deadline=$((SECONDS + 10))
	while [ -z "$pid" ]; do
		pid=$(cat "$REDIS_DIR/redis.pid" 2>/dev/null || true)
		[ -n "$pid" ] && break
		[ "$SECONDS" -lt "$deadline" ] || fail_server redis "redis-server wrote no pidfile within 10 s"
		sleep 0.1
	done
	echo "$pid" >"$(pid_file redis)"
	wait_answering redis 15
}

# ---------------------------------------------------------------- Kafka

kafka_java() {
	# Short-lived JVMs: the C1 compiler alone and the serial GC start faster.
	"$JAVA" -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xmx256m \
		-Dlog4j2.configurationFile="file:$REPO/infra/kafka/tools-log4j2.properties" \
		-cp "$KAFKA_LIBS/*" "$@"
}

# spawn_kafka: launch the broker without waiting for it (it is the slowest to come up, so
# the other servers start meanwhile); wait_answering kafka comes later.
spawn_kafka() {
	local cluster_id pid props=$KAFKA_DIR/server.properties
	KAFKA_SPAWNED=0
	already_running kafka && return 0
	dl_kafka_jars_ok || dl_die "Kafka $DL_KAFKA_VERSION jars not found in $KAFKA_LIBS: run infra/install-deps.sh"
	dl_have "$JAVA" || dl_die "java not found: run infra/install-deps.sh"
	require_port_free kafka "$KAFKA_PORT"
	require_port_free kafka-controller "$KAFKA_CONTROLLER_PORT"
	mkdir -p "$KAFKA_DIR/data"
	# How long a new consumer group waits for more members before its first assignment: 0 so
	# tests start at once; benchmarks of several workers use Kafka's own default, 3000.
	local delay=${DRIFTLOCK_KAFKA_GROUP_INITIAL_DELAY_MS:-0}
	[[ $delay =~ ^[0-9]{1,6}$ ]] || dl_die "DRIFTLOCK_KAFKA_GROUP_INITIAL_DELAY_MS must be 0-999999 (ms), not '$delay'"
	sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
		-e "s|@DATA_DIR@|$KAFKA_DIR/data|g" -e "s|@GROUP_DELAY_MS@|$delay|g" \
		"$REPO/infra/kafka/server.properties.in" >"$props"
	if [ ! -s "$KAFKA_DIR/data/meta.properties" ]; then
		if [ ! -s "$KAFKA_DIR/cluster.id" ]; then
			# Like Kafka's own Uuid.randomUuid(): an id that starts with '-' would be read as an
			# option by the storage tool, so draw again.
			python3 -c 'import base64, uuid
while True:
    u = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not u.startswith("-"):
        print(u)
        break' >"$KAFKA_DIR/cluster.id"
		fi
		cluster_id=$(cat "$KAFKA_DIR/cluster.id")
		dl_info "kafka: formatting storage (cluster id $cluster_id)"
		kafka_java kafka.tools.StorageTool format --cluster-id="$cluster_id" -c "$props" --ignore-formatted \
			>"$LOGS/kafka-format.log" 2>&1 ||
			EXTRA_LOG=$LOGS/kafka-format.log fail_server kafka "kafka storage format failed"
	fi
	dl_info "kafka: starting on 127.0.0.1:$KAFKA_PORT (controller 127.0.0.1:$KAFKA_CONTROLLER_PORT)"
	# The subshell execs setsid, which (not being a group leader) execs java: $! is the
	# broker's pid, in a session of its own so a terminal's signals do not reach it.
	(
		cd "$KAFKA_DIR"
		exec setsid "$JAVA" -Xms512m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
			-XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true \
			-Dlog4j2.configurationFile="file:$REPO/infra/kafka/log4j2.properties" \
			-Ddriftlock.log.dir="$LOGS" -Dkafka.logs.dir="$LOGS" \
			-cp "$KAFKA_LIBS/*" kafka.Kafka "$props"
	) </dev/null >>"$LOGS/kafka.out" 2>&1 9>&- &
	pid=$!
	echo "$pid" >"$(pid_file kafka)"
	KAFKA_SPAWNED=1
}

# topics_listed: "name partitions" for every topic the broker reports.
topics_listed() {
	timeout 15 kcat -L -b "127.0.0.1:$KAFKA_PORT" -m 10 2>/dev/null |
		sed -n 's/^ *topic "\([^"]*\)" with \([0-9]*\) partitions:.*/\1 \2/p'
}

# create_topics: every topic of infra/kafka/topics.conf that the broker does not list yet,
# with Kafka's own TopicCommand (one JVM per missing topic, run side by side).
create_topics() {
	local -A have=()
	local -a jobs=() names=()
	local name parts retention rest cfg t n i failed=0 deadline
	while read -r t n; do have[$t]=$n; done < <(topics_listed)
	while read -r name parts retention rest; do
		case "$name" in '' | '#'*) continue ;; esac
		if [ -n "${have[$name]:-}" ]; then
			[ "${have[$name]}" = "$parts" ] ||
				dl_info "warning: topic $name has ${have[$name]} partitions, topics.conf says $parts (left as is)"
			continue
		fi
		local -a args=(--bootstrap-server "127.0.0.1:$KAFKA_PORT" --create --if-not-exists
			--topic "$name" --partitions "$parts" --replication-factor 1
			--config "retention.ms=$retention")
		for cfg in $rest; do args+=(--config "$cfg"); done
		kafka_java org.apache.kafka.tools.TopicCommand "${args[@]}" >"$LOGS/topic-$name.log" 2>&1 &
		jobs+=($!)
		names+=("$name")
	done <"$REPO/infra/kafka/topics.conf"
	for i in "${!jobs[@]}"; do
		if ! wait "${jobs[$i]}"; then
			failed=1
			printf '%s: error: creating topic %s failed:\n' "$DL_PROG" "${names[$i]}" >&2
			tail -n 20 "$LOGS/topic-${names[$i]}.log" >&2
		else
			dl_info "kafka: created topic ${names[$i]}"
			rm -f "$LOGS/topic-${names[$i]}.log"
		fi
	done
	[ "$failed" -eq 0 ] || fail_server kafka "topic creation failed"
	[ "${#names[@]}" -gt 0 ] || return 0
	# Created means committed by the controller; wait until the broker's metadata shows them.
	deadline=$((SECONDS + 15))
	while :; do
		have=()
		while read -r t n; do have[$t]=$n; done < <(topics_listed)
		n=0
		for name in "${names[@]}"; do [ -n "${have[$name]:-}" ] || n=1; done
		[ "$n" -eq 1 ] || break
		[ "$SECONDS" -lt "$deadline" ] || fail_server kafka "created topics do not show in the broker's metadata"
		sleep 0.25
	done
}

# ---------------------------------------------------------------- env file

write_env() {
	local r lr pw pg_pw tmp=$ENV_FILE.tmp
	pg_pw=$(secret pg_postgres)
	(
		umask 077
		{
			echo "# DriftLock local stack ($RUN), written by infra/stack.sh start. Source it."
			printf 'export DRIFTLOCK_RUN_DIR=%q\n' "$RUN"
			echo "export DRIFTLOCK_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"
			echo "export DRIFTLOCK_REDIS_URL=redis://:$(secret redis)@127.0.0.1:$REDIS_PORT/0"
			echo "export DRIFTLOCK_PG_HOST=127.0.0.1"
			echo "export DRIFTLOCK_PG_PORT=$PG_PORT"
			echo "export DRIFTLOCK_PG_DATABASE=driftlock"
			echo "export DRIFTLOCK_PG_DSN_ADMIN=postgresql://postgres:$pg_pw@127.0.0.1:$PG_PORT/driftlock"
			# API keys are stored as HMAC-SHA-256 under this secret (ingest, driftlock-admin).
			echo "export DRIFTLOCK_API_KEY_SECRET=$(secret api_key_secret 32)"
			for r in "${ROLES[@]}"; do
				lr=$(printf '%s' "$r" | tr '[:upper:]' '[:lower:]')
				pw=$(secret "pg_driftlock_$lr")
				echo "export DRIFTLOCK_PG_PASSWORD_$r=$pw"
				echo "export DRIFTLOCK_PG_DSN_$r=postgresql://driftlock_$lr:$pw@127.0.0.1:$PG_PORT/driftlock"
			done
		} >"$tmp"
	)
	mv "$tmp" "$ENV_FILE"
}

# ---------------------------------------------------------------- commands

cmd_start() {
	local t0=$SECONDS started
	mkdir -p "$LOGS" "$PIDS"
	(umask 077 && mkdir -p "$SECRETS")
	chmod 700 "$SECRETS"
	exec 9>"$RUN/.lock"
	flock -w 300 9 || dl_die "another infra/stack.sh holds $RUN/.lock"
	dl_have python3 || dl_die "python3 not found: run infra/install-deps.sh"
	dl_have kcat || dl_die "kcat not found: run infra/install-deps.sh"
	dl_have redis-server || dl_die "redis-server not found: run infra/install-deps.sh"
	[ -x "$PG_BIN/postgres" ] || dl_die "PostgreSQL 15 server binaries not found in $PG_BIN: run infra/install-deps.sh"
	load_ports
	PG_USER=$(pg_os_user)
	secret pg_postgres >/dev/null
	secret redis >/dev/null

	spawn_kafka
	start_postgres
	start_redis
	[ "$KAFKA_SPAWNED" -eq 0 ] || wait_answering kafka 90
	create_topics
	write_env
	started=$((SECONDS - t0))
	cmd_status_lines || dl_die "a server went down during start (see the table above)"
	dl_info "ready in ${started}s; env file: $ENV_FILE"
}

# cmd_status_lines: prints the table; returns the number of servers down.
cmd_status_lines() {
	local name pid down=0 state
	for name in "${SERVERS[@]}"; do
		pid=$(recorded_pid "$name")
		if pid_is_ours "$pid"; then
			if answering "$name"; then
				state=up
			else
				state="not-answering"
				down=$((down + 1))
			fi
		else
			state=down
			pid=-
			down=$((down + 1))
		fi
		printf '%-9s %-14s pid %-8s 127.0.0.1:%-6s log %s\n' "$name" "$state" "$pid" \
			"$(port_of "$name")" "$(log_file "$name")"
	done
	return "$down"
}

cmd_status() {
	if [ ! -s "$PORTS_FILE" ]; then
		for name in "${SERVERS[@]}"; do printf '%-9s %-14s (never started in %s)\n' "$name" down "$RUN"; done
		return 1
	fi
	load_ports
	cmd_status_lines || return 1
}

# stop_one NAME: signal the recorded pid if it is still ours, wait, then KILL.
stop_one() {
	local name=$1 pid sig=TERM deadline
	pid=$(recorded_pid "$name")
	if [ -z "$pid" ]; then
		dl_info "$name: not running"
		return 0
	fi
	if ! pid_is_ours "$pid"; then
		dl_info "$name: not running (stale pid $pid)"
		rm -f "$(pid_file "$name")"
		return 0
	fi
	# SIGTERM is PostgreSQL's "smart" shutdown, which waits for every client to leave;
	# SIGINT is its "fast" shutdown (roll back, disconnect, checkpoint).
	[ "$name" != postgres ] || sig=INT
	kill -s "$sig" "$pid" 2>/dev/null || true
	deadline=$((SECONDS + STOP_TIMEOUT))
	while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
		sleep 0.2
	done
	if kill -0 "$pid" 2>/dev/null; then
		dl_info "$name: pid $pid still alive after ${STOP_TIMEOUT}s, sending KILL"
		kill -s KILL "$pid" 2>/dev/null || true
		while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
	fi
	rm -f "$(pid_file "$name")"
	dl_info "$name: stopped (pid $pid)"
}

cmd_stop() {
	local name
	[ -d "$PIDS" ] || { dl_info "nothing to stop in $RUN"; return 0; }
	exec 9>"$RUN/.lock"
	flock -w 300 9 || dl_die "another infra/stack.sh holds $RUN/.lock"
	# Clients first: Kafka, then Redis, then PostgreSQL; the three in parallel would also do,
	# but this order keeps the logs readable.
	for name in kafka redis postgres; do
		[ -z "$ONLY" ] || [ "$ONLY" = "$name" ] || continue
		stop_one "$name"
	done
}

cmd_env() {
	[ -s "$ENV_FILE" ] || dl_die "no env file in $RUN: run infra/stack.sh start first"
	printf '%s\n' "$ENV_FILE"
}

ONLY=''

main() {
	local cmd='' run_dir=${DRIFTLOCK_RUN_DIR:-}
	while [ $# -gt 0 ]; do
		case "$1" in
		--run-dir)
			[ $# -ge 2 ] || dl_die "--run-dir needs a directory"
			run_dir=$2
			shift 2
			;;
		--run-dir=*)
			run_dir=${1#--run-dir=}
			shift
			;;
		--only)
			[ $# -ge 2 ] || dl_die "--only needs postgres, redis or kafka"
			case "$2" in postgres | redis | kafka) ONLY=$2 ;; *) dl_die "--only: unknown server $2" ;; esac
			shift 2
			;;
		-h | --help | help)
			usage
			return 0
			;;
		start | status | stop | env)
			[ -z "$cmd" ] || dl_die "one command at a time (got $cmd and $1)"
			cmd=$1
			shift
			;;
		*)
			usage >&2
			dl_die "unknown argument: $1"
			;;
		esac
	done
	[ -n "$cmd" ] || { usage >&2; exit 2; }
	set_paths "${run_dir:-$REPO/run/local}" "$cmd"
	"cmd_$cmd"
}

main "$@"
