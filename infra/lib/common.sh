# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# Shell helpers shared by the infra/ scripts: messages, paths, the Kafka jar cache.
# Sourced, never executed; every name carries the dl_ prefix.

DL_KAFKA_VERSION=4.1.1

# dl_repo_root: absolute path of the repository (infra/lib/../..).
dl_repo_root() {
	(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
}

dl_info() {
	printf '%s: %s\n' "${DL_PROG:-driftlock}" "$*" >&2
}

# dl_die MSG...: print the message on stderr and exit 1.
dl_die() {
	printf '%s: error: %s\n' "${DL_PROG:-driftlock}" "$*" >&2
	exit 1
}

dl_have() {
	command -v "$1" >/dev/null 2>&1
}

# dl_cache_dir: where downloaded artefacts live; DRIFTLOCK_CACHE_DIR overrides
# the default ~/.cache/driftlock.
dl_cache_dir() {
	printf '%s\n' "${DRIFTLOCK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/driftlock}"
}

# dl_kafka_home: the directory holding libs/ with the pinned Kafka jars.
dl_kafka_home() {
	printf '%s/kafka-%s\n' "$(dl_cache_dir)" "$DL_KAFKA_VERSION"
}

# dl_kafka_stamp: file that exists only after a complete jar download; it holds the
# sha256 of the pom.xml the jars came from, so a changed pom is fetched again.
dl_kafka_stamp() {
	printf '%s/.complete\n' "$(dl_kafka_home)"
}

dl_pom_sum() {
	sha256sum "$(dl_repo_root)/infra/kafka/pom.xml" | cut -d' ' -f1
}

# dl_kafka_jars_ok: true when the jar cache is complete for the current pom.
dl_kafka_jars_ok() {
	local stamp
	stamp=$(dl_kafka_stamp)
	[ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(dl_pom_sum)" ]
}
