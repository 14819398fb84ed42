#!/usr/bin/env bash
# Load check of the API (a benchmark, not a test): wrk against GET /v1/tasks and against the
# heartbeats of 1,000 simulated runners, while the dispatcher keeps dispatching no-op tasks.
#
#   swift build -c release && Benchmarks/api-load.sh [seconds per run, default 10]
#
# Needs wrk, curl and python3 (apt-get install wrk curl).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
necro="$root/.build/release/necro"
seconds="${1:-10}"
work="$(mktemp -d /tmp/necro-api-load.XXXXXX)"
trap 'kill $(cat "$work/serve.pid" 2>/dev/null) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
token=load-admin-token

# 1,000 runners that hold a task each (they sleep, their lease is long) and a pool that goes
# through 100,000 no-op tasks, two at a time, all along.
cat > necro.yaml <<YAML
dispatcher:
  heartbeat_timeout: 600
  graceful_shutdown_timeout: 1
agent_pools:
  holders:
    max_concurrency: 1000
    config: {command: [/bin/sleep, "600"]}
  workers:
    max_concurrency: 2
    config: {command: [/bin/true]}
skill_mapping:
  hold: [holders]
  default: [workers]
YAML
python3 - <<'PY'
import json
json.dump({"spec_name": "holders", "tasks": [{"id": f"h{i}", "title": f"Holder {i}", "required_skill": "hold"} for i in range(1000)]}, open("holders.json", "w"))
json.dump({"spec_name": "work", "tasks": [{"id": f"w{i}", "title": f"Work {i}"} for i in range(100000)]}, open("work.json", "w"))
PY

NECRO_ADMIN_TOKEN=$token "$necro" serve --listen 127.0.0.1:0 2> serve.err > /dev/null &
echo $! > serve.pid
for _ in $(seq 200); do grep -q "listening on" serve.err 2>/dev/null && break; sleep 0.05; done
url=$(sed -n 's/^necro serve: listening on //p' serve.err)
post() { curl -sf -X POST -H "Authorization: Bearer $token" -H "Content-Type: application/json" --data-binary "@$1" "$url/v1/tasksets" > /dev/null; }
post holders.json
for _ in $(seq 600); do
    [ "$(curl -sf -H "Authorization: Bearer $token" "$url/v1/pools" | python3 -c 'import json,sys; print([p["running"] for p in json.load(sys.stdin) if p["name"]=="holders"][0])')" = 1000 ] && break
    sleep 0.1
done
post work.json

# Each runner's token is HMAC-SHA256 of its id under the registry's runner key: what the
# dispatcher gave it in NECRO_RUNNER_TOKEN.
curl -sf -H "Authorization: Bearer $token" "$url/v1/runners?running=true" | python3 -c '
import hmac, hashlib, json, sys
key = open(".necro/runner.key", "rb").read()
runners = [r for r in json.load(sys.stdin) if r["pool"] == "holders"]
with open("runners.lua", "w") as out:
    out.write("runners = {\n")
    for r in runners:
        t = hmac.new(key, r["id"].encode(), hashlib.sha256).hexdigest()
        out.write("  {\"%s\", \"%s\"},\n" % (r["id"], t))
    out.write("}\n")
print(len(runners), "simulated runners", file=sys.stderr)
'
cat >> runners.lua <<'LUA'
counter = 0
request = function()
  counter = counter + 1
  local r = runners[(counter % #runners) + 1]
  return wrk.format("POST", "/v1/runners/" .. r[1] .. "/heartbeat", {["Authorization"] = "Bearer " .. r[2]}, "")
end
response = function(status)
  if status ~= 204 then io.stderr:write("unexpected status " .. status .. "\n") end
end
LUA

done_work() { curl -sf -H "Authorization: Bearer $token" "$url/v1/tasksets" | python3 -c 'import json,sys; print([s["counts"]["done"] for s in json.load(sys.stdin) if s["name"]=="work"][0])'; }
measure() {
    local label="$1"; shift
    local before after
    before=$(done_work)
    wrk -t2 -c64 -d"${seconds}s" --latency "$@" > wrk.out
    after=$(done_work)
    printf '%-48s %10s req/s   p50 %8s   p99 %8s   meanwhile %5d no-op tasks done (%d/s)\n' "$label" \
        "$(awk '/Requests\/sec/ {print $2}' wrk.out)" "$(awk '$1=="50%" {print $2}' wrk.out)" "$(awk '$1=="99%" {print $2}' wrk.out)" \
        $((after - before)) $(((after - before) / seconds))
    grep -E "Non-2xx|Socket errors" wrk.out || true
}
echo "machine: $(nproc) cores; wrk -t2 -c64 -d${seconds}s; 1,000 runners running, 101,000 tasks in the registry"
before=$(done_work); sleep "$seconds"; after=$(done_work)
printf '%-48s %46s %5d no-op tasks done (%d/s)\n' "no load" "" $((after - before)) $(((after - before) / seconds))
measure "GET /v1/tasks?spec=holders (1,000 tasks)" -H "Authorization: Bearer $token" "$url/v1/tasks?spec=holders"
measure "GET /v1/tasks?state=running&limit=50" -H "Authorization: Bearer $token" "$url/v1/tasks?state=running&limit=50"
measure "POST heartbeat, 1,000 runners' own tokens" -s runners.lua "$url"
