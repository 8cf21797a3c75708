#!/usr/bin/env bash
# CPU cost per proxied request: agentwall (policy + audit, reverse route) vs nginx
# (proxy_pass), both in front of the same nginx upstream on loopback. Measures the proxy
# process's user+system CPU time over a fixed wrk run and divides by requests served.
#
# Needs: nginx, wrk (apt-get install -y nginx-light wrk), a release build
# (cargo build --release). Usage: benches/load.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-32}
work=$(mktemp -d)
[ -n "${KEEP:-}" ] || trap 'kill $(jobs -p) 2>/dev/null; [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null; rm -rf "$work"' EXIT

cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream origin { server 127.0.0.1:18190; keepalive 64; }
  server { listen 127.0.0.1:18190; location / { return 200 "upstream ok"; } }
  server {
    listen 127.0.0.1:18191;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGINX
nginx -c "$work/nginx.conf" -p "$work"

mkdir -p "$work/policies"
cat > "$work/policies/allow.toml" <<'POLICY'
[[rules]]
id = "origin"
effect = "allow"
hosts = ["127.0.0.1"]
methods = ["GET"]
paths = ["/up/**", "/**"]
POLICY
cat > "$work/agentwall.toml" <<CONF
[proxy]
listen = ["127.0.0.1:18192"]
threads = 1
[admin]
listen = "127.0.0.1:18193"
[policies]
dir = "$work/policies"
[audit]
dir = "$work/audit"
[egress]
allow_cidrs = ["127.0.0.1/32"]
[[routes]]
prefix = "/up/"
upstream = "http://127.0.0.1:18190"
CONF
RUST_LOG=warn target/release/agentwall run --config "$work/agentwall.toml" 2>"$work/agentwall.log" &
aw=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:18193/health/ready >/dev/null && break; sleep 0.1; done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
nginx_worker() { pgrep -P "$(cat "$work/nginx.pid")" | head -1; }

measure() { # name pid url
  local name=$1 pid=$2 url=$3 before after reqs
  wrk -t1 -c"$conns" -d2s "$url" >/dev/null # warm up
  before=$(cpu_ticks "$pid")
  reqs=$(wrk -t1 -c"$conns" -d"${secs}s" "$url" | awk '/requests in/ {print $1}')
  after=$(cpu_ticks "$pid")
  local hz; hz=$(getconf CLK_TCK)
  awk -v n="$name" -v r="$reqs" -v t=$((after - before)) -v hz="$hz" -v s="$secs" \
    'BEGIN { printf "%-28s %9d req  %8.0f req/s  %6.1f us CPU/request\n", n, r, r/s, t/hz*1e6/r }'
}

echo "wrk: ${secs}s, ${conns} connections, one worker thread each"
# nginx runs its upstream server in the same worker: its figure includes serving the origin.
measure "nginx proxy_pass (+origin)" "$(nginx_worker)" http://127.0.0.1:18191/x
measure "agentwall reverse route" "$aw" http://127.0.0.1:18192/up/x
echo "nginx origin alone (to subtract):"
measure "nginx origin" "$(nginx_worker)" http://127.0.0.1:18190/x
records=$(curl -s 'http://127.0.0.1:18193/v1/logs?limit=1' | grep -o '"id":[0-9]*' | head -1)
echo "agentwall audit: newest record $records"
