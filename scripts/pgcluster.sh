#!/usr/bin/env bash
# PostgreSQL that fails over, on this machine, beside (not instead of) the single server of scripts/services.sh:
# a primary and a synchronous standby managed by Patroni, with an etcd cluster of 3 members
# (Debian's packages patroni and etcd-server; `scripts/pgcluster.sh install` installs them).
#
#   scripts/pgcluster.sh start | stop | status | env | install
#   scripts/pgcluster.sh kill-primary     SIGKILL the primary's postmaster, as a crash would; Patroni
#                                         fails over at once (primary_start_timeout 0) and the old
#                                         primary comes back as a standby (pg_rewind)
#   scripts/pgcluster.sh primary          the name and port of the node that is primary now
#   scripts/pgcluster.sh backup           pg_basebackup of the primary into var/pgcluster/backups/<time>
#                                         (WAL is archived to var/pgcluster/wal-archive: see README)
#
# Ports (127.0.0.1 only), from PW_PGCLUSTER_PORT (default 56400): PostgreSQL of node N (1-2) at +N,
# Patroni's REST API of node N at +10+N, etcd member N (1-3) clients at +20+N, peers at +30+N.
# Data, configs and logs under var/pgcluster (PW_VAR_DIR/pgcluster); PID files in var/run.
# `eval "$(scripts/pgcluster.sh env)"` points the pipeline at it: PW_DATABASE_URL names both nodes with
# target_session_attrs=read-write, so a new connection goes to whichever is primary (Kafka and Kannel
# stay those of scripts/services.sh). The role, password and database are those of services.sh.

set -euo pipefail
PGCLUSTER_SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/pgcluster.sh"
# shellcheck source=services.sh
source "$(dirname "$PGCLUSTER_SCRIPT")/services.sh"  # its helpers and settings; its main() runs only when executed

PGC_DIR="$VAR_DIR/pgcluster"
PGC_BASE_PORT="${PW_PGCLUSTER_PORT:-56400}"
PGC_SCOPE="parkwarden"
PG_NODES=(1 2)
ETCD_MEMBERS=(1 2 3)
PGC_SUPERUSER_PASSWORD="postgres-pgcluster"   # dev passwords, like the others of services.sh
PGC_REPLICATION_PASSWORD="replicator-pgcluster"
PGC_REWIND_PASSWORD="rewind-pgcluster"
PGC_READY_TIMEOUT="${PW_PGCLUSTER_READY_TIMEOUT:-180}"
PGC_STOP_TIMEOUT=60

pg_node_port() { echo $((PGC_BASE_PORT + $1)); }
rest_port() { echo $((PGC_BASE_PORT + 10 + $1)); }
etcd_client_port() { echo $((PGC_BASE_PORT + 20 + $1)); }
etcd_peer_port() { echo $((PGC_BASE_PORT + 30 + $1)); }
etcd_dir() { echo "$PGC_DIR/etcd-$1"; }
node_dir() { echo "$PGC_DIR/pg$1"; }
etcd_hosts() {
    local m list=()
    for m in "${ETCD_MEMBERS[@]}"; do list+=("127.0.0.1:$(etcd_client_port "$m")"); done
    (IFS=,; echo "${list[*]}")
}

# The processes run as the postgres OS user (PostgreSQL refuses root). setpriv execs, so the PID
# recorded is the process itself.
AS_POSTGRES=(env HOME="$PGC_DIR" setpriv --reuid=postgres --regid=postgres --init-groups)

