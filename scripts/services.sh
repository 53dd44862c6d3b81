#!/usr/bin/env bash
# Backing services for parkwarden, run as plain processes on this machine (no Docker).
#
#   scripts/services.sh install                 install / resolve everything (idempotent)
#   scripts/services.sh start   [SERVICE...]    start and wait until ready (default: all)
#   scripts/services.sh stop    [SERVICE...]    stop (default: all)
#   scripts/services.sh restart [SERVICE...]
#   scripts/services.sh status                  one line per process
#   scripts/services.sh env                     export lines for the clients:
#                                               eval "$(scripts/services.sh env)"
#
# SERVICE is kafka, postgres or kannel (= bearerbox + fakesmsc + smsbox). fakesmsc alone can be
# stopped and started to take the SMSC link down and up again while Kannel keeps running.
#
# Everything listens on 127.0.0.1 only. Fixed ports (override with the environment variable named):
#   Kafka 3.9.1 (KRaft, broker+controller)  SASL_PLAINTEXT 127.0.0.1:39092 (PW_KAFKA_PORT), SCRAM-SHA-512:
#                                           the pipeline logs in as parkwarden / parkwarden-kafka (super user);
#                                           integrators as themselves (`parkwarden integrators add`)
#                                           CONTROLLER 127.0.0.1:39093 (PW_KAFKA_CONTROLLER_PORT), SASL PLAIN
#   PostgreSQL (Debian's, our own cluster)  127.0.0.1:55432 (PW_PG_PORT)
#                                           role/password/database parkwarden/parkwarden/parkwarden
#   Kannel bearerbox admin/status           127.0.0.1:13000 (PW_KANNEL_ADMIN_PORT)
#                                           admin password pw-admin, status password pw-status
#   Kannel bearerbox <-> smsbox             127.0.0.1:13001 (PW_KANNEL_SMSBOX_PORT)
#   Kannel smsbox sendsms HTTP              127.0.0.1:13013 (PW_KANNEL_SENDSMS_PORT)
#                                           user parkwarden, password parkwarden
#   Kannel fake SMSC link (bearerbox side)  127.0.0.1:10000 (PW_FAKESMSC_PORT)
#
# Files (all under var/ in the repository, git-ignored; PW_VAR_DIR=DIR, relative to the repository or
# absolute, keeps a second, separate stack there: give it its own ports too, e.g. bench/chaos.py's):
#   var/run/*.pid        PID files          var/log/*.log   logs (var/log/fakesmsc.log: what the
#   var/kafka/libs       Kafka jars                         fake SMSC received, one line a message)
#   var/kafka/data-sasl  Kafka log.dirs     var/kannel/kannel.conf   generated Kannel config
#   var/kafka/client.properties   the pipeline's login, for Kafka's own tools (--command-config)
#   var/postgres         PostgreSQL data directory (a symlink to /var/lib/parkwarden/<hash>/postgres
#                        when the postgres OS user cannot reach the repository folder)
# A second stack's var/kafka/libs is a symlink to the default stack's jars when those are there.
# Config templates: scripts/services/.
#
# Needs: root (apt-get, runuser), java 17 and mvn on PATH. Installs the rest from Debian packages
# (postgresql, kannel, kannel-extras) and Maven Central (Kafka).

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
TEMPLATE_DIR="$SCRIPT_DIR/services"

