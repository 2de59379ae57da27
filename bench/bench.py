#!/usr/bin/env python3
"""portrelay side by side with the relays an operator would pick instead, in one run, as ratios.

Runs each measure against: direct (no relay), portrelay, HAProxy, nginx stream, rinetd and socat.
Every relay is started fresh for every repetition, on loopback, in its own process group, so its
CPU time (utime+stime of the group, plus reaped children) and memory (PSS) are read from /proc.
Prints one markdown table of medians with portrelay's ratio to the best peer, and writes it with
the machine and versions to bench/results/. Called by bench/run.sh, which installs the tools.
With --baseline OTHER_BINARY, another portrelay build (an earlier commit) runs as one more relay,
"baseline", interleaved with the others in every repetition, and a column gives portrelay's ratio
to it: a before/after comparison in one sitting, on a machine whose speed drifts by the minute.
With --policy, the same portrelay binary runs once more as the relay "policy", its forwards carrying
allow and deny lists of 1,024 prefixes each (the client admitted by the last allow entry), with a
column giving its ratio to plain portrelay: what the admission check costs per connection.
With --floor BINARY (bench/floor_relay.c, which run.sh builds and passes), the least a readiness
relay can do per connection runs as the relay "floor", with a "portrelay ÷ floor" column: how far
above what the kernel's own work allows portrelay is. With --pool, it runs once more in the new-connections measure as the relay "pool", its forward
carrying a pool of 4 targets and an allow list of 1,000 entries, with a "pool ÷ portrelay" column.
A relay or client tool that fails a measure shows "failed" in that cell and is listed under the
table; the run goes on. Round-trip ratios and targets compare the time each relay adds to direct's.
"""
import argparse
import datetime
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOOPBACK = "127.0.0.1"
PINNED_CPU = "0"


# ---------------------------------------------------------------- processes and /proc

def group_pids(pgid):
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5, pgrp
            pids.append(int(entry))
    return pids


def stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def group_cpu_seconds(pgid):
    """utime+stime of every live process of the group, plus cutime+cstime: what each has reaped from
    its children (socat's per-connection processes). A process is either live or reaped, never both."""
    total = 0
    for pid in group_pids(pgid):
        try:
            fields = stat_fields(pid)
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return total / CLK_TCK


def group_pss_kb(pgid):
    total = 0
    for pid in group_pids(pgid):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def wait_port(port, proto="tcp", timeout=10.0):
    """Until something listens on 127.0.0.1:port (TCP: accepts a connect; UDP: a bound socket)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proto == "tcp":
            try:
                socket.create_connection((LOOPBACK, port), timeout=0.2).close()
                return True
            except OSError:
                pass
        else:
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                return True  # taken: the relay has it
            finally:
                probe.close()
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {proto} {port}")


def free_port():
    """A port free for both TCP and UDP on loopback."""
    for _ in range(100):
        t = socket.socket()
        t.bind((LOOPBACK, 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind((LOOPBACK, port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise RuntimeError("no free port")


class Group:
    """A process started in a session of its own; stop() ends the whole group."""

    def __init__(self, argv, pinned=False, cwd=None, log=None):
        if pinned:
            argv = ["taskset", "-c", PINNED_CPU] + argv
        self.log = log or subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL,
                                     start_new_session=True, cwd=cwd)
        self.pgid = self.proc.pid

    def cpu(self):
        return group_cpu_seconds(self.pgid)

    def pss_kb(self):
        return group_pss_kb(self.pgid)

    def stop(self):
        try:
            os.killpg(self.pgid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.pgid, signal.SIGKILL)
            self.proc.wait()
        # Forked children (socat) may outlive the leader by a moment.
        deadline = time.time() + 5
        while group_pids(self.pgid) and time.time() < deadline:
            time.sleep(0.02)
        for pid in group_pids(self.pgid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ---------------------------------------------------------------- relays

def write_file(path, text):
    with open(path, "w") as f:
        f.write(text)


class Relay:
    """Forwards 127.0.0.1:listen to 127.0.0.1:target, TCP (and UDP where the relay has it)."""
    name = ""
    udp = True
    settings = ""
    groups = None  # the measure groups it takes part in (None: all)

    def __init__(self, work):
        self.work = work

    def start(self, listen, target, pinned, udp):
        raise NotImplementedError

    @staticmethod
    def launch(argv, listen, pinned):
        """Starts the relay's process group and returns it once `listen` accepts."""
        g = Group(argv, pinned)
        wait_port(listen)
        return g


class Direct(Relay):
    name = "direct"
    settings = "no relay: the client talks to the server"