pgc_install() {
    require_root
    local missing=()
    for p in patroni etcd-server; do package_installed "$p" || missing+=("$p"); done
    if ((${#missing[@]})); then
        say "installing ${missing[*]} (Debian packages)..."
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >>"$LOG_DIR/pgcluster-install.log" 2>&1 ||
            die "apt-get install ${missing[*]} failed; see $LOG_DIR/pgcluster-install.log (try apt-get update)"
    fi
    # The distribution's own etcd service (if the package started one) is not ours: leave it alone.
}

pgc_prepare() {
    id postgres >/dev/null 2>&1 || die "no 'postgres' OS user (is the postgresql package installed?)"
    as_postgres test -x "$VAR_DIR" 2>/dev/null ||
        die "the postgres user cannot reach $VAR_DIR; choose a PW_VAR_DIR it can reach"
    mkdir -p "$PGC_DIR" "$PGC_DIR/run" "$PGC_DIR/wal-archive"
    chown postgres:postgres "$PGC_DIR" "$PGC_DIR/run" "$PGC_DIR/wal-archive"
    chmod 700 "$PGC_DIR"
}

start_etcd_member() {
    local m="$1" cluster="" other
    running_pid "etcd-$m" "etcd-$m" >/dev/null && return 0
    require_port_free "etcd member $m" "$(etcd_client_port "$m")"
    require_port_free "etcd member $m" "$(etcd_peer_port "$m")"
    for other in "${ETCD_MEMBERS[@]}"; do cluster+="${cluster:+,}etcd-$other=http://127.0.0.1:$(etcd_peer_port "$other")"; done
    mkdir -p "$(etcd_dir "$m")"
    chown postgres:postgres "$(etcd_dir "$m")"
    chmod 700 "$(etcd_dir "$m")"
    # Heartbeat and election timeout twice etcd's defaults: this machine is often loaded.
    start_background "etcd-$m" "$LOG_DIR/pgcluster-etcd-$m.log" "$LOG_DIR/pgcluster-etcd-$m.log" \
        "${AS_POSTGRES[@]}" etcd --name "etcd-$m" --data-dir "$(etcd_dir "$m")" \
        --listen-client-urls "http://127.0.0.1:$(etcd_client_port "$m")" \
        --advertise-client-urls "http://127.0.0.1:$(etcd_client_port "$m")" \
        --listen-peer-urls "http://127.0.0.1:$(etcd_peer_port "$m")" \
        --initial-advertise-peer-urls "http://127.0.0.1:$(etcd_peer_port "$m")" \
        --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "$PGC_SCOPE-pgcluster" \
        --heartbeat-interval 200 --election-timeout 2000
}

etcd_healthy() {
    local m
    for m in "${ETCD_MEMBERS[@]}"; do
        curl -fsS --max-time 2 "http://127.0.0.1:$(etcd_client_port "$m")/health" 2>/dev/null | grep -q '"health":"true"' || return 1
    done
}

node_write_config() {
    local n="$1" dir bin
    dir="$(node_dir "$n")"
    bin="$(pg_bin_dir)"
    mkdir -p "$dir"
    chown postgres:postgres "$dir"
    chmod 700 "$dir"
    render_template "$TEMPLATE_DIR/patroni.yml.in" "$dir/patroni.yml" \
        SCOPE "$PGC_SCOPE" NAME "pg$n" REST_PORT "$(rest_port "$n")" ETCD_HOSTS "$(etcd_hosts)" \
        PG_PORT "$(pg_node_port "$n")" DATA_DIR "$dir/data" BIN_DIR "$bin" PGPASS "$dir/pgpass" \
        SOCKET_DIR "$PGC_DIR/run" LOG_DIR "$dir/log" WAL_ARCHIVE "$PGC_DIR/wal-archive" \
        SUPERUSER_PASSWORD "$PGC_SUPERUSER_PASSWORD" REPLICATION_PASSWORD "$PGC_REPLICATION_PASSWORD" \
        REWIND_PASSWORD "$PGC_REWIND_PASSWORD"
    chown postgres:postgres "$dir/patroni.yml"
    chmod 600 "$dir/patroni.yml"
}

start_pg_node() {
    local n="$1"
    running_pid "patroni-$n" "pg$n/patroni.yml" >/dev/null && return 0
    require_port_free "PostgreSQL node $n" "$(pg_node_port "$n")"
    require_port_free "Patroni node $n" "$(rest_port "$n")"
    node_write_config "$n"
    say "starting Patroni node pg$n (PostgreSQL 127.0.0.1:$(pg_node_port "$n"), REST :$(rest_port "$n"))..."
    start_background "patroni-$n" "$LOG_DIR/pgcluster-patroni-$n.log" "$LOG_DIR/pgcluster-patroni-$n.log" \
        "${AS_POSTGRES[@]}" patroni "$(node_dir "$n")/patroni.yml"
}

# node_role N: what Patroni's REST API says node N is (primary, replica, ...), or nothing.
node_role() {
    curl -sS --max-time 2 "http://127.0.0.1:$(rest_port "$1")/patroni" 2>/dev/null |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("role",""), d.get("state",""))' 2>/dev/null || true
}

# primary_node: the node whose REST API answers 200 on /primary (Patroni's own health check).
primary_node() {
    local n
    for n in "${PG_NODES[@]}"; do
        if [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$(rest_port "$n")/primary")" == 200 ]]; then
            echo "$n"
            return 0
        fi
    done
    return 1
}

# A standby that streams synchronously (Patroni's /sync answers 200 on it).
sync_standby_node() {
    local n
    for n in "${PG_NODES[@]}"; do
        if [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$(rest_port "$n")/sync")" == 200 ]]; then
            echo "$n"
            return 0
        fi
    done
    return 1
}

