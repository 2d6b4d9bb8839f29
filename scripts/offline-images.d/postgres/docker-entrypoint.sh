#!/usr/bin/env bash
# docker-entrypoint.sh for the locally built postgres:17 image (see scripts/offline-images).
#
# Compatible with the official postgres image's entrypoint for what matters here:
#   POSTGRES_USER (default postgres), POSTGRES_DB (default: the user), POSTGRES_PASSWORD or
#   POSTGRES_PASSWORD_FILE (any *_FILE variant of the variables below works the same way),
#   POSTGRES_HOST_AUTH_METHOD, POSTGRES_INITDB_ARGS, POSTGRES_INITDB_WALDIR, PGDATA,
#   /docker-entrypoint-initdb.d (*.sh, *.sql, *.sql.gz, *.sql.xz, *.sql.zst; first init only).
# Initialisation runs a temporary server that listens on the unix socket only, so nothing
# (a health check, testcontainers' readiness probe, the app) can reach it over TCP before the
# init scripts have finished. As root, it fixes ownership of PGDATA and the socket directory,
# then re-executes itself as the postgres user (setpriv), and finally `exec`s postgres, which
# becomes PID 1 and receives the stop signal (STOPSIGNAL SIGINT = fast shutdown) directly.
set -Eeuo pipefail

readonly PG_EXPECTED_MAJOR="${PG_MAJOR:-17}"
: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

log() { printf '%s: %s\n' "${0##*/}" "$*"; }
error() { printf '%s: error: %s\n' "${0##*/}" "$*" >&2; }

# file_env VAR [DEFAULT]: VAR may be given directly or as VAR_FILE (the path of a file holding
# the value, e.g. a Docker secret). Both at once is an error.
file_env() {
	local var="$1" fileVar="${1}_FILE" def="${2:-}"
	if [[ -n "${!var:-}" && -n "${!fileVar:-}" ]]; then
		error "both $var and $fileVar are set (but they are exclusive)"
		exit 1
	fi
	local val="$def"
	if [[ -n "${!var:-}" ]]; then
		val="${!var}"
	elif [[ -n "${!fileVar:-}" ]]; then
		if [[ ! -r "${!fileVar}" ]]; then
			error "$fileVar=${!fileVar}: file does not exist or is not readable by uid $(id -u)"
			exit 1
		fi
		val="$(<"${!fileVar}")"
	fi
	export "$var"="$val"
	unset "$fileVar"
}

docker_setup_env() {
	file_env POSTGRES_PASSWORD
	file_env POSTGRES_USER postgres
	file_env POSTGRES_DB "$POSTGRES_USER"
	file_env POSTGRES_INITDB_ARGS
	: "${POSTGRES_HOST_AUTH_METHOD:=}"
	: "${POSTGRES_INITDB_WALDIR:=}"
	DATABASE_ALREADY_EXISTS=
	if [[ -s "$PGDATA/PG_VERSION" ]]; then
		DATABASE_ALREADY_EXISTS=true
	fi
}

# Runs as root (fix ownership) and again as postgres (no-op then).
docker_create_db_directories() {
	mkdir -p "$PGDATA"
	# postgres refuses a data directory with group/other access; may fail on odd mounts.
	chmod 00700 "$PGDATA" || :
	mkdir -p /var/run/postgresql || :
	chmod 03775 /var/run/postgresql || :
	if [[ -n "$POSTGRES_INITDB_WALDIR" ]]; then
		mkdir -p "$POSTGRES_INITDB_WALDIR"
		if [[ "$(id -u)" == 0 ]]; then
			find "$POSTGRES_INITDB_WALDIR" \! -user postgres -exec chown postgres '{}' +
		fi
		chmod 700 "$POSTGRES_INITDB_WALDIR"
	fi
	if [[ "$(id -u)" == 0 ]]; then
		find "$PGDATA" \! -user postgres -exec chown postgres '{}' +
		find /var/run/postgresql \! -user postgres -exec chown postgres '{}' +
	fi
}

docker_verify_minimum_env() {
	if [[ -z "$POSTGRES_PASSWORD" && "$POSTGRES_HOST_AUTH_METHOD" != trust ]]; then
		cat >&2 <<-'EOE'
			Error: Database is uninitialized and superuser password is not specified.
			       You must specify POSTGRES_PASSWORD to a non-empty value for the
			       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".

			       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all
			       connections without a password. This is *not* recommended.
		EOE
		exit 1
	fi
	if [[ "$POSTGRES_HOST_AUTH_METHOD" == trust ]]; then
		cat >&2 <<-'EOW'
			********************************************************************************
			WARNING: POSTGRES_HOST_AUTH_METHOD has been set to "trust". This will allow
			         anyone with access to the Postgres port to access your database without
			         a password, even if POSTGRES_PASSWORD is set.
			********************************************************************************
		EOW
	fi
}

docker_check_existing_version() {
	local have
	have="$(<"$PGDATA/PG_VERSION")"
	if [[ "$have" != "$PG_EXPECTED_MAJOR" ]]; then
		error "$PGDATA holds a PostgreSQL $have cluster; this image runs PostgreSQL $PG_EXPECTED_MAJOR."
		error "Upgrade the data with pg_upgrade or dump/restore, or use a postgres:$have image."
		exit 1
	fi
}

