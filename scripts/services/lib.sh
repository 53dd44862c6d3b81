# Part of scripts/services.sh (sourced by it, with its settings): helpers, install, the loopback check.
# shellcheck shell=bash

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