DEFAULT_VAR_DIR="$REPO_ROOT/var"
VAR_DIR="${PW_VAR_DIR:-$DEFAULT_VAR_DIR}"
[[ "$VAR_DIR" == /* ]] || VAR_DIR="$REPO_ROOT/$VAR_DIR"
RUN_DIR="$VAR_DIR/run"
LOG_DIR="$VAR_DIR/log"

KAFKA_VERSION="3.9.1"
KAFKA_PORT="${PW_KAFKA_PORT:-39092}"
KAFKA_CONTROLLER_PORT="${PW_KAFKA_CONTROLLER_PORT:-39093}"
KAFKA_DIR="$VAR_DIR/kafka"
KAFKA_LIBS="$KAFKA_DIR/libs"
KAFKA_DATA_DIR="$KAFKA_DIR/data-sasl"  # "data" held a broker without authentication: not reused
KAFKA_MECHANISM="SCRAM-SHA-512"
KAFKA_USER="parkwarden"                # the pipeline's principal (a super user); dev passwords, like PostgreSQL's
KAFKA_PASSWORD="parkwarden-kafka"
KAFKA_BROKER_USER="broker"             # the broker's own login to its listener
KAFKA_BROKER_PASSWORD="broker-kafka"
KAFKA_CONTROLLER_PASSWORD="controller-kafka"
KAFKA_CLIENT_CONFIG="$KAFKA_DIR/client.properties"
KAFKA_LOG_FILE="$LOG_DIR/kafka.log"
KAFKA_READY_TIMEOUT="${PW_KAFKA_READY_TIMEOUT:-120}"
KAFKA_STOP_TIMEOUT=60

PG_PORT="${PW_PG_PORT:-55432}"
PG_USER="parkwarden"
PG_PASSWORD="parkwarden"
PG_DATABASE="parkwarden"
PG_READY_TIMEOUT=60
PG_EXTERNAL_BASE="/var/lib/parkwarden"

KANNEL_ADMIN_PORT="${PW_KANNEL_ADMIN_PORT:-13000}"
KANNEL_SMSBOX_PORT="${PW_KANNEL_SMSBOX_PORT:-13001}"
KANNEL_SENDSMS_PORT="${PW_KANNEL_SENDSMS_PORT:-13013}"
FAKESMSC_PORT="${PW_FAKESMSC_PORT:-10000}"
KANNEL_ADMIN_PASSWORD="pw-admin"
KANNEL_STATUS_PASSWORD="pw-status"
KANNEL_USERNAME="parkwarden"
KANNEL_PASSWORD="parkwarden"
KANNEL_DIR="$VAR_DIR/kannel"
KANNEL_CONF="$KANNEL_DIR/kannel.conf"
KANNEL_READY_TIMEOUT=30
KANNEL_STOP_TIMEOUT=15
FAKESMSC_BIN="/usr/lib/kannel/test/fakesmsc"
FAKESMSC_LOG="$LOG_DIR/fakesmsc.log"

APT_PACKAGES=(postgresql kannel kannel-extras curl iproute2 fonts-wqy-microhei poppler-utils)  # the font: Chinese in PDF notices; poppler-utils: pdftoppm renders them in the tests

# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

say() { echo "[services] $*"; }
warn() { echo "[services] WARNING: $*" >&2; }
die() {
    echo "[services] ERROR: $*" >&2
    exit 1
}

now() { date +%s; }

make_dirs() {
    mkdir -p "$RUN_DIR" "$LOG_DIR" "$KAFKA_DIR" "$KANNEL_DIR"
}

# render_template TEMPLATE OUTPUT NAME VALUE [NAME VALUE ...]: replaces @NAME@ with VALUE.
render_template() {
    local template="$1" output="$2" text
    shift 2
    text="$(<"$template")"
    while (($# >= 2)); do
        text="${text//"@$1@"/"$2"}"
        shift 2
    done
    printf '%s\n' "$text" >"$output.tmp"
    mv "$output.tmp" "$output"
}

# port_open PORT: true if something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# require_port_free NAME PORT: fail clearly if someone else already listens on PORT.
require_port_free() {
    local name="$1" port="$2"
    if port_open "$port"; then
        echo "[services] ERROR: cannot start $name: port $port is already in use:" >&2
        ss -ltnp "sport = :$port" >&2 || true
        echo "[services] Stop that process (a Debian-managed service? try 'service kannel stop' or" >&2
        echo "[services] 'pg_ctlcluster ... stop'), or choose another port with the PW_*_PORT variables." >&2
        exit 1
    fi
}

pid_file() { echo "$RUN_DIR/$1.pid"; }

# pid_matches PID PATTERN: the process exists and its command line contains PATTERN.
pid_matches() {
    local pid="$1" pattern="$2" cmdline
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ "$cmdline" == *"$pattern"* ]]
}

# running_pid NAME PATTERN: prints the PID from var/run/NAME.pid if that process is alive and
# looks like ours; removes a stale PID file. Returns 1 when not running.
running_pid() {
    local name="$1" pattern="$2" file pid
    file="$(pid_file "$name")"
    [[ -f "$file" ]] || return 1
    pid="$(head -n 1 "$file" 2>/dev/null || true)"
    if pid_matches "$pid" "$pattern"; then
        echo "$pid"
        return 0
    fi
    rm -f "$file"
    return 1
}

# start_background NAME STDOUT_FILE STDERR_FILE COMMAND...: runs COMMAND in its own session,
# detached from this shell, and writes its PID to var/run/NAME.pid.
start_background() {
    local name="$1" out="$2" err="$3"
    shift 3
    # 9>&-: do not hand the lock of main() down to the long-running process.
    setsid nohup "$@" >>"$out" 2>>"$err" </dev/null 9>&- &
    echo "$!" >"$(pid_file "$name")"
}

# stop_pid NAME PID TIMEOUT: SIGTERM, wait up to TIMEOUT seconds, then SIGKILL.
stop_pid() {
    local name="$1" pid="$2" timeout="$3" deadline
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$(($(now) + timeout))
    while kill -0 "$pid" 2>/dev/null; do
        if (($(now) >= deadline)); then
            warn "$name (pid $pid) did not stop within ${timeout}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.2
    done
}

# stop_service NAME PATTERN TIMEOUT: stop the process of var/run/NAME.pid, if any.
stop_service() {
    local name="$1" pattern="$2" timeout="$3" pid
    if ! pid="$(running_pid "$name" "$pattern")"; then
        say "$name is not running"
        return 0
    fi
    say "stopping $name (pid $pid)..."
    stop_pid "$name" "$pid" "$timeout"
    rm -f "$(pid_file "$name")"
    say "$name stopped"
}

# fail_start NAME LOGFILE HINT: print the end of a log and what to do, then exit non-zero.
fail_start() {
    local name="$1" log="$2" hint="$3"
    echo "[services] ERROR: $name did not become ready." >&2
    if [[ -f "$log" ]]; then
        echo "[services] last lines of $log:" >&2
        tail -n 30 "$log" | sed 's/^/    /' >&2
    fi
    echo "[services] $hint" >&2
    exit 1
}

print_status_line() {
    local name="$1" pid="$2" detail="$3"
    if [[ -n "$pid" ]]; then
        printf '%-10s running (pid %s) %s\n' "$name" "$pid" "$detail"
    else
        printf '%-10s stopped\n' "$name"
    fi
}

# ----------------------------------------------------------------------------------------------
# Install
# ----------------------------------------------------------------------------------------------

require_root() {
    [[ "$(id -u)" == "0" ]] || die "run as root (it uses apt-get and runuser)"
}

require_java_and_maven() {
    command -v java >/dev/null || die "java not found on PATH: install OpenJDK 17 (apt-get install -y openjdk-17-jre-headless)"
    command -v mvn >/dev/null || die "mvn not found on PATH: install Maven (apt-get install -y maven)"
}

package_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing_apt_packages() {
    local pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        package_installed "$pkg" || echo "$pkg"
    done
}

install_apt_packages() {
    local missing
    mapfile -t missing < <(missing_apt_packages)
    if ((${#missing[@]} == 0)); then
        say "Debian packages already installed (${APT_PACKAGES[*]})"
        return 0
    fi
    require_root
    say "installing PostgreSQL, Kannel and tools from Debian packages: ${missing[*]}..."

    # Keep the packages' own services (Debian's 'main' PostgreSQL cluster, Kannel's init script)
    # from starting during the install: a policy-rc.d answering 101 forbids it. Only add one if the
    # machine has none, and remove it afterwards.
    local policy="/usr/sbin/policy-rc.d" added_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\n# temporary, from parkwarden scripts/services.sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added_policy=1
    fi

    local rc=0
    (
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q &&
            apt-get install -y -q --no-install-recommends \
                -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
                "${missing[@]}"
    ) || rc=$?

    if ((added_policy)); then
        rm -f "$policy"
    fi
    ((rc == 0)) || die "apt-get install failed (exit $rc)"
    say "Debian packages installed"
}

kafka_installed() {
    [[ -f "$KAFKA_LIBS/.complete" ]]
}

# A second stack (PW_VAR_DIR) uses the jars of the default one when they are there.
reuse_default_kafka_libs() {
    local default_libs="$DEFAULT_VAR_DIR/kafka/libs"
    [[ "$KAFKA_LIBS" != "$default_libs" && -f "$default_libs/.complete" ]] || return 1
    rm -rf "$KAFKA_LIBS"
    ln -s "$(cd "$default_libs" && pwd -P)" "$KAFKA_LIBS"
    say "Kafka $KAFKA_VERSION: using the jars in $default_libs"
}

install_kafka() {
    if kafka_installed; then
        say "Kafka $KAFKA_VERSION already resolved in ${KAFKA_LIBS#"$REPO_ROOT"/}"
        return 0
    fi
    make_dirs
    reuse_default_kafka_libs && return 0
    require_java_and_maven
    say "resolving Kafka $KAFKA_VERSION from Maven Central (first time: about a minute)..."
    local work="$KAFKA_DIR/resolve"
    rm -rf "$work"
    mkdir -p "$work"
    render_template "$TEMPLATE_DIR/kafka-pom.xml" "$work/pom.xml" KAFKA_VERSION "$KAFKA_VERSION"
    if ! mvn -q -B -Dstyle.color=never -f "$work/pom.xml" \
        org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$work/libs" </dev/null >"$LOG_DIR/kafka-resolve.log" 2>&1; then
        tail -n 30 "$LOG_DIR/kafka-resolve.log" >&2
        die "Maven could not resolve Kafka $KAFKA_VERSION (is Maven Central reachable?); full output in var/log/kafka-resolve.log"
    fi
    [[ -f "$work/libs/kafka_2.13-$KAFKA_VERSION.jar" && -f "$work/libs/kafka-tools-$KAFKA_VERSION.jar" ]] ||
        die "Kafka jars missing after Maven resolution (looked in $work/libs)"
    rm -rf "$KAFKA_LIBS"
    mv "$work/libs" "$KAFKA_LIBS"
    rm -rf "$work"
    touch "$KAFKA_LIBS/.complete"
    say "Kafka $KAFKA_VERSION resolved: $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars in ${KAFKA_LIBS#"$REPO_ROOT"/}"
}

cmd_install() {
    make_dirs
    install_apt_packages
    install_kafka
    [[ -x "$FAKESMSC_BIN" ]] || die "$FAKESMSC_BIN missing (package kannel-extras)"
    pg_bin_dir >/dev/null
    say "install done"
}

# The parts of install a start of SERVICE needs, done only if something is missing.
ensure_installed() {
    case "$1" in
        kafka)
            require_java_and_maven
            kafka_installed || install_kafka
            ;;
        postgres | kannel | fakesmsc)
            if [[ -n "$(missing_apt_packages)" ]]; then
                install_apt_packages
            fi
            ;;
    esac
}

# ----------------------------------------------------------------------------------------------
# Kafka
# ----------------------------------------------------------------------------------------------

# kafka_java ARGS...: run a Kafka CLI class with the project's jars and quiet logging.
kafka_java() {
    java -Xmx256m -Dlog4j.configuration="file:$TEMPLATE_DIR/kafka-tools-log4j.properties" \
        -cp "$KAFKA_LIBS/*" "$@"
}

kafka_write_config() {
    render_template "$TEMPLATE_DIR/kafka-server.properties.in" "$KAFKA_DIR/server.properties" \
        KAFKA_PORT "$KAFKA_PORT" \
        KAFKA_CONTROLLER_PORT "$KAFKA_CONTROLLER_PORT" \
        KAFKA_DATA_DIR "$KAFKA_DATA_DIR" \
        KAFKA_USER "$KAFKA_USER" \
        KAFKA_BROKER_USER "$KAFKA_BROKER_USER" \
        KAFKA_BROKER_PASSWORD "$KAFKA_BROKER_PASSWORD" \
        KAFKA_CONTROLLER_PASSWORD "$KAFKA_CONTROLLER_PASSWORD"
    chmod 600 "$KAFKA_DIR/server.properties"
    printf '%s\n' "security.protocol=SASL_PLAINTEXT" "sasl.mechanism=$KAFKA_MECHANISM" \
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"$KAFKA_USER\" password=\"$KAFKA_PASSWORD\";" \
        >"$KAFKA_CLIENT_CONFIG.tmp"
    chmod 600 "$KAFKA_CLIENT_CONFIG.tmp"
    mv "$KAFKA_CLIENT_CONFIG.tmp" "$KAFKA_CLIENT_CONFIG"
    render_template "$TEMPLATE_DIR/kafka-log4j.properties.in" "$KAFKA_DIR/log4j.properties" \
        KAFKA_LOG_FILE "$KAFKA_LOG_FILE"
}

# Format the KRaft storage once per data directory.
kafka_format_storage() {
    if [[ -f "$KAFKA_DATA_DIR/meta.properties" ]]; then
        return 0
    fi
    local cluster_id
    say "formatting Kafka storage in ${KAFKA_DATA_DIR#"$REPO_ROOT"/}..."
    cluster_id="$(kafka_java kafka.tools.StorageTool random-uuid </dev/null)"
    mkdir -p "$KAFKA_DATA_DIR"
    # The SCRAM users the broker and the pipeline log in with are part of the cluster's first metadata.
    kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_DIR/server.properties" -g \
        --add-scram "$KAFKA_MECHANISM=[name=$KAFKA_BROKER_USER,password=$KAFKA_BROKER_PASSWORD]" \
        --add-scram "$KAFKA_MECHANISM=[name=$KAFKA_USER,password=$KAFKA_PASSWORD]" \
        </dev/null >>"$LOG_DIR/kafka-storage.log" 2>&1 ||
        fail_start kafka "$LOG_DIR/kafka-storage.log" "formatting the storage failed"
    echo "$cluster_id" >"$KAFKA_DIR/cluster-id"
}

kafka_pid() { running_pid kafka "kafka.Kafka"; }

# Ready = an admin client can fetch metadata (list topics).
kafka_ready() {
    port_open "$KAFKA_PORT" || return 1
    timeout 30 java -Xmx256m -Dlog4j.configuration="file:$TEMPLATE_DIR/kafka-tools-log4j.properties" \
        -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "127.0.0.1:$KAFKA_PORT" --command-config "$KAFKA_CLIENT_CONFIG" --list </dev/null >/dev/null 2>&1
}

start_kafka() {
    local pid started deadline
    if pid="$(kafka_pid)"; then
        say "kafka already running (pid $pid, 127.0.0.1:$KAFKA_PORT)"
        if ! grep -q "^listeners=SASL_PLAINTEXT" "$KAFKA_DIR/server.properties" 2>/dev/null; then
            warn "this broker was started by an older scripts/services.sh and asks for no login, while clients"
            warn "now log in (scripts/services.sh env): restart it with 'scripts/services.sh restart kafka'"
        fi
        return 0
    fi
    ensure_installed kafka
    make_dirs
    require_port_free kafka "$KAFKA_PORT"
    require_port_free kafka "$KAFKA_CONTROLLER_PORT"
    kafka_write_config
    kafka_format_storage

    # A broker keeps files open for every partition (segments, indexes) and socket; a test suite makes
    # thousands of short-lived topics. Raise the open-file limit as far as this machine allows.
    ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    say "starting kafka on 127.0.0.1:$KAFKA_PORT (open files: $(ulimit -n))..."
    started="$(now)"
    start_background kafka "$LOG_DIR/kafka.stdout.log" "$LOG_DIR/kafka.stdout.log" \
        java -Xms512m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
        -Djava.net.preferIPv4Stack=true \
        -Dlog4j.configuration="file:$KAFKA_DIR/log4j.properties" \
        -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_DIR/server.properties"
    pid="$(cat "$(pid_file kafka)")"

    deadline=$((started + KAFKA_READY_TIMEOUT))
    until kafka_ready; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$(pid_file kafka)"
            tail -n 20 "$LOG_DIR/kafka.stdout.log" >&2 || true
            fail_start kafka "$KAFKA_LOG_FILE" "the broker exited; see the logs above. To start from empty data: scripts/services.sh stop kafka && rm -rf var/kafka/data-sasl"
        fi
        if (($(now) >= deadline)); then
            fail_start kafka "$KAFKA_LOG_FILE" "no metadata from 127.0.0.1:$KAFKA_PORT after ${KAFKA_READY_TIMEOUT}s; the broker (pid $pid) is left running: see var/log/kafka.log, then 'scripts/services.sh stop kafka' and start again"
        fi
        sleep 1
    done
    say "kafka ready (pid $pid, 127.0.0.1:$KAFKA_PORT) in $(($(now) - started))s"
}

stop_kafka() {
    stop_service kafka "kafka.Kafka" "$KAFKA_STOP_TIMEOUT"
}

status_kafka() {
    local pid=""
    pid="$(kafka_pid)" || pid=""
    print_status_line kafka "$pid" "127.0.0.1:$KAFKA_PORT"
}

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

# ----------------------------------------------------------------------------------------------
# Kannel: bearerbox, fakesmsc, smsbox
# ----------------------------------------------------------------------------------------------

kannel_write_config() {
    render_template "$TEMPLATE_DIR/kannel.conf.in" "$KANNEL_CONF" \
        LOG_DIR "$LOG_DIR" \
        KANNEL_ADMIN_PORT "$KANNEL_ADMIN_PORT" \
        KANNEL_ADMIN_PASSWORD "$KANNEL_ADMIN_PASSWORD" \
        KANNEL_STATUS_PASSWORD "$KANNEL_STATUS_PASSWORD" \
        KANNEL_SMSBOX_PORT "$KANNEL_SMSBOX_PORT" \
        KANNEL_SENDSMS_PORT "$KANNEL_SENDSMS_PORT" \
        FAKESMSC_PORT "$FAKESMSC_PORT" \
        KANNEL_USERNAME "$KANNEL_USERNAME" \
        KANNEL_PASSWORD "$KANNEL_PASSWORD"
}

kannel_status_text() {
    curl -fsS --max-time 2 "http://127.0.0.1:$KANNEL_ADMIN_PORT/status.txt?password=$KANNEL_STATUS_PASSWORD" 2>/dev/null
}

bearerbox_ready() { kannel_status_text >/dev/null; }

bearerbox_pid() { running_pid bearerbox "bearerbox"; }
fakesmsc_pid() { running_pid fakesmsc "fakesmsc"; }
smsbox_pid() { running_pid smsbox "smsbox"; }

# wait_until NAME PID TIMEOUT LOG HINT CHECK...: poll CHECK until it succeeds; fail if the process
# dies or the time is up.
wait_until() {
    local name="$1" pid="$2" timeout="$3" log="$4" hint="$5" deadline
    shift 5
    deadline=$(($(now) + timeout))
    until "$@"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$(pid_file "$name")"
            fail_start "$name" "$log" "$name exited. $hint"
        fi
        if (($(now) >= deadline)); then
            fail_start "$name" "$log" "not ready after ${timeout}s (pid $pid left running). $hint"
        fi
        sleep 0.2
    done
}

start_bearerbox() {
    local pid
    if pid="$(bearerbox_pid)"; then
        say "bearerbox already running (pid $pid, admin 127.0.0.1:$KANNEL_ADMIN_PORT)"
        return 0
    fi
    require_port_free bearerbox "$KANNEL_ADMIN_PORT"
    require_port_free bearerbox "$KANNEL_SMSBOX_PORT"
    require_port_free bearerbox "$FAKESMSC_PORT"
    say "starting bearerbox (admin 127.0.0.1:$KANNEL_ADMIN_PORT)..."
    start_background bearerbox "$LOG_DIR/bearerbox.stdout.log" "$LOG_DIR/bearerbox.stdout.log" \
        /usr/sbin/bearerbox -v 2 "$KANNEL_CONF"
    pid="$(cat "$(pid_file bearerbox)")"
    wait_until bearerbox "$pid" "$KANNEL_READY_TIMEOUT" "$LOG_DIR/bearerbox.log" \
        "See var/log/bearerbox.log and var/log/bearerbox.stdout.log." bearerbox_ready
    say "bearerbox ready (pid $pid)"
}

# The fake SMSC link is up when bearerbox's status lists the FAKE smsc as online.
fakesmsc_linked() {
    kannel_status_text | grep -E "^ *FAKE" | grep -q "online"
}

start_fakesmsc() {
    local pid
    if pid="$(fakesmsc_pid)"; then
        say "fakesmsc already running (pid $pid)"
        return 0
    fi
    bearerbox_pid >/dev/null || die "fakesmsc needs bearerbox: run 'scripts/services.sh start kannel'"
    say "starting fakesmsc (connects to 127.0.0.1:$FAKESMSC_PORT, messages in ${FAKESMSC_LOG#"$REPO_ROOT"/})..."
    # -m 0: sends nothing itself. It logs (on stderr, Kannel's log format, unbuffered) one line
    # for every message it receives:
    #   2026-11-26 17:04:51 [4245] [0] DEBUG: Got message 1: <12345 +8613800138000 ucs-2 %8F%DDz...>
    # i.e. "<from> <to> ucs-2 <UTF-16BE bytes, URL-encoded, byte 0x20 as '+'>" for coding=2
    # ("text" and the URL-encoded text for 7-bit). Python: unquote_to_bytes(data.replace('+', ' '))
    # .decode('utf-16-be'). The message number restarts at 1 with every fakesmsc process.
    start_background fakesmsc "$FAKESMSC_LOG" "$FAKESMSC_LOG" \
        "$FAKESMSC_BIN" -H 127.0.0.1 -r "$FAKESMSC_PORT" -m 0 "100 200 text x"
    pid="$(cat "$(pid_file fakesmsc)")"
    wait_until fakesmsc "$pid" "$KANNEL_READY_TIMEOUT" "$FAKESMSC_LOG" \
        "See var/log/fakesmsc.log and var/log/bearerbox.log." fakesmsc_linked
    say "fakesmsc ready (pid $pid, SMSC link online)"
}

smsbox_ready() { port_open "$KANNEL_SENDSMS_PORT"; }

start_smsbox() {
    local pid
    if pid="$(smsbox_pid)"; then
        say "smsbox already running (pid $pid, sendsms 127.0.0.1:$KANNEL_SENDSMS_PORT)"
        return 0
    fi
    require_port_free smsbox "$KANNEL_SENDSMS_PORT"
    say "starting smsbox (sendsms 127.0.0.1:$KANNEL_SENDSMS_PORT)..."
    start_background smsbox "$LOG_DIR/smsbox.stdout.log" "$LOG_DIR/smsbox.stdout.log" \
        /usr/sbin/smsbox -v 2 "$KANNEL_CONF"
    pid="$(cat "$(pid_file smsbox)")"
    wait_until smsbox "$pid" "$KANNEL_READY_TIMEOUT" "$LOG_DIR/smsbox.log" \
        "See var/log/smsbox.log and var/log/smsbox.stdout.log." smsbox_ready
    say "smsbox ready (pid $pid)"
}

start_kannel() {
    local started
    ensure_installed kannel
    make_dirs
    kannel_write_config
    started="$(now)"
    start_bearerbox
    start_fakesmsc
    start_smsbox
    say "kannel ready in $(($(now) - started))s"
}

stop_fakesmsc() { stop_service fakesmsc "fakesmsc" "$KANNEL_STOP_TIMEOUT"; }

stop_kannel() {
    stop_service smsbox "smsbox" "$KANNEL_STOP_TIMEOUT"
    stop_fakesmsc
    stop_service bearerbox "bearerbox" "$KANNEL_STOP_TIMEOUT"
}

status_kannel() {
    local pid=""
    pid="$(bearerbox_pid)" || pid=""
    print_status_line bearerbox "$pid" "admin 127.0.0.1:$KANNEL_ADMIN_PORT"
    pid="$(fakesmsc_pid)" || pid=""
    print_status_line fakesmsc "$pid" "SMSC link 127.0.0.1:$FAKESMSC_PORT"
    pid="$(smsbox_pid)" || pid=""
    print_status_line smsbox "$pid" "sendsms 127.0.0.1:$KANNEL_SENDSMS_PORT"
}

# ----------------------------------------------------------------------------------------------
# Loopback check: none of our processes may listen on anything but 127.0.0.0/8 or [::1].
# ----------------------------------------------------------------------------------------------

our_pids() {
    local name
    for name in kafka postgres bearerbox fakesmsc smsbox; do
        [[ -f "$(pid_file "$name")" ]] && head -n 1 "$(pid_file "$name")"
    done
    return 0
}

check_loopback_only() {
    local pids pid line local_addr bad=0
    pids="$(our_pids)"
    [[ -n "$pids" ]] || return 0
    while read -r line; do
        [[ -n "$line" ]] || continue
        for pid in $pids; do
            if [[ "$line" == *"pid=$pid,"* ]]; then
                local_addr="$(awk '{print $5}' <<<"$line")"
                case "$local_addr" in
                    127.* | "[::1]":* | "[::ffff:127."*) ;;
                    *)
                        echo "[services] ERROR: not loopback-only: $line" >&2
                        bad=1
                        ;;
                esac
            fi
        done
    done < <(ss -H -tulnp 2>/dev/null)
    if ((bad)); then
        die "a service listens beyond 127.0.0.1 (see above); check the templates in scripts/services/"
    fi
    say "listening sockets checked: loopback only"
}

# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------

ALL_SERVICES=(kafka postgres kannel)

# Expand the SERVICE arguments (default: all) and check them.
services_from_args() {
    local name
    if (($# == 0)); then
        set -- "${ALL_SERVICES[@]}"
    fi
    for name in "$@"; do
        case "$name" in
            kafka | postgres | kannel | fakesmsc) echo "$name" ;;
            all) printf '%s\n' "${ALL_SERVICES[@]}" ;;
            postgresql) echo postgres ;;
            *) die "unknown service '$name' (kafka, postgres, kannel, fakesmsc)" ;;
        esac
    done
}

cmd_start() {
    local services name
    services="$(services_from_args "$@")"
    make_dirs
    for name in $services; do
        "start_$name"
    done
    check_loopback_only
}

cmd_stop() {
    local services name
    services="$(services_from_args "$@")"
    make_dirs
    for name in $services; do
        "stop_$name"
    done
}

cmd_status() {
    make_dirs
    status_kafka
    status_postgres
    status_kannel
}

cmd_env() {
    cat <<EOF
export PW_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT
export PW_KAFKA_SASL_USERNAME=$KAFKA_USER
export PW_KAFKA_SASL_PASSWORD=$KAFKA_PASSWORD
export PW_KAFKA_SASL_MECHANISM=$KAFKA_MECHANISM
export PW_DATABASE_URL=postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DATABASE
export PW_KANNEL_SENDSMS_URL=http://127.0.0.1:$KANNEL_SENDSMS_PORT/cgi-bin/sendsms
export PW_KANNEL_USERNAME=$KANNEL_USERNAME
export PW_KANNEL_PASSWORD=$KANNEL_PASSWORD
export PW_KANNEL_STATUS_URL='http://127.0.0.1:$KANNEL_ADMIN_PORT/status.txt?password=$KANNEL_STATUS_PASSWORD'
EOF
    printf 'export PW_FAKESMSC_LOG=%q\n' "$FAKESMSC_LOG"
    printf 'export PW_KAFKA_TOOLS_CLASSPATH=%q\n' "$KAFKA_LIBS/*"
}

usage() {
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

main() {
    local command="${1:-}"
    (($# > 0)) && shift
    # One command at a time changes the services (a second caller waits for the first).
    case "$command" in
        install | start | stop | restart)
            make_dirs
            exec 9>"$RUN_DIR/services.lock"
            flock 9
            ;;
    esac
    case "$command" in
        install) cmd_install ;;
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        restart)
            cmd_stop "$@"
            cmd_start "$@"
            ;;
        status) cmd_status ;;
        env) cmd_env ;;
        -h | --help | help) usage ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
}

main "$@"