pgc_start() {
    local m n started deadline leader
    ensure_installed postgres
    package_installed patroni && package_installed etcd-server || pgc_install
    make_dirs
    pgc_prepare
    started="$(now)"
    for m in "${ETCD_MEMBERS[@]}"; do start_etcd_member "$m"; done
    deadline=$((started + PGC_READY_TIMEOUT))
    until etcd_healthy; do
        for m in "${ETCD_MEMBERS[@]}"; do
            running_pid "etcd-$m" "etcd-$m" >/dev/null ||
                fail_start "etcd member $m" "$LOG_DIR/pgcluster-etcd-$m.log" "etcd member $m exited"
        done
        (($(now) < deadline)) || fail_start etcd "$LOG_DIR/pgcluster-etcd-1.log" "etcd's 3 members not healthy within ${PGC_READY_TIMEOUT}s"
        sleep 1
    done
    say "etcd ready ($(etcd_hosts)) in $(($(now) - started))s"
    for n in "${PG_NODES[@]}"; do start_pg_node "$n"; done
    until leader="$(primary_node)" && sync_standby_node >/dev/null; do
        for n in "${PG_NODES[@]}"; do
            running_pid "patroni-$n" "pg$n/patroni.yml" >/dev/null ||
                fail_start "patroni pg$n" "$LOG_DIR/pgcluster-patroni-$n.log" "Patroni node pg$n exited"
        done
        (($(now) < deadline)) || fail_start patroni "$LOG_DIR/pgcluster-patroni-1.log" \
            "no primary with a synchronous standby within ${PGC_READY_TIMEOUT}s (see also $LOG_DIR/pgcluster-patroni-2.log)"
        sleep 1
    done
    PG_SOCKET_DIR="$PGC_DIR/run" PG_PORT="$(pg_node_port "$leader")" pg_create_role_and_database "$(pg_bin_dir)" ||
        fail_start patroni "$LOG_DIR/pgcluster-patroni-$leader.log" "could not create role/database $PG_USER on pg$leader"
    say "PostgreSQL cluster ready in $(($(now) - started))s: primary pg$leader, synchronous standby pg$(sync_standby_node)"
}

pgc_stop() {
    local n m pid leader=""
    leader="$(primary_node)" || leader=""
    # The standby first, so that stopping the primary does not make it fail over.
    for n in "${PG_NODES[@]}"; do
        [[ "$n" == "$leader" ]] && continue
        stop_service "patroni-$n" "pg$n/patroni.yml" "$PGC_STOP_TIMEOUT"
    done
    [[ -n "$leader" ]] && stop_service "patroni-$leader" "pg$leader/patroni.yml" "$PGC_STOP_TIMEOUT"
    # A postmaster left behind by a killed Patroni.
    for n in "${PG_NODES[@]}"; do
        pid="$(head -n 1 "$(node_dir "$n")/data/postmaster.pid" 2>/dev/null)" || continue
        if pid_matches "$pid" postgres; then
            say "stopping the postmaster of pg$n (pid $pid) that Patroni left"
            stop_pid "postgres pg$n" "$pid" "$PGC_STOP_TIMEOUT"
        fi
    done
    for m in "${ETCD_MEMBERS[@]}"; do stop_service "etcd-$m" "etcd-$m" 30; done
}

