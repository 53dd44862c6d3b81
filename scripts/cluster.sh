#!/usr/bin/env bash
# A 3-node Kafka cluster on this machine, beside (not instead of) the single broker of scripts/services.sh.
#
#   scripts/cluster.sh start | stop | status | env
#   scripts/cluster.sh kill N       SIGKILL node N (1-3), as a crash would
#   scripts/cluster.sh start-node N start node N again (after kill or stop-node)
#   scripts/cluster.sh stop-node N  stop node N cleanly
#
# Three KRaft nodes, each broker and controller (a 3-voter quorum), SASL/SCRAM and ACLs as the single
# broker (the same users and passwords), every topic on 3 replicas with min.insync.replicas=2.
# Ports (127.0.0.1 only): node N's broker PW_CLUSTER_KAFKA_PORT+N-1 (default 39192, 39193, 39194),
# its controller PW_CLUSTER_KAFKA_PORT+10+N-1. Data, logs and PID files under var/cluster (PW_VAR_DIR/cluster).
# `eval "$(scripts/cluster.sh env)"` points the pipeline at it (PW_KAFKA_BOOTSTRAP with the three
# brokers, PW_TOPIC_REPLICATION_FACTOR=3, PW_TOPIC_MIN_INSYNC_REPLICAS=2); PostgreSQL and Kannel stay those
# of scripts/services.sh. Each JVM takes -Xmx512m (about 0.7 GiB resident): the cluster needs ~2 GiB.

set -euo pipefail
CLUSTER_SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/cluster.sh"
# shellcheck source=services.sh
source "$(dirname "$CLUSTER_SCRIPT")/services.sh"  # its helpers and settings; its main() runs only when executed

CLUSTER_DIR="$VAR_DIR/cluster"
CLUSTER_BASE_PORT="${PW_CLUSTER_KAFKA_PORT:-39192}"
NODES=(1 2 3)
node_port() { echo $((CLUSTER_BASE_PORT + $1 - 1)); }
node_controller_port() { echo $((CLUSTER_BASE_PORT + 10 + $1 - 1)); }
node_dir() { echo "$CLUSTER_DIR/kafka-$1"; }
node_name() { echo "cluster-kafka-$1"; }
bootstrap_servers() {
    local n list=()
    for n in "${NODES[@]}"; do list+=("127.0.0.1:$(node_port "$n")"); done
    (IFS=,; echo "${list[*]}")
}

node_write_config() {
    local n="$1" dir voters="" m
    dir="$(node_dir "$n")"
    mkdir -p "$dir"
    for m in "${NODES[@]}"; do voters+="${voters:+,}$m@127.0.0.1:$(node_controller_port "$m")"; done
    render_template "$TEMPLATE_DIR/kafka-cluster-node.properties.in" "$dir/server.properties" \
        NODE_ID "$n" VOTERS "$voters" \
        KAFKA_PORT "$(node_port "$n")" KAFKA_CONTROLLER_PORT "$(node_controller_port "$n")" \
        KAFKA_DATA_DIR "$dir/data" KAFKA_USER "$KAFKA_USER" \
        KAFKA_BROKER_USER "$KAFKA_BROKER_USER" KAFKA_BROKER_PASSWORD "$KAFKA_BROKER_PASSWORD" \
        KAFKA_CONTROLLER_PASSWORD "$KAFKA_CONTROLLER_PASSWORD"
    chmod 600 "$dir/server.properties"
    render_template "$TEMPLATE_DIR/kafka-log4j.properties.in" "$dir/log4j.properties" \
        KAFKA_LOG_FILE "$LOG_DIR/$(node_name "$n").log"
}

# All three nodes share one cluster id and the same bootstrap SCRAM users.
node_format() {
    local n="$1" dir
    dir="$(node_dir "$n")"
    [[ -f "$dir/data/meta.properties" ]] && return 0
    [[ -f "$CLUSTER_DIR/cluster-id" ]] || kafka_java kafka.tools.StorageTool random-uuid </dev/null >"$CLUSTER_DIR/cluster-id"
    kafka_java kafka.tools.StorageTool format -t "$(cat "$CLUSTER_DIR/cluster-id")" -c "$dir/server.properties" -g \
        --add-scram "$KAFKA_MECHANISM=[name=$KAFKA_BROKER_USER,password=$KAFKA_BROKER_PASSWORD]" \
        --add-scram "$KAFKA_MECHANISM=[name=$KAFKA_USER,password=$KAFKA_PASSWORD]" \
        </dev/null >>"$LOG_DIR/cluster-storage.log" 2>&1 ||
        fail_start "$(node_name "$n")" "$LOG_DIR/cluster-storage.log" "formatting the storage of node $n failed"
}

