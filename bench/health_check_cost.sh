#!/usr/bin/env bash
# bench/health_check_cost.sh: what active health checks cost. 1,000 TCP forwards, each with the same 4
# loopback targets checked every second (4,000 checks a second), and the checking process's CPU time
# (utime + stime) over a window, as a percentage of one core. The targets accept and close in a
# process of their own, which is not counted.
#
#   bench/health_check_cost.sh            the Release daemon (build/release, or $PORTRELAY), forwards
#                                         POSTed over its API
#   bench/health_check_cost.sh --harness  the checkers alone: engine_tests' hidden case "[.cost]"
#                                         (BUILD_DIR, default build/release-tests, is built with tests)
#   bench/health_check_cost.sh --floor    the same 4,000 connects a second from a bare C loop
#                                         (bench/connect_floor.c): the kernel's share, the floor
# SECONDS_WINDOW (default 30) is the measurement window. Needs python3 and ulimit -n of 10,000 or more.
set -euo pipefail
cd "$(dirname "$0")/.."
window=${SECONDS_WINDOW:-30}

if [ "${1:-}" = --floor ]; then  # the same connects from a bare C loop: what the kernel's part costs
  cc -O2 -o "${TMPDIR:-/tmp}/connect_floor" bench/connect_floor.c
  exec "${TMPDIR:-/tmp}/connect_floor" "$window"
fi

if [ "${1:-}" = --harness ]; then
  dir=${BUILD_DIR:-build/release-tests}
  [ -f "$dir/CMakeCache.txt" ] ||
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON -DPORTRELAY_BROWSER_TESTS=OFF >/dev/null
  cmake --build "$dir" -j2 --target engine_tests >/dev/null
  COST_SECONDS=$window "$dir/tests/engine_tests" "[.cost]" --success | grep -E '^health checks:|passed|failed'
  exit "${PIPESTATUS[0]}"
fi

binary=${PORTRELAY:-build/release/portrelay}
if [ -z "${PORTRELAY:-}" ]; then
  cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
  cmake --build build/release -j2 --target portrelay >/dev/null
fi

python3 - "$window" "$binary" <<'EOF'
import json, os, re, socket, subprocess, sys, tempfile, time, urllib.request

window = int(sys.argv[1])
tmp = tempfile.mkdtemp(prefix="portrelay-health-cost-")

# The 4 targets: a child process that accepts and closes every connection.
listeners = []
for _ in range(4):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4096)
    listeners.append(s)
ports = [s.getsockname()[1] for s in listeners]
targets_pid = os.fork()
if targets_pid == 0:
    import selectors
    sel = selectors.DefaultSelector()
    for s in listeners:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            try:
                while True:
                    key.fileobj.accept()[0].close()
            except BlockingIOError:
                pass
for s in listeners:
    s.close()

log = open(os.path.join(tmp, "daemon.log"), "w+")
daemon = subprocess.Popen([sys.argv[2], "--db", os.path.join(tmp, "p.db"), "--api", "127.0.0.1:0",
                           "--log-level", "warn"], stdout=log, stderr=subprocess.STDOUT)
try:
    # --log-level warn hides the start-up line: find the API's port from the daemon's sockets instead.
    api = None
    for _ in range(300):
        out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
        m = re.search(r"127\.0\.0\.1:(\d+)\s.*pid=%d," % daemon.pid, out)
        if m:
            api = "http://127.0.0.1:%s" % m.group(1)
            break
        time.sleep(0.1)
    if not api:
        sys.exit("the daemon did not start: " + open(log.name).read())

    def call(method, path, body=None):
        req = urllib.request.Request(api + path, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read() or b"null")

    spec = {"protocol": "tcp", "listen_host": "127.0.0.1", "listen_port": 0,
            "targets": [{"host": "127.0.0.1", "port": p} for p in ports],
            "health_check": {"interval_s": 1, "timeout_s": 1, "rise": 2, "fall": 3}}
    for i in range(1000):
        call("POST", "/api/v1/forwards", dict(spec, name="f%d" % i))

    def all_up():
        forwards = call("GET", "/api/v1/forwards")
        forwards = forwards.get("forwards", forwards) if isinstance(forwards, dict) else forwards
        health = [t.get("health") for f in forwards for t in (f.get("stats") or {}).get("targets") or []]
        return len(health) == 4000 and all(h == "up" for h in health)

    deadline = time.time() + 120
    while not all_up():
        if time.time() > deadline:
            sys.exit("the 4,000 targets were not all up within 2 minutes: does this build run active checks?")
        time.sleep(1)

    def cpu():
        fields = open("/proc/%d/stat" % daemon.pid).read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    c0, t0 = cpu(), time.monotonic()
    time.sleep(window)
    used, wall = cpu() - c0, time.monotonic() - t0
    print("health checks: 1000 forwards x 4 targets, interval 1 s: %.2f s CPU in %.1f s = %.1f %% of one core"
          % (used, wall, 100 * used / wall))
finally:
    daemon.terminate()
    daemon.wait()
    os.kill(targets_pid, 9)
    os.waitpid(targets_pid, 0)
    subprocess.run(["rm", "-rf", tmp])
EOF