# shellcheck disable=SC2034 # waldir is used inside the eval
docker_init_database_dir() {
	# initdb insists on the current uid having a passwd entry. The official image fakes one
	# with nss_wrapper; this one does not carry it, so say so clearly.
	if ! getent passwd "$(id -u)" >/dev/null; then
		error "uid $(id -u) has no /etc/passwd entry; start the container as root (default) or --user postgres"
		exit 1
	fi
	local -a waldir=()
	if [[ -n "$POSTGRES_INITDB_WALDIR" ]]; then
		waldir=(--waldir "$POSTGRES_INITDB_WALDIR")
	fi
	# POSTGRES_INITDB_ARGS is word-split with shell quoting rules, exactly like the official
	# image (eval), so values such as --locale-provider=icu --icu-locale="en-US" work.
	# --pwfile refuses a truly empty file, hence the "\n" (empty password = none set).
	eval 'initdb --username="$POSTGRES_USER" --pwfile=<(printf "%s\n" "$POSTGRES_PASSWORD") "${waldir[@]}" '"$POSTGRES_INITDB_ARGS"
}

# Append the catch-all TCP rule. Its method defaults to password_encryption (scram-sha-256
# on 17), as in the official image; initdb's own local/loopback "trust" lines stay above it.
pg_setup_hba_conf() {
	if [[ "${1:-}" == postgres ]]; then shift; fi
	local auth
	auth="$(postgres -C password_encryption "$@")"
	: "${POSTGRES_HOST_AUTH_METHOD:=$auth}"
	{
		printf '\n'
		if [[ "$POSTGRES_HOST_AUTH_METHOD" == trust ]]; then
			printf '# warning trust is enabled for all connections\n'
		fi
		printf 'host all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD"
	} >>"$PGDATA/pg_hba.conf"
}

# Temporary server: unix socket only (listen_addresses=''), same extra args as the real one.
docker_temp_server_start() {
	if [[ "${1:-}" == postgres ]]; then shift; fi
	set -- "$@" -c listen_addresses='' -p "${PGPORT:-5432}"
	NOTIFY_SOCKET='' PGUSER="${PGUSER:-$POSTGRES_USER}" \
		pg_ctl -D "$PGDATA" -o "$(printf '%q ' "$@")" -w start
}

docker_temp_server_stop() {
	PGUSER="${PGUSER:-postgres}" pg_ctl -D "$PGDATA" -m fast -w stop
}

# psql against the temporary server (unix socket), stopping at the first error.
docker_process_sql() {
	local -a query_runner=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
	if [[ -n "$POSTGRES_DB" ]]; then
		query_runner+=(--dbname "$POSTGRES_DB")
	fi
	PGHOST='' PGHOSTADDR='' "${query_runner[@]}" "$@"
}

# POSTGRES_DB='' only for psql's --dbname choice; :'db' still gets the real name (intended).
# shellcheck disable=SC2097,SC2098
docker_setup_db() {
	local exists
	exists="$(POSTGRES_DB='' docker_process_sql --dbname postgres --set db="$POSTGRES_DB" --tuples-only <<-'EOSQL'
		SELECT 1 FROM pg_database WHERE datname = :'db' ;
	EOSQL
	)"
	if [[ -z "${exists//[[:space:]]/}" ]]; then
		POSTGRES_DB='' docker_process_sql --dbname postgres --set db="$POSTGRES_DB" <<-'EOSQL'
			CREATE DATABASE :"db" ;
		EOSQL
		printf '\n'
	fi
}

# Executable *.sh files are run, others are sourced (so they can use the functions above),
# like the official image. Sourced files run without nounset, as they would there.
docker_process_init_files() {
	local f
	printf '\n'
	for f in "$@"; do
		case "$f" in
			*.sh)
				if [[ -x "$f" ]]; then
					log "running $f"
					"$f"
				else
					log "sourcing $f"
					set +u
					# shellcheck disable=SC1090
					. "$f"
					set -u
				fi
				;;
			*.sql) log "running $f"; docker_process_sql -f "$f"; printf '\n' ;;
			*.sql.gz) log "running $f"; gunzip -c "$f" | docker_process_sql; printf '\n' ;;
			*.sql.xz) log "running $f"; xzcat "$f" | docker_process_sql; printf '\n' ;;
			*.sql.zst) log "running $f"; zstd -dc "$f" | docker_process_sql; printf '\n' ;;
			*) log "ignoring $f" ;;
		esac
		printf '\n'
	done
}

_pg_want_help() {
	local arg
	for arg; do
		case "$arg" in
			-'?' | --help | --describe-config | -V | --version) return 0 ;;
		esac
	done
	return 1
}

_main() {
	# `docker run postgres:17 -c shared_buffers=256MB` -> postgres -c shared_buffers=256MB
	if [[ "${1:-}" == -* ]]; then
		set -- postgres "$@"
	fi

	if [[ "${1:-}" == postgres ]] && ! _pg_want_help "$@"; then
		docker_setup_env
		docker_create_db_directories
		if [[ "$(id -u)" == 0 ]]; then
			# Drop to postgres and run this script again (it then skips the root-only parts).
			export HOME=/var/lib/postgresql
			exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
		fi

		if [[ -z "$DATABASE_ALREADY_EXISTS" ]]; then
			docker_verify_minimum_env
			# fail early (and clearly) if the init directory is unreadable
			ls /docker-entrypoint-initdb.d/ >/dev/null
			docker_init_database_dir
			pg_setup_hba_conf "$@"

			export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
			docker_temp_server_start "$@"
			docker_setup_db
			local -a init_files=()
			shopt -s nullglob
			init_files=(/docker-entrypoint-initdb.d/*)
			shopt -u nullglob
			docker_process_init_files "${init_files[@]}"
			docker_temp_server_stop
			unset PGPASSWORD

			printf '\nPostgreSQL init process complete; ready for start up.\n\n'
		else
			docker_check_existing_version
			printf '\nPostgreSQL Database directory appears to contain a database; Skipping initialization\n\n'
		fi
		# The server never needs the superuser password; keep it out of /proc/1/environ.
		unset POSTGRES_PASSWORD
	fi

	exec "$@"
}

_main "$@"
