#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# infra/migrate.sh: applies infra/sql/NNNN_name.sql in order, each once and in its own transaction,
# then (local stack only) gives the service roles LOGIN with the passwords from the environment.
#
# Usage: infra/migrate.sh [--dsn DSN] [--sql-dir DIR] [--no-role-passwords]
#   DSN defaults to $DRIFTLOCK_PG_DSN_ADMIN (a superuser, or a role with BYPASSRLS and
#   CREATEROLE that owns the schema). Exit status: 0 done (or nothing to do), 1 a migration
#   or psql failed (that migration was rolled back), 2 refused (bad usage, bad file name,
#   an applied migration's file changed).
#
# Each applied file is recorded in schema_migrations (version, name, sha256 checksum,
# applied_at). Every migration transaction first takes one advisory lock and re-checks that
# its version is still pending, so concurrent runners apply each file exactly once.
# Secrets never reach process arguments: the DSN's password is handed to psql through
# PGPASSWORD, and role passwords become SCRAM verifiers fed to psql through its environment.
set -euo pipefail

wrapper=  # the per-migration psql script (no secrets), removed on exit

readonly ROLES=(INGEST DETECTOR METERING BILLING NOTIFIER DASHBOARD)
readonly LOCK_SQL="SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('driftlock.migrate'))"

die() { echo "migrate: error: $*" >&2; exit "${DL_EXIT:-1}"; }
refuse() { DL_EXIT=2 die "$@"; }
say() { echo "migrate: $*"; }

usage() {
    sed -n '3,10p' "$0" | sed 's/^# \{0,1\}//'
}

