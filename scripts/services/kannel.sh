# Part of scripts/services.sh (sourced by it, with its settings): Kannel (bearerbox, fakesmsc, smsbox).
# shellcheck shell=bash

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

