# Part of scripts/services.sh (sourced by it, with its settings): Kafka, the single broker.
# shellcheck shell=bash

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

# Ready = an admin client logged in as the pipeline can fetch metadata (list topics). The probe's output
# is kept in var/log/kafka-ready.log: a refused login is told apart from a broker still starting.
kafka_ready() {
    port_open "$KAFKA_PORT" || return 1
    timeout 30 java -Xmx256m -Dlog4j.configuration="file:$TEMPLATE_DIR/kafka-tools-log4j.properties" \
        -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "127.0.0.1:$KAFKA_PORT" --command-config "$KAFKA_CLIENT_CONFIG" --list \
        </dev/null >"$LOG_DIR/kafka-ready.log" 2>&1
}

kafka_login_refused() {
    grep -q "SaslAuthenticationException\|invalid credentials" "$LOG_DIR/kafka-ready.log" 2>/dev/null
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
        if kafka_login_refused; then
            fail_start kafka "$LOG_DIR/kafka-ready.log" "the broker (pid $pid, left running) refuses the login of $KAFKA_USER (SCRAM, $KAFKA_MECHANISM): its SCRAM users are gone (Kafka 3.9 loses them all on a restart after a SCRAM user was deleted, which parkwarden no longer does; README, "Guarantees"). This is a development broker: scripts/services.sh stop kafka && rm -rf ${KAFKA_DATA_DIR#"$REPO_ROOT"/} && ./dev demo (topics are made again)"
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