# Percent-decodes a URI component (the password part of a postgresql:// DSN).
pct_decode() {
    local s=${1//\\/\\\\}
    printf '%b' "${s//%/\\x}"
}

# Splits the password out of the DSN: sets DSN_NOPW (the DSN without it) and DSN_PW.
split_dsn() {
    local dsn=$1
    DSN_NOPW=$dsn
    DSN_PW=
    if [[ $dsn =~ ^(postgres(ql)?://)([^@/]*)@(.*)$ ]]; then
        local scheme=${BASH_REMATCH[1]} userinfo=${BASH_REMATCH[3]} rest=${BASH_REMATCH[4]}
        if [[ $userinfo == *:* ]]; then
            DSN_PW=$(pct_decode "${userinfo#*:}")
            DSN_NOPW="${scheme}${userinfo%%:*}@${rest}"
        fi
    elif [[ $dsn =~ (^|[[:space:]])password=([^[:space:]\']*)([[:space:]]|$) ]]; then
        DSN_PW=${BASH_REMATCH[2]}
        DSN_NOPW=${dsn/password=${DSN_PW}/}
    fi
}

# Prints the SCRAM-SHA-256 verifier for the password in environment variable $1, so the
# server stores (and could only ever log) a salted hash, never the password itself.
scram_verifier() {
    python3 - "$1" <<'PY'
import base64, hashlib, hmac, os, secrets, sys
pw = os.environ[sys.argv[1]]
if not pw or not all(0x21 <= ord(c) <= 0x7e for c in pw):
    sys.exit("password must be printable ASCII without spaces")
salt = secrets.token_bytes(16)
it = 4096
salted = hashlib.pbkdf2_hmac("sha256", pw.encode(), salt, it)
client_key = hmac.new(salted, b"Client Key", "sha256").digest()
server_key = hmac.new(salted, b"Server Key", "sha256").digest()
b64 = lambda b: base64.b64encode(b).decode()
print(f"SCRAM-SHA-256${it}:{b64(salt)}${b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}")
PY
}

# Quotes $1 for a psql meta-command argument in single quotes.
psql_quote() {
    local s=${1//\\/\\\\}
    printf "'%s'" "${s//\'/\'\'}"
}

run_psql() {
    PGPASSWORD=${DSN_PW:-${PGPASSWORD:-}} PGAPPNAME=driftlock-migrate \
        psql -X -q -v ON_ERROR_STOP=1 -d "$DSN_NOPW" "$@"
}

main() {
    local dsn=${DRIFTLOCK_PG_DSN_ADMIN:-} sql_dir role_passwords=1
    sql_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/sql"
    while (($#)); do
        case $1 in
            --dsn) (($# >= 2)) || refuse "--dsn needs a value"; dsn=$2; shift 2 ;;
            --dsn=*) dsn=${1#--dsn=}; shift ;;
            --sql-dir) (($# >= 2)) || refuse "--sql-dir needs a value"; sql_dir=$2; shift 2 ;;
            --sql-dir=*) sql_dir=${1#--sql-dir=}; shift ;;
            --no-role-passwords) role_passwords=0; shift ;;
            -h|--help) usage; exit 0 ;;
            *) refuse "unknown argument '$1' (see --help)" ;;
        esac
    done
    [[ -n $dsn ]] || refuse "no database: set DRIFTLOCK_PG_DSN_ADMIN or pass --dsn"
    [[ -d $sql_dir ]] || refuse "no migration directory $sql_dir"
    sql_dir=$(cd "$sql_dir" && pwd)
    command -v psql >/dev/null || die "psql not found"
    split_dsn "$dsn"

    # The files, in order; names are the contract, so a stray name is an error, not a skip.
    local -a files=() versions=()
    local f base
    while IFS= read -r f; do
        base=${f##*/}
        [[ $base =~ ^([0-9]{4})_[a-z0-9_]+\.sql$ ]] ||
            refuse "$base: migration files are named NNNN_name.sql (lower case)"
        local v=${BASH_REMATCH[1]}
        [[ " ${versions[*]} " != *" $v "* ]] || refuse "two migrations have version $v"
        files+=("$f")
        versions+=("$v")
    done < <(find "$sql_dir" -maxdepth 1 -type f -name '*.sql' | LC_ALL=C sort)
    ((${#files[@]})) || refuse "no migrations in $sql_dir"

    run_psql --single-transaction -o /dev/null -c "SET LOCAL client_min_messages = warning" \
        -c "$LOCK_SQL" -c "
        CREATE TABLE IF NOT EXISTS public.schema_migrations (
            version     text PRIMARY KEY CHECK (version ~ '^[0-9]{4}\$'),
            name        text NOT NULL,
            checksum    text NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}\$'),
            applied_at  timestamptz NOT NULL DEFAULT now()
        )" || die "cannot prepare schema_migrations (is the database reachable?)"

    local -A applied_name=() applied_sum=()
    local av an ac
    while IFS='|' read -r av an ac; do
        [[ -n $av ]] || continue
        applied_name[$av]=$an
        applied_sum[$av]=$ac
    done < <(run_psql -At -F '|' -c "SELECT version, name, checksum FROM public.schema_migrations ORDER BY version") ||
        die "cannot read schema_migrations"

    # Refuse before applying anything if history was rewritten.
    local -a pending=() sums=()
    local i sum changed=0
    for i in "${!files[@]}"; do
        f=${files[$i]}
        base=${f##*/}
        sum=$(sha256sum "$f" | cut -d' ' -f1)
        sums[i]=$sum
        if [[ -n ${applied_sum[${versions[$i]}]:-} ]]; then
            if [[ ${applied_sum[${versions[$i]}]} != "$sum" || ${applied_name[${versions[$i]}]} != "$base" ]]; then
                echo "migrate: error: $base changed after it was applied (applied as" \
                     "${applied_name[${versions[$i]}]} with sha256 ${applied_sum[${versions[$i]}]}," \
                     "file now has $sum); restore it and add a new migration instead" >&2
                changed=1
            fi
        else
            pending+=("$i")
        fi
    done
    ((changed == 0)) || DL_EXIT=2 die "refusing to migrate: applied migrations were modified"
    for av in "${!applied_name[@]}"; do
        [[ " ${versions[*]} " == *" $av "* ]] ||
            echo "migrate: warning: version $av (${applied_name[$av]}) is applied but has no file in $sql_dir" >&2
    done

    local count=0 out
    wrapper=$(mktemp "${TMPDIR:-/tmp}/driftlock-migrate.XXXXXX")
    trap 'rm -f "$wrapper"' EXIT
    for i in "${pending[@]}"; do
        f=${files[$i]}
        base=${f##*/}
        printf '%s\n' \
            "$LOCK_SQL;" \
            "SELECT count(*) = 0 AS dl_pending FROM public.schema_migrations WHERE version = :'dl_version' \\gset" \
            '\if :dl_pending' \
            "\\i $(psql_quote "$f")" \
            "INSERT INTO public.schema_migrations (version, name, checksum) VALUES (:'dl_version', :'dl_name', :'dl_checksum');" \
            '\echo DL_APPLIED' '\else' '\echo DL_SKIPPED' '\endif' >"$wrapper"
        out=$(run_psql --single-transaction -o /dev/null -v dl_version="${versions[$i]}" \
                  -v dl_name="$base" -v dl_checksum="${sums[$i]}" -f "$wrapper") ||
            die "$base failed and was rolled back; nothing after it was applied"
        case $out in
            *DL_APPLIED*) say "applied $base"; count=$((count + 1)) ;;
            *DL_SKIPPED*) say "skipped $base (applied meanwhile by a concurrent runner)" ;;
            *) die "$base: unexpected psql output: $out" ;;
        esac
    done

    local head
    head=$(run_psql -At -c "SELECT coalesce(max(version), 'none') || ' (' || count(*) || ' migrations)' FROM public.schema_migrations") ||
        die "cannot read schema_migrations"
    if ((count == 0)); then
        say "nothing to apply; schema at version $head"
    else
        say "applied $count migration(s); schema at version $head"
    fi

    # Local stack: the service roles log in with the passwords of stack.env. In production
    # the operator grants LOGIN and sets passwords instead, and these variables are unset.
    ((role_passwords)) || return 0
    local r var verifier script=() set_roles=()
    for r in "${ROLES[@]}"; do
        var="DRIFTLOCK_PG_PASSWORD_$r"
        [[ -n ${!var:-} ]] || continue
        command -v python3 >/dev/null || die "python3 is needed to set role passwords"
        verifier=$(scram_verifier "$var") || die "cannot derive a verifier from $var"
        export "DL_MIGRATE_VERIFIER_$r=$verifier"
        script+=("\\getenv dl_verifier DL_MIGRATE_VERIFIER_$r"
                 "ALTER ROLE driftlock_${r,,} LOGIN PASSWORD :'dl_verifier';")
        set_roles+=("driftlock_${r,,}")
    done
    ((${#set_roles[@]})) || return 0
    # Keep even the verifiers out of the server log where we are allowed to (superuser).
    printf '%s\n' \
        'SELECT rolsuper AS dl_super FROM pg_catalog.pg_roles WHERE rolname = current_user \gset' \
        '\if :dl_super' 'SET log_statement = none;' 'SET log_min_duration_statement = -1;' \
        'SET log_min_error_statement = panic;' '\endif' 'BEGIN;' "${script[@]}" 'COMMIT;' |
        run_psql -o /dev/null -f - || die "cannot set LOGIN passwords for ${set_roles[*]}"
    say "LOGIN password set for ${set_roles[*]}"
}

main "$@"