node_pid() { running_pid "$(node_name "$1")" "$(node_dir "$1")/server.properties"; }

start_node() {
    local n="$1" pid
    if pid="$(node_pid "$n")"; then
        say "node $n already running (pid $pid, 127.0.0.1:$(node_port "$n"))"
        return 0
    fi
    require_port_free "node $n" "$(node_port "$n")"
    require_port_free "node $n" "$(node_controller_port "$n")"
    node_write_config "$n"
    node_format "$n"
    ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    say "starting node $n on 127.0.0.1:$(node_port "$n")..."
    start_background "$(node_name "$n")" "$LOG_DIR/$(node_name "$n").stdout.log" "$LOG_DIR/$(node_name "$n").stdout.log" \
        java -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
        -Djava.net.preferIPv4Stack=true -Dlog4j.configuration="file:$(node_dir "$n")/log4j.properties" \
        -cp "$KAFKA_LIBS/*" kafka.Kafka "$(node_dir "$n")/server.properties"
}

# Ready = logged in as the pipeline, the cluster lists its topics and names all three brokers.
cluster_ready() {
    timeout 60 java -Xmx256m -Dlog4j.configuration="file:$TEMPLATE_DIR/kafka-tools-log4j.properties" \
        -cp "$KAFKA_LIBS/*" kafka.admin.BrokerApiVersionsCommand \
        --bootstrap-server "$(bootstrap_servers)" --command-config "$KAFKA_CLIENT_CONFIG" </dev/null \
        >"$LOG_DIR/cluster-ready.log" 2>&1 || return 1
    (($(grep -c "^127.0.0.1:" "$LOG_DIR/cluster-ready.log") == ${#NODES[@]}))
}

cluster_start() {
    local n started deadline
    ensure_installed kafka
    mkdir -p "$CLUSTER_DIR"
    kafka_write_config  # the client login file (var/kafka/client.properties) the readiness check uses
    for n in "${NODES[@]}"; do start_node "$n"; done
    started="$(now)"
    deadline=$((started + KAFKA_READY_TIMEOUT))
    until cluster_ready; do
        for n in "${NODES[@]}"; do
            node_pid "$n" >/dev/null || fail_start "node $n" "$LOG_DIR/$(node_name "$n").log" "node $n exited"
        done
        (($(now) < deadline)) || fail_start cluster "$LOG_DIR/cluster-ready.log" "the 3 brokers did not all answer within ${KAFKA_READY_TIMEOUT}s"
        sleep 2
    done
    say "cluster ready in $(($(now) - started))s: $(bootstrap_servers)"
}

# Stops the nodes as Kafka's operators stop a KRaft cluster: one at a time, each broker waiting for its
# controlled shutdown (the controllers move its partitions' leaders to the others, then let it go) while a
# quorum of controllers (2 of 3) is left to approve it; then the last nodes of that quorum together: a
# combined node stops its broker before its controller, so their brokers' controlled shutdowns are approved
# while all their controllers still run. Stopped together (the old way), a broker whose approval came after
# the others' controllers had gone waited Kafka's 5 minutes for it (no controller quorum left to answer).
cluster_stop() {
    local quorum=$((${#NODES[@]} / 2 + 1)) running=() n started
    started="$(now)"
    for n in "${NODES[@]}"; do
        if node_pid "$n" >/dev/null; then running+=("$n"); else say "$(node_name "$n") is not running"; fi
    done
    while ((${#running[@]} > quorum)); do
        n="${running[0]}"
        running=("${running[@]:1}")
        stop_service "$(node_name "$n")" "$(node_dir "$n")/server.properties" "$KAFKA_STOP_TIMEOUT"
    done
    stop_last_nodes "$quorum" "${running[@]}"
    say "cluster stopped in $(($(now) - started))s"
}

# stop_last_nodes QUORUM N...: SIGTERM nodes N... together and wait for them. One still waiting for its
# controlled shutdown's approval CLUSTER_APPROVAL_GRACE seconds after fewer than QUORUM nodes are left would
# wait Kafka's 5 minutes for an answer no controller can give: it gets SIGKILL (its logs are recovered at
# its next start, as after a crash; every acknowledged write is on 2 replicas anyway).
CLUSTER_APPROVAL_GRACE=10
stop_last_nodes() {
    local quorum="$1" n pid name log deadline quorum_gone=""
    shift
    local -A pids=() log_from=()
    for n in "$@"; do
        pid="$(node_pid "$n")" || continue
        pids[$n]="$pid"
        log_from[$n]=$(($(stat -c %s "$LOG_DIR/$(node_name "$n").log" 2>/dev/null || echo 0) + 1))
        say "stopping $(node_name "$n") (pid $pid)..."
        kill -TERM "$pid" 2>/dev/null || true
    done
    deadline=$(($(now) + KAFKA_STOP_TIMEOUT))
    while ((${#pids[@]} > 0)); do
        for n in "${!pids[@]}"; do
            kill -0 "${pids[$n]}" 2>/dev/null && continue
            rm -f "$(pid_file "$(node_name "$n")")"
            say "$(node_name "$n") stopped"
            unset "pids[$n]"
        done
        ((${#pids[@]} < quorum)) && quorum_gone="${quorum_gone:-$(now)}"
        for n in "${!pids[@]}"; do
            name="$(node_name "$n")" log="$LOG_DIR/$(node_name "$n").log"
            if (($(now) >= deadline)); then
                warn "$name (pid ${pids[$n]}) did not stop within ${KAFKA_STOP_TIMEOUT}s; sending SIGKILL"
            elif [[ -n "$quorum_gone" ]] && (($(now) - quorum_gone >= CLUSTER_APPROVAL_GRACE)) &&
                ! grep -q "asked us to exit controlled shutdown" <(tail -c "+${log_from[$n]}" "$log" 2>/dev/null); then
                warn "$name (pid ${pids[$n]}): its controlled shutdown can no longer be approved (no quorum of controllers left); sending SIGKILL"
            else
                continue
            fi
            kill -KILL "${pids[$n]}" 2>/dev/null || true
        done
        sleep 0.2
    done
}

cluster_status() {
    local n pid
    for n in "${NODES[@]}"; do
        pid="$(node_pid "$n")" || pid=""
        print_status_line "node-$n" "$pid" "127.0.0.1:$(node_port "$n") controller :$(node_controller_port "$n")"
    done
}

cluster_env() {
    cmd_env | grep -v '^export PW_KAFKA_BOOTSTRAP='
    echo "export PW_KAFKA_BOOTSTRAP=$(bootstrap_servers)"
    echo "export PW_TOPIC_REPLICATION_FACTOR=3"
    echo "export PW_TOPIC_MIN_INSYNC_REPLICAS=2"
}

node_arg() {
    [[ "${1:-}" =~ ^[123]$ ]] || die "give a node number, 1 to 3"
    echo "$1"
}

cluster_main() {
    local command="${1:-}"
    (($# > 0)) && shift
    make_dirs
    mkdir -p "$CLUSTER_DIR"
    case "$command" in
        start) cluster_start ;;
        stop) cluster_stop ;;
        status) cluster_status ;;
        env) cluster_env ;;
        kill)
            local n pid
            n="$(node_arg "${1:-}")"
            pid="$(node_pid "$n")" || die "node $n is not running"
            kill -KILL "$pid"
            say "node $n (pid $pid) killed"
            ;;
        start-node) start_node "$(node_arg "${1:-}")" ;;
        stop-node)
            local n
            n="$(node_arg "${1:-}")"
            stop_service "$(node_name "$n")" "$(node_dir "$n")/server.properties" "$KAFKA_STOP_TIMEOUT"
            ;;
        *)
            sed -n '2,19p' "$CLUSTER_SCRIPT" | sed 's/^# \{0,1\}//' >&2
            exit 2
            ;;
    esac
}

cluster_main "$@"
