#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs what building and running DriftLock locally needs (Debian 12 packages and the
# pinned Kafka broker jars), and nothing that is already there: a second run is a no-op.
#
# Usage: infra/install-deps.sh
#   DRIFTLOCK_CACHE_DIR  cache root (default ~/.cache/driftlock); jars go to
#                        $DRIFTLOCK_CACHE_DIR/kafka-4.1.1/libs
set -euo pipefail

DL_PROG=install-deps
# shellcheck source=infra/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

# Debian packages, always wanted. Java and Maven are added below only when missing,
# so a developer's own JDK or Maven is left alone.
PACKAGES=(
	meson ninja-build pkg-config gcc clang libclang-rt-14-dev
	librdkafka-dev libevent-dev libpq-dev libcjson-dev libzstd-dev libcurl4-openssl-dev
	libhiredis-dev libssl-dev zlib1g-dev check
	postgresql-15 redis-server redis-tools kcat
	python3 python3-yaml python3-jsonschema curl openssl util-linux
)

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	SUDO=(sudo)
fi

missing_packages() {
	local -A installed=()
	local pkg status
	# One dpkg-query call for all names keeps the "nothing to do" run fast; it prints
	# nothing for names it has never heard of, so those count as missing too.
	while read -r pkg status; do
		[ "$status" = "installed" ] && installed[$pkg]=1
	done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "$@" 2>/dev/null || true)
	for pkg in "$@"; do
		[ -n "${installed[$pkg]:-}" ] || printf '%s\n' "$pkg"
	done
}

java_major() {
	java -version 2>&1 | sed -n 's/.*version "\([0-9]*\)[."].*/\1/p' | head -n1
}

# Stop and disable the distribution's service for a package we just installed: the local
# stack runs its own PostgreSQL and Redis in the run dir (infra/stack.sh).
quiet_service() {
	local svc=$1
	if [ -d /run/systemd/system ]; then
		"${SUDO[@]}" systemctl disable --now "$svc" >/dev/null 2>&1 || true
	else
		"${SUDO[@]}" service "$svc" stop >/dev/null 2>&1 || true
		"${SUDO[@]}" update-rc.d "$svc" disable >/dev/null 2>&1 || true
	fi
}

install_packages() {
	local -a want=("${PACKAGES[@]}")
	local -a missing=()
	local pkg

	dl_have java || want+=(openjdk-17-jre-headless)
	dl_have mvn || want+=(maven)
	mapfile -t missing < <(missing_packages "${want[@]}" | sort -u)
	if [ "${#missing[@]}" -eq 0 ]; then
		return 0
	fi
	if [ "${#SUDO[@]}" -gt 0 ] && ! dl_have sudo; then
		dl_die "not root and no sudo; install these packages first: ${missing[*]}"
	fi
	dl_info "installing: ${missing[*]}"
	"${SUDO[@]}" apt-get update -q
	DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends \
		"${missing[@]}"
	for pkg in "${missing[@]}"; do
		case "$pkg" in
		postgresql-15) quiet_service postgresql ;;
		redis-server) quiet_service redis-server ;;
		esac
	done
}

check_java() {
	local major
	major=$(java_major)
	if [ -z "$major" ] || [ "$major" -lt 17 ]; then
		dl_die "Kafka $DL_KAFKA_VERSION needs Java 17 or newer; 'java' is version '${major:-unknown}'" \
			"(install openjdk-17-jre-headless and select it with update-alternatives)"
	fi
}

fetch_kafka_jars() {
	local home tmp
	if dl_kafka_jars_ok; then
		return 0
	fi
	home=$(dl_kafka_home)
	mkdir -p "$home"
	tmp=$(mktemp -d "$home/libs.tmp.XXXXXX")
	dl_info "fetching Kafka $DL_KAFKA_VERSION jars from Maven Central into $home/libs"
	# A fresh directory that replaces libs/ only when complete: an interrupted download
	# never leaves a half classpath behind, and jars of an older pom do not linger.
	if ! mvn -B -q -Dstyle.color=never -f "$(dl_repo_root)/infra/kafka/pom.xml" \
		dependency:copy-dependencies -DoutputDirectory="$tmp" >"$home/mvn.log" 2>&1; then
		tail -n 30 "$home/mvn.log" >&2
		rm -rf "$tmp"
		dl_die "mvn dependency:copy-dependencies failed (full log: $home/mvn.log)"
	fi
	ls "$tmp"/kafka_2.13-"$DL_KAFKA_VERSION".jar "$tmp"/kafka-tools-"$DL_KAFKA_VERSION".jar \
		"$tmp"/log4j-core-*.jar >/dev/null 2>&1 ||
		{ rm -rf "$tmp"; dl_die "Maven finished but the Kafka jars are missing in $tmp"; }
	rm -rf "$home/libs"
	mv "$tmp" "$home/libs"
	dl_pom_sum >"$(dl_kafka_stamp)"
	dl_info "Kafka jars ready: $(find "$home/libs" -name '*.jar' | wc -l) jars"
}

install_packages
check_java
fetch_kafka_jars