class Portrelay(Relay):
    name = "portrelay"

    def __init__(self, work, binary, udp_listen_host=LOOPBACK, name="portrelay", fields=None, about="",
                 pool=0, groups=None):
        super().__init__(work)
        self.name = name
        self.binary = binary
        self.udp_listen_host = udp_listen_host  # clients still send to 127.0.0.1
        self.fields = fields or {}  # more fields for each forward
        self.pool = pool  # > 0: `targets` of this many addresses, 127.0.0.1 up, all on the target's port
        self.groups = groups
        self.settings = "release build, --workers 2 (one per CPU), defaults otherwise" + (
            f", UDP listening on {udp_listen_host}" if udp_listen_host != LOOPBACK else "") + (
            f" ({binary})" if name == "baseline" else "") + about

    def start(self, listen, target, pinned, udp):
        api = free_port()
        db = os.path.join(self.work, f"{self.name}-{listen}.db")
        g = Group([self.binary, "--db", db, "--api", f"{LOOPBACK}:{api}", "--workers", "2", "--log-level", "warn",
                   "--drain-timeout", "0"], pinned)
        wait_port(api)
        for proto in (["tcp", "udp"] if udp else ["tcp"]):
            host = self.udp_listen_host if proto == "udp" else LOOPBACK
            forward = {"protocol": proto, "listen_host": host, "listen_port": listen, **self.fields}
            if self.pool:
                forward["targets"] = [{"host": f"127.0.0.{i + 1}", "port": target} for i in range(self.pool)]
            else:
                forward.update({"target_host": LOOPBACK, "target_port": target})
            body = json.dumps(forward).encode()
            req = urllib.request.Request(f"http://{LOOPBACK}:{api}/api/v1/forwards", body,
                                         {"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=5).read()
        return g


def policy_lists(entries=1024):
    """Allow and deny lists of `entries` prefixes each that admit the bench's clients (127.0.0.1): the
    allow list's last entry is 127.0.0.0/8, the others and the deny list are disjoint /24s elsewhere."""
    allow = [f"10.{i // 256}.{i % 256}.0/24" for i in range(entries - 1)] + ["127.0.0.0/8"]
    deny = [f"172.{16 + i // 256}.{i % 256}.0/24" for i in range(entries)]
    return {"allow": allow, "deny": deny}


class Floor(Relay):
    """bench/floor_relay.c: the least a readiness relay can do per connection and datagram (no product)."""
    name = "floor"
    groups = {"conn", "rtt"}  # what it exists to show; its memory and bulk transfer say nothing
    settings = ("bench/floor_relay.c, 2 threads: one epoll each, the listener in both with EPOLLEXCLUSIVE, "
                "accept4, sockets registered once edge-triggered, no timers, no limits; UDP level-triggered, one datagram "
                "per wake-up; the floor, not a peer")

    def __init__(self, work, binary):
        super().__init__(work)
        self.binary = binary

    def start(self, listen, target, pinned, udp):
        return self.launch([self.binary, str(listen), str(target), "2"], listen, pinned)


class Haproxy(Relay):
    name = "haproxy"
    udp = False
    settings = "nbthread 2, mode tcp, option splice-auto, maxconn 7000 (the descriptor limit here is 20000)"

    def start(self, listen, target, pinned, udp):
        cfg = os.path.join(self.work, f"haproxy-{listen}.cfg")
        write_file(cfg, f"""global
    nbthread 2
    maxconn 7000
defaults
    mode tcp
    timeout connect 5s
    timeout client 10m
    timeout server 10m
    option splice-auto
listen relay
    bind {LOOPBACK}:{listen}
    server target {LOOPBACK}:{target}
""")
        return self.launch(["haproxy", "-db", "-f", cfg], listen, pinned)


class Nginx(Relay):
    name = "nginx"
    settings = "stream module, worker_processes 2, worker_connections 16000, reuseport, multi_accept"

    def start(self, listen, target, pinned, udp):
        prefix = os.path.join(self.work, f"nginx-{listen}")
        os.makedirs(prefix, exist_ok=True)
        udp_server = f"""    server {{
        listen {LOOPBACK}:{listen} udp reuseport;
        proxy_pass {LOOPBACK}:{target};
        proxy_timeout 60s;
    }}
""" if udp else ""
        cfg = os.path.join(prefix, "nginx.conf")
        write_file(cfg, f"""load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log crit;
events {{ worker_connections 16000; multi_accept on; }}
stream {{
    server {{
        listen {LOOPBACK}:{listen} reuseport backlog=4096;
        proxy_pass {LOOPBACK}:{target};
    }}
{udp_server}}}
""")
        return self.launch(["nginx", "-p", prefix, "-c", cfg, "-g", "daemon off;"], listen, pinned)


class Rinetd(Relay):
    name = "rinetd"
    settings = "one rule per protocol"

    def start(self, listen, target, pinned, udp):
        cfg = os.path.join(self.work, f"rinetd-{listen}.conf")
        write_file(cfg, f"{LOOPBACK} {listen} {LOOPBACK} {target}\n" +
                   (f"{LOOPBACK} {listen}/udp {LOOPBACK} {target}/udp\n" if udp else ""))
        return self.launch(["rinetd", "-f", "-c", cfg], listen, pinned)


class Socat(Relay):
    name = "socat"
    settings = "TCP-LISTEN,fork,reuseaddr,backlog=4096 (a process per connection); UDP-LISTEN,fork"

    def start(self, listen, target, pinned, udp):
        script = (f"socat TCP4-LISTEN:{listen},bind={LOOPBACK},fork,reuseaddr,backlog=4096 TCP4:{LOOPBACK}:{target} &")
        if udp:
            script += f" socat UDP4-LISTEN:{listen},bind={LOOPBACK},fork,reuseaddr UDP4:{LOOPBACK}:{target} &"
        script += " wait"
        return self.launch(["sh", "-c", script], listen, pinned)


# ---------------------------------------------------------------- servers the clients talk to

class Servers:
    """Backends on loopback, started once and shared by every relay."""

    def __init__(self, work, pinned=False):
        self.work = work
        self.groups = []

    def start(self, argv, port, proto="tcp", pinned=False):
        g = Group(argv, pinned)
        self.groups.append(g)
        wait_port(port, proto)
        return g

    def stop(self):
        for g in self.groups:
            g.stop()
        self.groups = []


def http_backend(work, port):
    """nginx answering "ok" on 127.0.0.1 to 127.0.0.4 (the pool relay's four targets), all on `port`."""
    prefix = os.path.join(work, "backend")
    os.makedirs(prefix, exist_ok=True)
    cfg = os.path.join(prefix, "nginx.conf")
    write_file(cfg, f"""worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log crit;
events {{ worker_connections 16000; }}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        listen 127.0.0.2:{port} backlog=4096;
        listen 127.0.0.3:{port} backlog=4096;
        listen 127.0.0.4:{port} backlog=4096;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
""")
    return ["nginx", "-p", prefix, "-c", cfg, "-g", "daemon off;"]


# ---------------------------------------------------------------- measures

def run(argv, timeout=60, pinned=False):
    if pinned:
        argv = ["taskset", "-c", PINNED_CPU] + argv
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def through(relay, target, pinned=False, udp=False):
    """(port the client uses, relay group or None)."""
    if isinstance(relay, Direct):
        return target, None
    listen = free_port()
    return listen, relay.start(listen, target, pinned, udp)


def iperf_tcp(relay, streams, seconds):
    port = free_port()
    server = Group(["iperf3", "-s", "-p", str(port), "-B", LOOPBACK])
    try:
        wait_port(port)
        listen, g = through(relay, port)
        try:
            cpu0 = g.cpu() if g else 0
            out = run(["iperf3", "-c", LOOPBACK, "-p", str(listen), "-t", str(seconds), "-P", str(streams), "-J"],
                      timeout=seconds + 30)
            cpu = (g.cpu() - cpu0) if g else None
            result = json.loads(out.stdout)
            end = result.get("end", {})
            if "error" in result or "sum_received" not in end:
                raise RuntimeError(f"iperf3: {result.get('error', 'no result')}")
            bps = end["sum_received"]["bits_per_second"]
            received = end["sum_received"]["bytes"]
            return {"gbps": bps / 1e9, "cpu_s_per_gb": (cpu / (received / 1e9)) if cpu is not None else None}
        finally:
            if g:
                g.stop()
    finally:
        server.stop()


def wrk_connections(relay, backend_port, seconds):
    listen, g = through(relay, backend_port)
    try:
        cpu0 = g.cpu() if g else 0
        out = run(["wrk", "-t", "2", "-c", "64", "-d", f"{seconds}s", "-H", "Connection: close",
                   f"http://{LOOPBACK}:{listen}/"], timeout=seconds + 30)
        cpu = (g.cpu() - cpu0) if g else None
        m = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
        total = re.search(r"(\d+) requests in", out.stdout)
        errors = re.search(r"Socket errors: (.*)", out.stdout)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
        if not m:
            raise RuntimeError("wrk: " + out.stdout + out.stderr)
        rate = float(m.group(1))
        n = int(total.group(1))
        return {"conn_per_s": rate, "cpu_us_per_conn": (cpu / n * 1e6) if cpu is not None and n else None,
                "errors": (errors.group(1) if errors else "") + (f" non-2xx {non2xx.group(1)}" if non2xx else "")}
    finally:
        if g:
            g.stop()


def sockperf_rtt(relay, tcp, seconds):
    port = free_port()
    proto = ["--tcp"] if tcp else []
    server = Group(["sockperf", "sr", "-i", LOOPBACK, "-p", str(port)] + proto, pinned=True)
    try:
        wait_port(port, "tcp" if tcp else "udp")
        if not tcp and not relay.udp:
            return None
        listen, g = through(relay, port, pinned=True, udp=not tcp)
        try:
            out = run(["sockperf", "pp", "-i", LOOPBACK, "-p", str(listen), "-t", str(seconds), "-m", "64"] + proto,
                      timeout=seconds + 30, pinned=True)
            m = re.search(r"avg-latency=\s*([\d.]+)", out.stdout + out.stderr)
            if not m:
                raise RuntimeError("sockperf: " + out.stdout + out.stderr)
            return {"rtt_us": 2 * float(m.group(1))}  # sockperf reports half the round trip
        finally:
            if g:
                g.stop()
    finally:
        server.stop()


def iperf_udp_loss(relay, seconds):
    if not relay.udp:
        return None
    port = free_port()
    server = Group(["iperf3", "-s", "-p", str(port), "-B", LOOPBACK])
    try:
        wait_port(port)
        listen, g = through(relay, port, udp=True)
        try:
            cpu0 = g.cpu() if g else 0
            out = run(["iperf3", "-c", LOOPBACK, "-p", str(listen), "-u", "-b", "1G", "-l", "1400", "-t", str(seconds),
                       "-J"], timeout=seconds + 30)
            cpu = (g.cpu() - cpu0) if g else None
            result = json.loads(out.stdout)
            if "error" in result:
                raise RuntimeError("iperf3: " + result["error"])
            s = result["end"]["sum"]
            if not 0 <= s["lost_percent"] <= 100:
                raise RuntimeError(f"iperf3 reports {s['lost_percent']:.1f}% loss: the relay mangles the UDP stream")
            carried = s["bytes"] * (1 - s["lost_percent"] / 100)  # what reached the server
            return {"loss_pct": s["lost_percent"],
                    "cpu_s_per_gb": (cpu / (carried / 1e9)) if cpu is not None and carried else None}
        finally:
            if g:
                g.stop()
    finally:
        server.stop()


def idle_memory(relay, connections):
    """Memory (PSS, KB) the relay gains per idle TCP connection, with `connections` held open."""
    if isinstance(relay, Direct):
        return None
    backend = socket.socket()
    backend.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    backend.bind((LOOPBACK, 0))
    backend.listen(8192)
    accepted = []
    stop = threading.Event()

    def accept_loop():
        backend.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(backend.accept()[0])
            except socket.timeout:
                pass
            except OSError:
                return

    t = threading.Thread(target=accept_loop, daemon=True)
    t.start()
    listen, g = through(relay, backend.getsockname()[1])
    clients = []
    try:
        warm = socket.create_connection((LOOPBACK, listen), timeout=5)  # the relay's own first-use costs
        deadline = time.time() + 5
        while len(accepted) < 1 and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        before = g.pss_kb()
        for _ in range(connections):
            clients.append(socket.create_connection((LOOPBACK, listen), timeout=10))
        deadline = time.time() + 60
        while len(accepted) < connections + 1 and time.time() < deadline:
            time.sleep(0.05)
        if len(accepted) < connections + 1:
            raise RuntimeError(f"only {len(accepted) - 1} of {connections} connections reached the backend")
        time.sleep(0.5)
        after = g.pss_kb()
        warm.close()
        return {"kb_per_conn": (after - before) / connections}
    finally:
        for c in clients:
            c.close()
        g.stop()
        stop.set()
        t.join()
        for c in accepted:
            c.close()
        backend.close()


def control_plane(binary, work, forwards):
    """Creates `forwards` forwards over one kept-alive connection (as a script with a session does),
    then times single GETs on a new connection each against GETs on one kept-alive connection: an
    answer must be as fast on either."""
    api = free_port()
    g = Group([binary, "--db", os.path.join(work, "scale.db"), "--api", f"{LOOPBACK}:{api}", "--workers", "2",
               "--log-level", "warn"])
    try:
        wait_port(api)
        path = "/api/v1/forwards"
        base = f"http://{LOOPBACK}:{api}{path}"
        session = http.client.HTTPConnection(LOOPBACK, api, timeout=10)
        sockets = set()  # every socket the kept-alive session used: 1 unless the server closed it
        times = []
        for i in range(forwards):
            body = json.dumps({"name": f"f{i}", "protocol": "tcp" if i % 2 == 0 else "udp", "listen_host": LOOPBACK,
                               "listen_port": 0, "target_host": LOOPBACK, "target_port": 9})
            t0 = time.perf_counter()
            session.request("POST", path, body, {"Content-Type": "application/json"})
            session.getresponse().read()
            times.append(time.perf_counter() - t0)
            sockets.add(session.sock.getsockname() if session.sock else None)
        listed = []
        for _ in range(5):
            t0 = time.perf_counter()
            body = urllib.request.urlopen(base, timeout=10).read()
            listed.append(time.perf_counter() - t0)  # the request and the whole body, not parsing it here
            n = len(json.loads(body))
        fresh, kept = [], []
        for _ in range(200):
            t0 = time.perf_counter()
            urllib.request.urlopen(base + "/1", timeout=10).read()
            fresh.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            session.request("GET", path + "/1")
            session.getresponse().read()
            kept.append(time.perf_counter() - t0)
            sockets.add(session.sock.getsockname() if session.sock else None)
        session.close()
        siege = held_connections_get(api, path + "/1")
        with open(f"/proc/{g.pgid}/status") as f:
            rss = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
        fds = len(os.listdir(f"/proc/{g.pgid}/fd"))
        return {"forwards": n, "create_ms_median": statistics.median(times) * 1e3,
                "create_ms_p99": sorted(times)[int(len(times) * 0.99) - 1] * 1e3,
                "create_s_total": sum(times),
                "get_new_ms_median": statistics.median(fresh) * 1e3,
                "get_kept_ms_median": statistics.median(kept) * 1e3, "kept_connections": len(sockets),
                "list_ms_median": statistics.median(listed) * 1e3, "rss_mb": rss / 1024, "fds": fds, **siege}
    finally:
        g.stop()


def held_connections_get(api, path, held=1000, gets=50):
    """Times GETs on new connections while `held` idle and `held` slow connections (a byte of an
    unfinished request head every second each) are open: the operator's view under a slowloris."""
    idle, slow = [], []
    try:
        for _ in range(held):
            idle.append(socket.create_connection((LOOPBACK, api), timeout=10))
            s = socket.create_connection((LOOPBACK, api), timeout=10)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            s.setblocking(False)
            slow.append(s)
        times, last = [], 0.0
        for _ in range(gets):
            if time.monotonic() - last >= 1.0:
                for s in slow:
                    try:
                        s.send(b"a")
                    except OSError:
                        pass  # closed by the API to make room, or at its request deadline
                last = time.monotonic()
            t0 = time.perf_counter()
            urllib.request.urlopen(f"http://{LOOPBACK}:{api}{path}", timeout=30).read()
            times.append(time.perf_counter() - t0)
        return {"get_held_ms_median": statistics.median(times) * 1e3, "get_held_ms_max": max(times) * 1e3,
                "held_connections": 2 * held}
    finally:
        for s in idle + slow:
            s.close()


# ---------------------------------------------------------------- the table

MEASURES = [
    # key, label, unit of the cell, higher is better, target as (ratio, "against")
    ("tcp1", "1 TCP stream, Gbit/s", "gbps", True, (1.2, "haproxy")),
    ("tcp4", "4 TCP streams, Gbit/s", "gbps", True, (1.1, "haproxy")),
    ("cpu_gb", "relay CPU seconds per GB (1 stream)", "cpu_s_per_gb", False, (0.5, "haproxy")),
    ("conn", "new connections/s (wrk, Connection: close)", "conn_per_s", True, (1.2, "best")),
    ("cpu_conn", "relay CPU µs per new connection", "cpu_us_per_conn", False, (0.8, "best")),
    # Round trips: ratios and targets compare the time a relay adds to direct's (when direct ran).
    ("tcp_rtt", "TCP ping-pong RTT avg, µs, all pinned to one CPU (64 B)", "rtt_us", False, (0.8, "best")),
    ("udp_rtt", "UDP ping-pong RTT avg, µs, pinned likewise", "rtt_us", False, (0.8, "best")),
    ("udp_loss", "UDP at 1 Gbit/s offered: loss %", "loss_pct", False, (0.5, "nginx")),
    ("udp_cpu_gb", "relay CPU seconds per GB (UDP at 1 Gbit/s)", "cpu_s_per_gb", False, None),
    ("idle_kb", "memory (PSS) per idle TCP connection, KB", "kb_per_conn", False, (0.5, "haproxy")),
]

ADDED_TO_DIRECT = ("tcp_rtt", "udp_rtt")


def fmt(v, key):
    if v is None:
        return "–"
    if key in ("conn",):
        return f"{v / 1000:.1f}k"
    if key in ("tcp1", "tcp4"):
        return f"{v:.1f}"
    if key in ("cpu_gb", "udp_cpu_gb"):
        return f"{v:.2f}"
    if key in ("udp_loss",):
        return f"{v:.1f}"
    return f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", required=True, help="portrelay release binary")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--idle", type=int, default=5000, help="idle connections held for the memory measure")
    ap.add_argument("--forwards", type=int, default=1000, help="forwards created for the control-plane measure")
    ap.add_argument("--only", default="", help="comma-separated relays (default: all)")
    ap.add_argument("--measures", default="tcp,conn,rtt,udp,idle,control",
                    help="comma-separated groups to run (default: all): tcp (1 and 4 streams, CPU per GB), "
                         "conn (new connections), rtt (TCP and UDP ping-pong), udp (loss), idle (memory), "
                         "control (1,000 forwards through the API)")
    ap.add_argument("--udp-listen-host", default=LOOPBACK,
                    help="portrelay's UDP listen address (0.0.0.0 or :: measures the reply-address path)")
    ap.add_argument("--baseline", metavar="BINARY",
                    help="another portrelay build (an earlier commit's), run as the relay 'baseline' right after "
                         "portrelay in every repetition, with a 'portrelay ÷ baseline' column")
    ap.add_argument("--policy", action="store_true",
                    help="also run portrelay as the relay 'policy', with allow and deny lists of 1,024 prefixes "
                         "each on its forwards, and a 'policy ÷ portrelay' column")
    ap.add_argument("--pool", action="store_true",
                    help="also run portrelay as the relay 'pool' in the new-connections measure: a forward with "
                         "a pool of 4 targets (round robin) and an allow list of 1,000 entries, with a "
                         "'pool ÷ portrelay' column")
    ap.add_argument("--floor", metavar="BINARY",
                    help="bench/floor_relay.c built: runs as the relay 'floor', the least a readiness relay "
                         "can do per connection, with a 'portrelay ÷ floor' column")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = ap.parse_args()
    groups = set(args.measures.split(","))
    unknown = groups - {"tcp", "conn", "rtt", "udp", "idle", "control"}
    if unknown:
        ap.error(f"unknown measure group(s): {', '.join(sorted(unknown))}")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = tempfile.mkdtemp(prefix="portrelay-bench-")
    relays = [Direct(work), Portrelay(work, args.binary, args.udp_listen_host)]
    if args.baseline:
        relays.append(Portrelay(work, args.baseline, args.udp_listen_host, name="baseline"))
    if args.policy:
        relays.append(Portrelay(work, args.binary, args.udp_listen_host, name="policy", fields=policy_lists(),
                                about=", allow and deny lists of 1,024 prefixes each (bench.py policy_lists)"))
    if args.pool:
        allow = policy_lists(1000)["allow"]
        relays.append(Portrelay(work, args.binary, args.udp_listen_host, name="pool", fields={"allow": allow},
                                about=", a pool of 4 targets (127.0.0.1 to .4, round robin) and an allow list of "
                                      "1,000 entries, new connections only", pool=4, groups={"conn"}))
    if args.floor:
        relays.append(Floor(work, args.floor))
    relays += [Haproxy(work), Nginx(work), Rinetd(work), Socat(work)]
    if args.only:
        wanted = args.only.split(",") + [n for n, on in (("baseline", args.baseline), ("policy", args.policy),
                                                         ("pool", args.pool), ("floor", args.floor)) if on]
        relays = [r for r in relays if r.name in wanted]
    names = [r.name for r in relays]
    results = {r.name: {m[0]: [] for m in MEASURES} for r in relays}
    failed = {r.name: set() for r in relays}  # measure keys with at least one failed attempt
    failures = []
    backend_port = free_port()
    backend = Group(http_backend(work, backend_port)) if "conn" in groups else None  # only wrk needs it
    started = time.time()
    try:
        if backend:
            wait_port(backend_port)
        for rep in range(args.reps):
            for relay in relays:
                print(f"[{time.time() - started:5.0f}s] rep {rep + 1}/{args.reps}: {relay.name}", file=sys.stderr, flush=True)
                r = results[relay.name]

                def attempt(what, fn, *keys):
                    # A relay (or a client tool) that fails one measure is reported, in the table and
                    # below it, and the run goes on.
                    try:
                        return fn()
                    except Exception as e:  # noqa: BLE001 - any failure of one measure, reported not fatal
                        print(f"    {relay.name}, {what}: {e!r}", file=sys.stderr)
                        failures.append(f"{relay.name}, {what}, rep {rep + 1}: {e!r}")
                        failed[relay.name].update(keys)
                        return None

                def takes(group):
                    return group in groups and (relay.groups is None or group in relay.groups)

                if takes("tcp"):
                    one = attempt("1 TCP stream", lambda: iperf_tcp(relay, 1, args.seconds), "tcp1", "cpu_gb")
                    r["tcp1"].append(one["gbps"] if one else None)
                    r["cpu_gb"].append(one["cpu_s_per_gb"] if one else None)
                    four = attempt("4 TCP streams", lambda: iperf_tcp(relay, 4, args.seconds), "tcp4")
                    r["tcp4"].append(four["gbps"] if four else None)
                if takes("conn"):
                    c = attempt("new connections", lambda: wrk_connections(relay, backend_port, args.seconds),
                                "conn", "cpu_conn")
                    r["conn"].append(c["conn_per_s"] if c else None)
                    r["cpu_conn"].append(c["cpu_us_per_conn"] if c else None)
                    if c and c["errors"]:
                        print(f"    wrk errors through {relay.name}: {c['errors']}", file=sys.stderr)
                if takes("rtt"):
                    t = attempt("TCP round trip", lambda: sockperf_rtt(relay, True, args.seconds), "tcp_rtt")
                    r["tcp_rtt"].append(t["rtt_us"] if t else None)
                    u = attempt("UDP round trip", lambda: sockperf_rtt(relay, False, args.seconds), "udp_rtt")
                    r["udp_rtt"].append(u["rtt_us"] if u else None)
                if takes("udp"):
                    loss = attempt("UDP loss", lambda: iperf_udp_loss(relay, args.seconds), "udp_loss", "udp_cpu_gb")
                    r["udp_loss"].append(loss["loss_pct"] if loss else None)
                    r["udp_cpu_gb"].append(loss["cpu_s_per_gb"] if loss else None)
        for relay in (relays if "idle" in groups else []):
            if relay.groups is not None and "idle" not in relay.groups:
                continue
            print(f"[{time.time() - started:5.0f}s] idle connections: {relay.name}", file=sys.stderr, flush=True)
            try:
                m = idle_memory(relay, args.idle)
            except Exception as e:  # noqa: BLE001 - a relay that cannot hold them all is reported, not fatal
                print(f"    {relay.name}: {e}", file=sys.stderr)
                failures.append(f"{relay.name} could not hold {args.idle} idle connections: {e}")
                failed[relay.name].add("idle_kb")
                m = None
            results[relay.name]["idle_kb"].append(m["kb_per_conn"] if m else None)
        scale = None
        if "portrelay" in names and "control" in groups:
            print(f"[{time.time() - started:5.0f}s] control plane: {args.forwards} forwards", file=sys.stderr, flush=True)
            scale = control_plane(args.binary, work, args.forwards)
    finally:
        if backend:
            backend.stop()
        shutil.rmtree(work, ignore_errors=True)

    def median(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    peers = [n for n in names if n not in ("direct", "portrelay", "baseline", "policy", "pool", "floor")]
    # Builds or settings of portrelay compared with each other: (this, against), a column each.
    versus = [pair for pair in (("portrelay", "baseline"), ("policy", "portrelay"), ("pool", "portrelay"),
                                          ("portrelay", "floor"))
              if pair[0] in names and pair[1] in names]
    lines = ["| measure | " + " | ".join(names) + " | portrelay ÷ best peer | target |" +
             "".join(f" {a} ÷ {b} |" for a, b in versus),
             "|---|" + "---:|" * len(names) + "---:|---|" + "---:|" * len(versus)]
    verdicts = []
    for key, label, _, higher, target in MEASURES:
        med = {n: median(results[n][key]) for n in names}
        if all(v is None for v in med.values()) and not any(key in failed[n] for n in names):
            continue  # a measure left out with --measures
        # What a relay adds to a round trip is what it is judged by; without direct, the whole trip.
        added = key in ADDED_TO_DIRECT and med.get("direct") is not None
        basis = {n: (v - med["direct"] if added and v is not None else v) for n, v in med.items()}
        peer_values = {p: basis[p] for p in peers if basis[p] is not None}
        ratio_cell, target_cell = "–", "–"
        if basis.get("portrelay") is not None and peer_values:
            best_name = (max if higher else min)(peer_values, key=lambda p: peer_values[p])
            best = peer_values[best_name]
            what = " added" if added else ""
            if best > 0:
                ratio = basis["portrelay"] / best
                ratio_cell = f"{ratio:.2f}{what} (vs {best_name})"
            if target:
                against, limit = target[1], target[0]
                ref_name = best_name if against == "best" else against
                ref = peer_values.get(ref_name)
                if ref and ref > 0:
                    r = basis["portrelay"] / ref
                    ok = r >= limit if higher else r <= limit
                    target_cell = (f"{'≥' if higher else '≤'} {limit}× {ref_name}{what}: {r:.2f} "
                                   f"{'met' if ok else 'NOT met'}")
                    verdicts.append((label, ok))
        versus_cell = ""
        for a, b in versus:
            mine, theirs = basis.get(a), basis.get(b)
            if mine is not None and theirs:
                worse = (1 - mine / theirs) if higher else (mine / theirs - 1)  # as a fraction of b's
                versus_cell += f" {mine / theirs:.3f} ({abs(worse) * 100:.1f} % {'worse' if worse > 0 else 'better'}) |"
            else:
                versus_cell += " – |"
        cells = [fmt(med[n], key) if med[n] is not None or key not in failed[n] else "failed" for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio_cell} | {target_cell} |"
                     + versus_cell)
    table = "\n".join(lines)

    def version(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=5)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except Exception:  # noqa: BLE001 - a missing tool shows as such
            return "not installed"

    cpu_model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = "?"
    now = datetime.datetime.now(datetime.timezone.utc)
    report = [f"# portrelay benchmark, {now:%Y-%m-%d %H:%M} UTC", "",
              f"Machine: {cpu_model}, {os.cpu_count()} CPUs, Linux {platform.release()}. Loopback only.",
              f"portrelay {version([args.binary, '--version'])} (commit {commit}); {version(['haproxy', '-v'])}; "
              f"{version(['nginx', '-v'])}; {version(['rinetd', '-v'])}; {version(['socat', '-V'])[:40]}; "
              f"{version(['iperf3', '-v'])}; {version(['wrk', '-v'])}; {version(['sockperf', '-v'])}.",
              f"Medians of {args.reps} runs of {args.seconds} s each; idle memory with {args.idle} connections held.",
              "Every relay is started fresh for each measure; relay CPU is utime+stime from /proc.", "",
              table, ""]
    if scale:
        report += [f"Control plane: {scale['forwards']} forwards (TCP and UDP, half each) created through the API "
                   f"over one kept-alive connection in {scale['create_s_total']:.1f} s: "
                   f"median {scale['create_ms_median']:.2f} ms per create (p99 {scale['create_ms_p99']:.2f} ms), "
                   f"GET of one forward {scale['get_new_ms_median']:.2f} ms on a new connection and "
                   f"{scale['get_kept_ms_median']:.2f} ms on a kept-alive one (medians of 200; "
                   f"{scale['kept_connections']} connection(s) carried all {scale['forwards'] + 200} kept-alive requests), "
                   f"GET of the whole list {scale['list_ms_median']:.1f} ms, daemon RSS {scale['rss_mb']:.1f} MB, "
                   f"{scale['fds']} descriptors. With {scale['held_connections']} idle or slowly sent connections "
                   f"held open, a GET of one forward on a new connection took {scale['get_held_ms_median']:.2f} ms "
                   f"(median of 50, max {scale['get_held_ms_max']:.1f} ms).", ""]
    report += ["Settings:", ""] + [f"- {r.name}: {r.settings}" for r in relays] + [
        "- clients: iperf3 (TCP; UDP -b 1G -l 1400), wrk -t2 -c64 against an nginx HTTP backend answering 2 bytes, "
        "sockperf ping-pong with client, relay and server pinned to CPU 0, RTT = 2 × sockperf's avg-lat.", ""]
    if failures:
        report += ["Failures:", ""] + [f"- {f}" for f in failures] + [""]
    if verdicts:
        report += ["Targets: " + ", ".join(f"{label}: {'met' if ok else 'not met'}" for label, ok in verdicts), ""]
    text = "\n".join(report)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"{now:%Y-%m-%d-%H%M}")
    with open(stem + ".md", "w") as f:
        f.write(text)
    with open(stem + ".json", "w") as f:
        json.dump({"results": results, "control_plane": scale}, f, indent=1)
    print(f"written to {stem}.md", file=sys.stderr)


if __name__ == "__main__":
    main()
