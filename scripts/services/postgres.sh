# Part of scripts/services.sh (sourced by it, with its settings): PostgreSQL.
# shellcheck shell=bash

# ----------------------------------------------------------------------------------------------
# PostgreSQL
# ----------------------------------------------------------------------------------------------

# Debian's server binaries: /usr/lib/postgresql/<version>/bin, newest version installed.
pg_bin_dir() {
    local dir
    dir="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    [[ -n "$dir" && -x "$dir/pg_ctl" ]] || die "no PostgreSQL server found in /usr/lib/postgresql/*/bin (run: scripts/services.sh install)"
    echo "$dir"
}

# as_postgres COMMAND...: run as the postgres OS user (initdb refuses root), from a folder it can read.
as_postgres() {
    (cd / && runuser -u postgres -- "$@")
}

# Decide where the data directory, unix socket and server log live; sets PG_DATA, PG_SOCKET_DIR,
# PG_LOG_FILE. In the repository if the postgres user can reach var/, else under
# /var/lib/parkwarden/<hash of the repository path (or of PW_VAR_DIR)>/ with var/postgres as a symlink to it.
pg_locate() {
    local base
    make_dirs
    if [[ -L "$VAR_DIR/postgres" ]]; then
        PG_DATA="$(readlink "$VAR_DIR/postgres")"
        base="$(dirname "$PG_DATA")"
    elif [[ -d "$VAR_DIR/postgres" ]] || as_postgres test -x "$VAR_DIR"; then
        PG_DATA="$VAR_DIR/postgres"
        base=""
    else
        local owner="$REPO_ROOT"
        [[ "$VAR_DIR" == "$DEFAULT_VAR_DIR" ]] || owner="$VAR_DIR"
        base="$PG_EXTERNAL_BASE/$(printf '%s' "$owner" | sha1sum | cut -c1-12)"
        PG_DATA="$base/postgres"
    fi

    if [[ -z "$base" ]]; then
        PG_SOCKET_DIR="$RUN_DIR/postgres"
        PG_LOG_FILE="$LOG_DIR/postgres.log"
    else
        PG_SOCKET_DIR="$base/run"
        PG_LOG_FILE="$base/postgres.log"
    fi
    # A unix socket path is limited to 107 bytes.
    if ((${#PG_SOCKET_DIR} + ${#PG_PORT} + 12 > 100)); then
        PG_SOCKET_DIR="/tmp"
    fi
}

pg_pid() {
    local pid
    id postgres >/dev/null 2>&1 || return 1
    pg_locate
    [[ -f "$PG_DATA/postmaster.pid" ]] || {
        rm -f "$(pid_file postgres)"
        return 1
    }
    pid="$(head -n 1 "$PG_DATA/postmaster.pid")"
    if pid_matches "$pid" "postgres"; then
        echo "$pid" >"$(pid_file postgres)"
        echo "$pid"
        return 0
    fi
    rm -f "$(pid_file postgres)"
    return 1
}

pg_prepare_dirs() {
    local base
    id postgres >/dev/null 2>&1 || die "no 'postgres' OS user (is the postgresql package installed?)"
    if [[ "$PG_DATA" != "$VAR_DIR/postgres" ]]; then
        base="$(dirname "$PG_DATA")"
        if [[ ! -L "$VAR_DIR/postgres" ]]; then
            say "the postgres user cannot reach $VAR_DIR: data directory goes to $PG_DATA (symlinked from var/postgres)"
        fi
        mkdir -p "$base"
        chmod 755 "$PG_EXTERNAL_BASE" "$base"
        ln -sfn "$PG_DATA" "$VAR_DIR/postgres"
        touch "$PG_LOG_FILE"
        chown postgres:postgres "$PG_LOG_FILE"
        ln -sfn "$PG_LOG_FILE" "$LOG_DIR/postgres.log"
    else
        touch "$PG_LOG_FILE"
        chown postgres:postgres "$PG_LOG_FILE"
    fi
    mkdir -p "$PG_DATA"
    chown postgres:postgres "$PG_DATA"
    chmod 700 "$PG_DATA"
    if [[ "$PG_SOCKET_DIR" != "/tmp" ]]; then
        mkdir -p "$PG_SOCKET_DIR"
        chown postgres:postgres "$PG_SOCKET_DIR"
        chmod 755 "$PG_SOCKET_DIR"
    fi
}

pg_init_cluster() {
    local bin="$1"
    if [[ -f "$PG_DATA/PG_VERSION" ]]; then
        return 0
    fi
    say "creating PostgreSQL cluster in $PG_DATA..."
    as_postgres "$bin/initdb" -D "$PG_DATA" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=peer --auth-host=scram-sha-256 >>"$LOG_DIR/postgres-initdb.log" 2>&1 ||
        fail_start postgres "$LOG_DIR/postgres-initdb.log" "initdb failed; remove $PG_DATA and try again"
}

pg_write_config() {
    render_template "$TEMPLATE_DIR/postgresql.conf.in" "$PG_DATA/parkwarden.conf" \
        PG_PORT "$PG_PORT" PG_SOCKET_DIR "$PG_SOCKET_DIR"
    cp "$TEMPLATE_DIR/pg_hba.conf" "$PG_DATA/pg_hba.conf"
    chown postgres:postgres "$PG_DATA/parkwarden.conf" "$PG_DATA/pg_hba.conf"
    if ! grep -q "^include_if_exists = 'parkwarden.conf'" "$PG_DATA/postgresql.conf"; then
        printf "\n# parkwarden settings (scripts/services.sh)\ninclude_if_exists = 'parkwarden.conf'\n" \
            >>"$PG_DATA/postgresql.conf"
    fi
}

# Role and database for the pipeline (idempotent).
pg_create_role_and_database() {
    local bin="$1"
    as_postgres "$bin/psql" -h "$PG_SOCKET_DIR" -p "$PG_PORT" -U postgres -d postgres \
        -v ON_ERROR_STOP=1 -q >/dev/null <<SQL
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
        CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
    ELSE
        ALTER ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
    END IF;
END
\$\$;
SELECT 'CREATE DATABASE $PG_DATABASE OWNER $PG_USER ENCODING ''UTF8'''
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DATABASE') \gexec
SQL
}

start_postgres() {
    local pid bin started deadline
    if pid="$(pg_pid)"; then
        say "postgres already running (pid $pid, 127.0.0.1:$PG_PORT)"
        return 0
    fi
    ensure_installed postgres
    bin="$(pg_bin_dir)"
    pg_locate
    require_port_free postgres "$PG_PORT"
    pg_prepare_dirs
    pg_init_cluster "$bin"
    pg_write_config

    say "starting postgres ($(basename "$(dirname "$bin")")) on 127.0.0.1:$PG_PORT..."
    started="$(now)"
    # setsid: the server gets its own session, like the other services. -w: wait for startup.
    as_postgres setsid -w "$bin/pg_ctl" start -D "$PG_DATA" -l "$PG_LOG_FILE" -w -t "$PG_READY_TIMEOUT" -s \
        </dev/null >/dev/null 2>&1 9>&- ||
        fail_start postgres "$PG_LOG_FILE" "pg_ctl start failed; see $PG_LOG_FILE"

    deadline=$((started + PG_READY_TIMEOUT))
    until "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; do
        if (($(now) >= deadline)); then
            fail_start postgres "$PG_LOG_FILE" "pg_isready still failing after ${PG_READY_TIMEOUT}s; try 'scripts/services.sh stop postgres' and start again"
        fi
        sleep 0.5
    done
    pid="$(pg_pid)" || fail_start postgres "$PG_LOG_FILE" "server answered but its postmaster.pid is unreadable"

    pg_create_role_and_database "$bin" ||
        fail_start postgres "$PG_LOG_FILE" "could not create role/database $PG_USER"
    say "postgres ready (pid $pid, 127.0.0.1:$PG_PORT, database $PG_DATABASE) in $(($(now) - started))s"
}

stop_postgres() {
    local pid bin
    if ! pid="$(pg_pid)"; then
        say "postgres is not running"
        return 0
    fi
    bin="$(pg_bin_dir)"
    pg_locate
    say "stopping postgres (pid $pid)..."
    if ! as_postgres "$bin/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 -s; then
        warn "pg_ctl stop failed; sending SIGKILL to $pid"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$(pid_file postgres)"
    say "postgres stopped"
}

status_postgres() {
    local pid=""
    pid="$(pg_pid)" || pid=""
    print_status_line postgres "$pid" "127.0.0.1:$PG_PORT"
}

