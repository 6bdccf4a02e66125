#!/bin/bash
# DNS discovery at scale: N instances (default 1000) behind one SRV name, served by the test DNS
# server (tests/dns/dns_server.py, over TCP: the answer is ~30 KB). The zone flips between N and
# N-1 records ROUNDS times (default 10); every flip makes sluice resolve the SRV name and its N
# targets (A and AAAA each) and publish a new set. Prints sluice's own figures from its
# registry_published events: resolve_us (SRV query to the last target's answer) and publish_us
# (owner merge and set publication), min / median / max.
#   bench/dns_srv_scale.sh BUILD_DIR [N] [ROUNDS]
set -euo pipefail
build=${1:?build directory}
n=${2:-1000}
rounds=${3:-10}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

zone() { # zone COUNT
    python3 - "$1" >"$work/zone.tmp" <<'PY'
import json, sys
n = int(sys.argv[1])
rec = {"_api._tcp.bench.": {"SRV": [[0, 1 + i % 10, 20000 + i, "t%d.bench." % i] for i in range(n)]}}
for i in range(n):
    rec["t%d.bench." % i] = {"A": ["127.0.0.1"]}
print(json.dumps({"ttl": 1, "records": rec}))
PY
    mv "$work/zone.tmp" "$work/zone.json"
}

zone "$n"
python3 "$here/tests/dns/dns_server.py" --zone "$work/zone.json" >"$work/dns.out" &
for _ in $(seq 100); do grep -q listening "$work/dns.out" && break; sleep 0.1; done
port=$(sed -n 's/listening 127.0.0.1://p' "$work/dns.out")
cat >"$work/sluice.ini" <<INI
[sluice]
workers = 1
[listener:web]
bind = 127.0.0.1:0
service = api
[service:api]
discovery = dns
dns_name = _api._tcp.bench.
dns_servers = 127.0.0.1:$port
dns_min_interval = 200ms
dns_max_interval = 1s
INI
sed -i "s/127.0.0.1:0/127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')/" "$work/sluice.ini"
"$build/sluice" -c "$work/sluice.ini" 2>"$work/sluice.log" &
for r in $(seq "$rounds"); do
    want=$((r + 1))
    for _ in $(seq 300); do
        [ "$(grep -c registry_published "$work/sluice.log" || true)" -ge "$r" ] && break
        sleep 0.1
    done
    zone $((r % 2 == 1 ? n - 1 : n))
done
for _ in $(seq 300); do
    [ "$(grep -c registry_published "$work/sluice.log" || true)" -ge "$((rounds + 1))" ] && break
    sleep 0.1
done
grep registry_published "$work/sluice.log" | python3 -c '
import json, statistics, sys
ev = [json.loads(l) for l in sys.stdin]
for key in ("resolve_us", "publish_us"):
    v = sorted(e[key] for e in ev)
    print("%-10s over %d publishes of %d..%d instances: min %d  median %d  max %d" % (
        key, len(v), min(e["instances"] for e in ev), max(e["instances"] for e in ev),
        v[0], statistics.median(v), v[-1]))'
