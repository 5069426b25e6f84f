#!/usr/bin/env bash
# Local services and environment for sealpool: RabbitMQ + Redis on 127.0.0.1, a venv.
# Sourced by deploy/demo and deploy/test; run directly: deploy/local.sh services|venv
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SEALPOOL_VENV:-$ROOT/.venv}"
AMQP_PORT=5672
REDIS_PORT=6379
REDIS_DIR="$ROOT/.sealpool/redis"
RABBITMQ_NOFILE=65536

say() { printf '\033[1m[sealpool]\033[0m %s\n' "$*" >&2; }

port_open() {  # port_open PORT: is something listening on 127.0.0.1:PORT?
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && exec 3>&- 3<&- 2>/dev/null
}

apt_install() {  # install Debian packages that are missing (root only)
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]} (Debian packages)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

docker_engine() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

wait_port() {  # wait_port PORT NAME SECONDS
  for _ in $(seq 1 "$3"); do port_open "$1" && return 0; sleep 1; done
  say "$2 did not come up on 127.0.0.1:$1"; return 1
}

ensure_services() {
  if port_open $AMQP_PORT && port_open $REDIS_PORT; then volatile_redis_check; return 0; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt_install rabbitmq-server redis-server
    if ! port_open $REDIS_PORT; then
      # AOF, fsynced every second: sector records, numbers and fencing survive a restart
      # (miner-publisher run refuses a Redis that persists nothing).
      say "starting redis-server (AOF in $REDIS_DIR)"
      mkdir -p "$REDIS_DIR"
      redis-server --daemonize yes --bind 127.0.0.1 --port $REDIS_PORT --dir "$REDIS_DIR" \
        --appendonly yes --appendfsync everysec --save "" >/dev/null
    fi
    if ! port_open $AMQP_PORT; then
      say "starting rabbitmq-server (takes a few seconds)"
      # A shell's default 1,024 descriptors wedge the broker at ~400 queues (new
      # connections hang in the handshake): raise the limit for the broker only.
      ( ulimit -n $RABBITMQ_NOFILE 2>/dev/null || ulimit -n "$(ulimit -Hn)"
        rabbitmq-server -detached >/dev/null 2>&1 ) || true
      rabbitmqctl await_startup --timeout 120 >/dev/null 2>&1 || true
    fi
  elif docker_engine; then
    say "starting RabbitMQ and Redis with docker compose"
    docker compose -f "$ROOT/deploy/compose.yml" up -d rabbitmq redis
  else
    say "RabbitMQ (127.0.0.1:$AMQP_PORT) and Redis (127.0.0.1:$REDIS_PORT) are not running."
    say "Install and start them: as root on Debian/Ubuntu, rerun this script;"
    say "with Docker: docker compose -f deploy/compose.yml up -d rabbitmq redis;"
    say "or point SEALPOOL_AMQP_URL / SEALPOOL_REDIS_URL at running servers."
    return 1
  fi
  wait_port $REDIS_PORT Redis 30 && wait_port $AMQP_PORT RabbitMQ 120 && volatile_redis_check
}

volatile_redis_check() {
  # A Redis started earlier without persistence (before local.sh enabled AOF) is fine for
  # the demo and tests only: say so, and let this shell's miner-publisher run accept it.
  command -v redis-cli >/dev/null 2>&1 || return 0
  local aof save run_id
  aof="$(redis-cli -p $REDIS_PORT config get appendonly 2>/dev/null | sed -n 2p)"
  save="$(redis-cli -p $REDIS_PORT config get save 2>/dev/null | sed -n 2p)"
  [ "$aof" = "no" ] && [ -z "$save" ] || return 0
  say "Redis on 127.0.0.1:$REDIS_PORT persists nothing (started without AOF): fine for the"
  say "demo and tests only; restart it with deploy/local.sh services to keep sector state"
  export SEALPOOL_MINER_ALLOW_VOLATILE_REDIS=1
  # Its data dies with the process: remember miner state per Redis run, not for ever.
  run_id="$(redis-cli -p $REDIS_PORT info server 2>/dev/null | sed -n 's/^run_id:\([0-9a-f]*\).*/\1/p')"
  export SEALPOOL_MINER_STATE_DIR="${SEALPOOL_MINER_STATE_DIR:-$ROOT/.sealpool/state/volatile-${run_id:-unknown}}"
}

ensure_venv() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt_install python3-venv python3-dev gcc
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    python3 -m venv "$VENV"
  fi
  if ! "$VENV/bin/python" -c "import broker_topology, labeler_c._labeler, pytest" 2>/dev/null \
      || [ "$ROOT/pyproject.toml" -nt "$VENV/.sealpool-installed" ] \
      || [ -n "$(find "$ROOT/labeler_c" -newer "$VENV/.sealpool-installed" \( -name '*.c' -o -name '*.h' -o -name '*.cdef' \) 2>/dev/null | head -1)" ]; then
    say "installing sealpool into $VENV (builds the C kernel)"
    "$VENV/bin/pip" install -q --upgrade pip setuptools wheel cffi >/dev/null
    "$VENV/bin/pip" install -q --no-build-isolation -e "$ROOT[test]"
    touch "$VENV/.sealpool-installed"
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-}" in
    services) ensure_services ;;
    venv) ensure_venv ;;
    *) echo "usage: deploy/local.sh services|venv" >&2; exit 2 ;;
  esac
fi
