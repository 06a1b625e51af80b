#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Integration test of infra/stack.sh: two real stacks in temporary run dirs, checked the way
# a developer would (status, env file, topics, Kafka round trip, psql, redis-cli, restart,
# crash recovery, stop). Ends with "stack: N passed, M failed"; exits 1 on any failure.
# "cond && pass || fail" is safe in this file: pass always succeeds.
# shellcheck disable=SC2015
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK=$ROOT/infra/stack.sh
# shellcheck source=infra/lib/common.sh
. "$ROOT/infra/lib/common.sh"

PASSED=0
FAILED=0
TMP=$(mktemp -d /tmp/dl-stack-test.XXXXXX)
# PostgreSQL runs as an unprivileged user when we are root: it must reach the run dirs.
chmod 711 "$TMP"
A=$TMP/a
B=$TMP/b
OUT=$TMP/out
ALL_PIDS=()

cleanup() {
	"$STACK" stop --run-dir "$B" >/dev/null 2>&1
	"$STACK" stop --run-dir "$A" >/dev/null 2>&1
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() {
	PASSED=$((PASSED + 1))
	printf 'ok   - %s\n' "$1"
}

fail() {
	FAILED=$((FAILED + 1))
	printf 'FAIL - %s\n' "$1"
	[ -z "${2:-}" ] || printf '%s\n' "$2" | tail -n 40 | sed 's/^/       /'
}

# check NAME CMD...: CMD must succeed; its output is shown when it does not.
check() {
	local name=$1
	shift
	if "$@" >"$OUT" 2>&1; then
		pass "$name"
	else
		fail "$name" "$(cat "$OUT")"
	fi
}

# expect NAME WANT GOT
expect() {
	if [ "$2" = "$3" ]; then
		pass "$1"
	else
		fail "$1" "want: $2"$'\n'"got:  $3"
	fi
}

pids_of() {
	local s
	for s in postgres redis kafka; do
		printf '%s:%s ' "$s" "$(cat "$1/pids/$s.pid" 2>/dev/null)"
	done
}

remember_pids() {
	local s p
	for s in postgres redis kafka; do
		p=$(cat "$1/pids/$s.pid" 2>/dev/null) && [ -n "$p" ] && ALL_PIDS+=("$p")
	done
	return 0
}

# stack_env DIR: load that run dir's stack.env into this shell (clearing the previous one).
stack_env() {
	unset "${!DRIFTLOCK_@}"
	# shellcheck disable=SC1090,SC1091
	. "$1/stack.env"
}

# procs_in DIR: processes whose working directory is inside DIR (servers of that stack).
procs_in() {
	local d p cwd
	for d in /proc/[0-9]*; do
		cwd=$(readlink "$d/cwd" 2>/dev/null) || continue
		case "$cwd" in "$1" | "$1"/*) p=${d#/proc/}; printf '%s ' "$p" ;; esac
	done
}

topics_of() {
	kcat -L -b "$1" -m 10 2>/dev/null |
		sed -n 's/^ *topic "\(driftlock\.[^"]*\)" with \([0-9]*\) partitions:.*/\1 \2/p' | sort
}

consume_one() {
	# $1 brokers, $2 format: the first message of the events topic, all partitions.
	kcat -C -q -b "$1" -t driftlock.events.v1 -o beginning -e -c 1 -f "$2"
}

# rcli URL ARGS...: redis-cli against a stack.env redis URL (redis://:PASSWORD@HOST:PORT/DB).
# The password goes through REDISCLI_AUTH: redis-cli 7.0 reads the empty user of "-u
# redis://:pw@..." as the user "" and fails with WRONGPASS.
rcli() {
	local url=$1 pw hostport
	shift
	pw=${url#redis://:}
	pw=${pw%%@*}
	hostport=${url#*@}
	hostport=${hostport%/*}
	REDISCLI_AUTH=$pw redis-cli -h "${hostport%:*}" -p "${hostport##*:}" "$@"
}

listen_addrs() {
	# Local addresses of the listeners on the given ports, e.g. "127.0.0.1:5432".
	local p
	for p in "$@"; do
		ss -Hltn "sport = :$p" | awk '{print $4}'
	done | sort -u | tr '\n' ' '
}

# ------------------------------------------------------------------ stack A: first start
t0=$SECONDS
if "$STACK" start --run-dir "$A" >"$OUT" 2>&1; then
	pass "start A (cold start in $((SECONDS - t0)) s)"
else
	fail "start A" "$(cat "$OUT")"
	printf 'stack: %d passed, %d failed\n' "$PASSED" "$((FAILED + 1))"
	exit 1
fi
[ $((SECONDS - t0)) -lt 60 ] && pass "cold start under 60 s" || fail "cold start took $((SECONDS - t0)) s"
remember_pids "$A"

"$STACK" status --run-dir "$A" >"$OUT" 2>&1
rc=$?
expect "status A exits 0" 0 "$rc"
expect "status A shows 3 servers up" 3 "$(grep -cE '^(postgres|redis|kafka) +up ' "$OUT")"

expect "env prints the env file" "$A/stack.env" "$("$STACK" env --run-dir "$A" 2>&1)"
expect "env file mode 600" 600 "$(stat -c %a "$A/stack.env")"
expect "secrets dir mode 700" 700 "$(stat -c %a "$A/secrets")"
stack_env "$A"
missing=''
for v in DRIFTLOCK_RUN_DIR DRIFTLOCK_KAFKA_BROKERS DRIFTLOCK_REDIS_URL DRIFTLOCK_PG_HOST \
	DRIFTLOCK_PG_PORT DRIFTLOCK_PG_DATABASE DRIFTLOCK_PG_DSN_ADMIN; do
	[ -n "${!v:-}" ] || missing+=" $v"
done
for r in INGEST DETECTOR METERING BILLING NOTIFIER DASHBOARD; do
	lr=$(tr '[:upper:]' '[:lower:]' <<<"$r")
	pw_var=DRIFTLOCK_PG_PASSWORD_$r
	dsn_var=DRIFTLOCK_PG_DSN_$r
	[[ "${!pw_var:-}" =~ ^[0-9a-f]{32}$ ]] || missing+=" $pw_var"
	[ "${!dsn_var:-}" = "postgresql://driftlock_$lr:${!pw_var:-}@127.0.0.1:$DRIFTLOCK_PG_PORT/driftlock" ] ||
		missing+=" $dsn_var"
done
[[ "${DRIFTLOCK_API_KEY_SECRET:-}" =~ ^[0-9a-f]{64}$ ]] || missing+=" DRIFTLOCK_API_KEY_SECRET"
expect "env file has every contract variable" "" "$missing"
[[ "$DRIFTLOCK_KAFKA_BROKERS" =~ ^127\.0\.0\.1:[0-9]+$ ]] && pass "brokers on loopback" ||
	fail "brokers: $DRIFTLOCK_KAFKA_BROKERS"
[[ "$DRIFTLOCK_REDIS_URL" =~ ^redis://:[0-9a-f]{32}@127\.0\.0\.1:[0-9]+/0$ ]] && pass "redis url form" ||
	fail "redis url form: $DRIFTLOCK_REDIS_URL"
[[ "$DRIFTLOCK_PG_DSN_ADMIN" =~ ^postgresql://postgres:[0-9a-f]{32}@127\.0\.0\.1:$DRIFTLOCK_PG_PORT/driftlock$ ]] &&
	pass "admin dsn form" || fail "admin dsn form: $DRIFTLOCK_PG_DSN_ADMIN"
expect "env run dir" "$A" "$DRIFTLOCK_RUN_DIR"
A_ENV=$(cat "$A/stack.env")
A_BROKERS=$DRIFTLOCK_KAFKA_BROKERS
A_REDIS=$DRIFTLOCK_REDIS_URL
A_PG=$DRIFTLOCK_PG_DSN_ADMIN
redis_port() {
	local p=${1##*:}
	printf '%s\n' "${p%/0}"
}
A_PORTS="${A_BROKERS##*:} $(redis_port "$A_REDIS") $DRIFTLOCK_PG_PORT"
bad=''
for p in $A_PORTS; do
	got=$(listen_addrs "$p")
	[ "$got" = "127.0.0.1:$p " ] || bad+=" port $p listens on '$got'"
done
expect "servers listen on 127.0.0.1 only" "" "$bad"

# ------------------------------------------------------------------ topics
expect "topics and partition counts" \
	"$(printf '%s\n' 'driftlock.anomalies.v1 6' 'driftlock.dlq.v1 3' 'driftlock.events.v1 6' \
		'driftlock.notifications.v1 3' 'driftlock.usage.v1 3')" \
	"$(topics_of "$A_BROKERS")"
described=$(java -Dlog4j2.configurationFile="file:$ROOT/infra/kafka/tools-log4j2.properties" \
	-cp "$(dl_kafka_home)/libs/*" org.apache.kafka.tools.TopicCommand \
	--bootstrap-server "$A_BROKERS" --describe --topics-with-overrides 2>&1 |
	sed -n 's/^Topic: \(driftlock\.[^[:space:]]*\).*retention\.ms=\([0-9]*\).*/\1 \2/p' | sort)
expect "topic retention (TopicCommand --describe)" \
	"$(printf '%s\n' 'driftlock.anomalies.v1 2592000000' 'driftlock.dlq.v1 1209600000' \
		'driftlock.events.v1 604800000' 'driftlock.notifications.v1 604800000' \
		'driftlock.usage.v1 2592000000')" "$described"

# ------------------------------------------------------------------ Kafka round trip
KEY="0b6c3f7e-2d7a-4c11-9a55-6f2b1c0d9e88:web.access-log"
printf '{"schema":"driftlock.event.v1","payload":"caf\xc3\xa9 \xe2\x9c\x93\\n",\n\t"n":%d}\n' "$$" >"$TMP/value"
check "kcat produce to driftlock.events.v1" \
	kcat -P -b "$A_BROKERS" -t driftlock.events.v1 -k "$KEY" -X enable.idempotence=true "$TMP/value"
consume_one "$A_BROKERS" '%s' >"$TMP/value.back" 2>"$OUT"
check "consumed value equals produced, byte for byte" cmp "$TMP/value" "$TMP/value.back"
expect "consumed key" "$KEY" "$(consume_one "$A_BROKERS" '%k' 2>&1)"

# ------------------------------------------------------------------ PostgreSQL
expect "psql as admin" "postgres|driftlock|t|15" \
	"$(psql "$A_PG" -XAtc "SELECT current_user, current_database(), rolsuper, current_setting('server_version_num')::int / 10000 FROM pg_roles WHERE rolname = current_user" 2>&1)"
check "psql creates a table and a row" \
	psql "$A_PG" -Xq -v ON_ERROR_STOP=1 -c "CREATE TABLE stack_probe (v text); INSERT INTO stack_probe VALUES ('kept')"
if psql "postgresql://postgres:wrong@127.0.0.1:$DRIFTLOCK_PG_PORT/driftlock" -XAtc 'SELECT 1' >"$OUT" 2>&1; then
	fail "psql with a wrong password is refused" "$(cat "$OUT")"
else
	grep -q 'password authentication failed' "$OUT" && pass "psql with a wrong password is refused" ||
		fail "psql with a wrong password: unexpected error" "$(cat "$OUT")"
fi

# ------------------------------------------------------------------ Redis
expect "redis-cli with the password: SET" OK \
	"$(rcli "$A_REDIS" SET stack:probe kept 2>&1)"
expect "redis-cli with the password: GET" kept \
	"$(rcli "$A_REDIS" GET stack:probe 2>&1)"
redis-cli -h 127.0.0.1 -p "$(redis_port "$A_REDIS")" GET stack:probe >"$OUT" 2>&1
grep -q NOAUTH "$OUT" && pass "redis-cli without the password is refused" ||
	fail "redis-cli without the password is refused" "$(cat "$OUT")"

# ------------------------------------------------------------------ start again: no-op
before=$(pids_of "$A")
t0=$SECONDS
check "start A again" "$STACK" start --run-dir "$A"
expect "start again keeps the same pids" "$before" "$(pids_of "$A")"
[ $((SECONDS - t0)) -le 5 ] && pass "start again is quick ($((SECONDS - t0)) s)" ||
	fail "start again took $((SECONDS - t0)) s"
expect "start again keeps the env file" "$A_ENV" "$(cat "$A/stack.env")"

# ------------------------------------------------------------------ stack B side by side
check "start B next to A" "$STACK" start --run-dir "$B"
remember_pids "$B"
stack_env "$B"
B_PORTS="${DRIFTLOCK_KAFKA_BROKERS##*:} $(redis_port "$DRIFTLOCK_REDIS_URL") $DRIFTLOCK_PG_PORT"
clash=''
for p in $B_PORTS; do
	case " $A_PORTS " in *" $p "*) clash+=" $p" ;; esac
done
expect "B uses other ports than A" "" "$clash"
[ "$DRIFTLOCK_PG_DSN_ADMIN" != "$A_PG" ] && pass "B has its own passwords" || fail "B reuses A's admin DSN"
check "status A with B running" "$STACK" status --run-dir "$A"
check "status B" "$STACK" status --run-dir "$B"
expect "B's events topic does not hold A's message" "" \
	"$(consume_one "$DRIFTLOCK_KAFKA_BROKERS" '%s' 2>/dev/null)"
expect "B's redis does not hold A's key" "" \
	"$(rcli "$DRIFTLOCK_REDIS_URL" GET stack:probe 2>&1)"
b_pids=$(pids_of "$B")
check "stop B" "$STACK" stop --run-dir "$B"
alive=''
for p in $b_pids; do kill -0 "${p#*:}" 2>/dev/null && alive+=" $p"; done
expect "stop B leaves none of B's pids alive" "" "$alive"
expect "no process left in B's run dir" "" "$(procs_in "$B")"
expect "A untouched by stopping B" "$before" "$(pids_of "$A")"
check "status A after B stopped" "$STACK" status --run-dir "$A"

# ------------------------------------------------------------------ crash of one server
stack_env "$A"
a_pg_pid=$(cat "$A/pids/postgres.pid")
a_kafka_pid=$(cat "$A/pids/kafka.pid")
a_redis_pid=$(cat "$A/pids/redis.pid")
kill -KILL "$a_redis_pid"
while kill -0 "$a_redis_pid" 2>/dev/null; do sleep 0.1; done
if "$STACK" status --run-dir "$A" >"$OUT" 2>&1; then
	fail "status fails while redis is down" "$(cat "$OUT")"
else
	grep -qE '^redis +down' "$OUT" && pass "status fails and names redis as down" ||
		fail "status output with redis down" "$(cat "$OUT")"
fi
check "start restarts only what is missing" "$STACK" start --run-dir "$A"
remember_pids "$A"
expect "postgres and kafka kept their pids" "$a_pg_pid $a_kafka_pid" \
	"$(cat "$A/pids/postgres.pid") $(cat "$A/pids/kafka.pid")"
[ "$(cat "$A/pids/redis.pid")" != "$a_redis_pid" ] && pass "redis runs with a new pid" ||
	fail "redis pid unchanged after a crash"
expect "redis data survived the crash (appendonly)" kept \
	"$(rcli "$A_REDIS" GET stack:probe 2>&1)"

# ------------------------------------------------------------------ stop and restart A
a_pids=$(pids_of "$A")
check "stop A" "$STACK" stop --run-dir "$A"
alive=''
for p in $a_pids; do kill -0 "${p#*:}" 2>/dev/null && alive+=" $p"; done
expect "stop A leaves none of A's pids alive" "" "$alive"
expect "no process left in A's run dir" "" "$(procs_in "$A")"
if "$STACK" status --run-dir "$A" >"$OUT" 2>&1; then
	fail "status after stop exits non-zero" "$(cat "$OUT")"
else
	expect "status after stop shows 3 servers down" 3 "$(grep -cE '^(postgres|redis|kafka) +down ' "$OUT")"
fi
check "start A after stop" "$STACK" start --run-dir "$A"
remember_pids "$A"
expect "restart keeps ports and passwords (same env file)" "$A_ENV" "$(cat "$A/stack.env")"
expect "postgres data kept across restart" kept \
	"$(psql "$A_PG" -XAtc 'SELECT v FROM stack_probe' 2>&1)"
expect "redis data kept across restart" kept \
	"$(rcli "$A_REDIS" GET stack:probe 2>&1)"
consume_one "$A_BROKERS" '%s' >"$TMP/value.back2" 2>"$OUT"
check "kafka message kept across restart" cmp "$TMP/value" "$TMP/value.back2"

# ------------------------------------------------------------------ final stop
check "final stop A" "$STACK" stop --run-dir "$A"
alive=''
for p in "${ALL_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive+=" $p"; done
expect "no pid the stacks ever recorded is alive" "" "$alive"
expect "no process left in the test's run dirs" "" "$(procs_in "$TMP")"

printf 'stack: %d passed, %d failed\n' "$PASSED" "$FAILED"
[ "$FAILED" -eq 0 ]