pgc_status() {
    local m n pid health
    for m in "${ETCD_MEMBERS[@]}"; do
        pid="$(running_pid "etcd-$m" "etcd-$m")" || pid=""
        print_status_line "etcd-$m" "$pid" "127.0.0.1:$(etcd_client_port "$m") peers :$(etcd_peer_port "$m")"
    done
    for n in "${PG_NODES[@]}"; do
        pid="$(running_pid "patroni-$n" "pg$n/patroni.yml")" || pid=""
        print_status_line "patroni-pg$n" "$pid" "127.0.0.1:$(pg_node_port "$n") REST :$(rest_port "$n") $(node_role "$n")"
    done
    if running_pid "patroni-1" "pg1/patroni.yml" >/dev/null || running_pid "patroni-2" "pg2/patroni.yml" >/dev/null; then
        patronictl -c "$(node_dir 1)/patroni.yml" list 2>/dev/null || true
    fi
}

pgc_env() {
    local hosts="" n
    for n in "${PG_NODES[@]}"; do hosts+="${hosts:+,}127.0.0.1:$(pg_node_port "$n")"; done
    cmd_env | grep -v '^export PW_DATABASE_URL='
    echo "export PW_DATABASE_URL='postgresql://$PG_USER:$PG_PASSWORD@$hosts/$PG_DATABASE?target_session_attrs=read-write'"
}

pgc_kill_primary() {
    local n pid
    n="$(primary_node)" || die "no node is primary now"
    pid="$(head -n 1 "$(node_dir "$n")/data/postmaster.pid")"
    pid_matches "$pid" postgres || die "pg$n's postmaster.pid names no running postgres ($pid)"
    kill -KILL "$pid"
    say "killed the postmaster of pg$n (pid $pid, 127.0.0.1:$(pg_node_port "$n")) at $(date -u +%H:%M:%S.%N | cut -c1-12)"
}

# A base backup of the primary (pg_basebackup, with the WAL it needs) under var/pgcluster/backups/<UTC time>;
# with the WAL archive (var/pgcluster/wal-archive) it restores to any later point in time.
pgc_backup() {
    local n dir
    n="$(primary_node)" || die "no node is primary now"
    dir="$PGC_DIR/backups/$(date -u +%Y%m%dT%H%M%SZ)"
    mkdir -p "$PGC_DIR/backups"
    chown postgres:postgres "$PGC_DIR/backups"
    PGPASSWORD="$PGC_REPLICATION_PASSWORD" "${AS_POSTGRES[@]}" "$(pg_bin_dir)/pg_basebackup" -h 127.0.0.1 \
        -p "$(pg_node_port "$n")" -U replicator -D "$dir" -X stream -c fast -l "parkwarden $(basename "$dir")" \
        >>"$LOG_DIR/pgcluster-backup.log" 2>&1 || die "pg_basebackup from pg$n failed; see $LOG_DIR/pgcluster-backup.log"
    echo "$dir"
}

pgc_main() {
    local command="${1:-}"
    (($# > 0)) && shift
    case "$command" in
        install) make_dirs; pgc_install ;;
        start | stop)
            make_dirs
            exec 9>"$RUN_DIR/pgcluster.lock"  # fd 9: start_background does not hand it down
            flock 9
            "pgc_$command"
            ;;
        status) make_dirs; pgc_status ;;
        env) pgc_env ;;
        kill-primary) pgc_kill_primary ;;
        backup) pgc_backup ;;
        primary)
            local n
            n="$(primary_node)" || die "no node is primary now"
            echo "pg$n 127.0.0.1:$(pg_node_port "$n")"
            ;;
        *)
            sed -n '2,19p' "$PGCLUSTER_SCRIPT" | sed 's/^# \{0,1\}//' >&2
            exit 2
            ;;
    esac
}

pgc_main "$@"
