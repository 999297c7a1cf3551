#!/usr/bin/env bash
# A private Docker daemon and a loopback registry for the container-launch tests.
#
#   tools/docker_ci.sh install   apt-get docker.io + docker-registry + debootstrap (skipped when present)
#   tools/docker_ci.sh up        start dockerd on its own socket and the registry on 127.0.0.1:5000
#   tools/docker_ci.sh down      stop both, remove leftover batchsafe containers, check both are gone
#   tools/docker_ci.sh env       print DOCKER_HOST=... (what the tests read)
#
# Why a private daemon: CI has no system dockerd, no bridge and no iptables, so dockerd runs
# with --bridge=none --iptables=false (containers use --network=host) and vfs storage (no
# overlayfs inside the CI sandbox). Its data root lives under the batchsafe cache so built
# and pulled images survive between runs; its sockets and pid files live under a short
# runtime dir (unix socket paths are limited to 108 bytes).
set -euo pipefail

CACHE="${BATCHSAFE_CACHE:-$HOME/.cache/batchsafe}"
DATA="$CACHE/docker/data-root"
REG_DATA="$CACHE/docker/registry"
RUN="${BATCHSAFE_DOCKER_RUN:-/tmp/batchsafe-docker}"
SOCK="$RUN/docker.sock"
PIDFILE="$RUN/dockerd.pid"
REG_PIDFILE="$RUN/registry.pid"
REG_ADDR="127.0.0.1:5000"
export DOCKER_HOST="unix://$SOCK"

log() { echo "[docker_ci $(date +%H:%M:%S)] $*" >&2; }

install() {
    local need=()
    command -v dockerd >/dev/null || need+=(docker.io)
    command -v docker-registry >/dev/null || need+=(docker-registry)
    command -v debootstrap >/dev/null || need+=(debootstrap)
    if [ ${#need[@]} -eq 0 ]; then
        log "docker.io, docker-registry and debootstrap already installed"
        return 0
    fi
    log "installing ${need[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: installing ${need[*]} needs root (apt-get); install them and re-run" >&2
        exit 2
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

up() {
    mkdir -p "$RUN" "$DATA" "$REG_DATA"
    if alive "$PIDFILE"; then
        log "dockerd already running (pid $(cat "$PIDFILE"))"
    else
        rm -f "$SOCK" "$PIDFILE"
        # setsid: the daemon must not die with the make process group on Ctrl-C before `down` runs.
        setsid dockerd --host "$DOCKER_HOST" --data-root "$DATA" --exec-root "$RUN/exec" --pidfile "$PIDFILE" \
            --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs \
            >"$RUN/dockerd.log" 2>&1 </dev/null &
        for _ in $(seq 1 300); do
            docker version --format '{{.Server.Version}}' >/dev/null 2>&1 && break
            sleep 0.1
        done
        if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
            echo "error: dockerd did not answer on $SOCK within 30 s; last lines of $RUN/dockerd.log:" >&2
            tail -20 "$RUN/dockerd.log" >&2
            exit 1
        fi
        log "dockerd $(docker version --format '{{.Server.Version}}') up on $SOCK"
    fi
    if alive "$REG_PIDFILE"; then
        log "registry already running (pid $(cat "$REG_PIDFILE"))"
    else
        cat >"$RUN/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $REG_DATA}
  delete: {enabled: true}
http: {addr: $REG_ADDR}
EOF
        setsid docker-registry serve "$RUN/registry.yml" >"$RUN/registry.log" 2>&1 </dev/null &
        echo $! >"$REG_PIDFILE"
        for _ in $(seq 1 100); do
            curl -sf "http://$REG_ADDR/v2/" >/dev/null 2>&1 && break
            sleep 0.1
        done
        if ! curl -sf "http://$REG_ADDR/v2/" >/dev/null; then
            echo "error: the registry did not answer on $REG_ADDR within 10 s:" >&2
            tail -20 "$RUN/registry.log" >&2
            exit 1
        fi
        log "registry up on $REG_ADDR (storage $REG_DATA)"
    fi
}

stop_pid() {  # pidfile, name: SIGTERM, wait up to 20 s, SIGKILL
    local f="$1" name="$2" pid
    alive "$f" || { rm -f "$f"; return 0; }
    pid="$(cat "$f")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) ignored SIGTERM for 20 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$f"
}

down() {
    if alive "$PIDFILE"; then
        # Containers the tests or a killed run left behind (label set by the launcher).
        ids="$(docker ps -aq --filter label=batchsafe.launch 2>/dev/null || true)"
        if [ -n "$ids" ]; then
            log "removing leftover batchsafe containers: $ids"
            docker rm -f $ids >/dev/null 2>&1 || true
        fi
    fi
    stop_pid "$PIDFILE" dockerd
    stop_pid "$REG_PIDFILE" registry
    # The daemon's own containerd and shims must be gone too (they outlive a SIGKILLed dockerd).
    for _ in $(seq 1 100); do
        pgrep -f -- "$RUN/exec" >/dev/null || break
        sleep 0.1
    done
    local left=""
    alive "$PIDFILE" && left+=" dockerd"
    pgrep -f -- "$RUN/exec" >/dev/null && left+=" containerd($(pgrep -f -- "$RUN/exec" | tr '\n' ' '))"
    curl -sf "http://$REG_ADDR/v2/" >/dev/null 2>&1 && left+=" registry(on $REG_ADDR)"
    [ -S "$SOCK" ] && ! docker version >/dev/null 2>&1 && rm -f "$SOCK"
    if [ -n "$left" ]; then
        echo "error: still running after docker-down:$left" >&2
        exit 1
    fi
    log "dockerd and registry are stopped"
}

case "${1:-}" in
    install) install ;;
    up) up ;;
    down) down ;;
    env) echo "DOCKER_HOST=$DOCKER_HOST" ;;
    *) echo "usage: $0 install|up|down|env" >&2; exit 2 ;;
esac
