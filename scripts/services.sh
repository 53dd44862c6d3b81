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
# Config templates and the code of each service (lib.sh, kafka.sh, postgres.sh, kannel.sh): scripts/services/.
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
KAFKA_READY_TIMEOUT="${PW_KAFKA_READY_TIMEOUT:-300}"  # a start after an unclean stop recovers every partition
KAFKA_STOP_TIMEOUT="${PW_KAFKA_STOP_TIMEOUT:-300}"    # a clean stop closes thousands of partitions: let it finish

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

# One file per service, beside the config templates (scripts/services/): the helpers and the install
# first, then each service's start, stop and status.
for part in lib kafka postgres kannel; do
    # shellcheck source=/dev/null
    source "$TEMPLATE_DIR/$part.sh"
done

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

# scripts/cluster.sh sources this file for its helpers: then main does not run.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
