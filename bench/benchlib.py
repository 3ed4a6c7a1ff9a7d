"""What bench/run and bench/cluster share: reading a process's memory and CPU from /proc, following
a child's output, the watcher's POST, a held `matchstream sim` run, and the machine's description."""

import json
import os
import platform
import ssl
import subprocess
import sys
import threading
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
TOKEN = "bench"


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid):
    return sum(cpu_split(pid))


def cpu_split(pid):
    """(user, system) CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds_or_0(pid):
    """CPU seconds of a process, 0 once it is gone."""
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


def children(pid):
    """The PIDs of a process's children (the simulator's worker processes)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


def tcp_mem_pages():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()
                return int(parts[parts.index("mem") + 1])
    return 0


SLABS = ("TCP", "sock_inode_cache", "filp", "eventpoll_epi", "dentry")


def slab_bytes():
    """Kernel memory in the slab caches every TCP connection takes (None if unreadable)."""
    try:
        with open("/proc/slabinfo") as f:
            total = 0
            for line in f:
                parts = line.split()
                if parts and parts[0] in SLABS:
                    total += int(parts[2]) * int(parts[3])  # num_objs * objsize
            return total
    except (OSError, ValueError, IndexError):
        return None


def drain(stream, sink):
    """Keeps reading a child's pipe (so it never blocks) and hands each line to `sink`."""

    def run():
        for line in iter(stream.readline, ""):
            sink(line)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def post(url, body, ca=None):
    """A watcher's POST; `ca`: the CA certificate an https:// node's is checked against."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {TOKEN}",
                                          "Content-Type": "application/json"})
    context = ssl.create_default_context(cafile=ca) if ca else None
    with urllib.request.urlopen(req, timeout=30, context=context) as r:
        return json.loads(r.read() or b"null")


def make_certificate(directory):
    """A private CA and a certificate for 127.0.0.1 it signed (ECDSA P-256, as certbot issues
    by default), made with the openssl command in `directory`: (ca.pem, cert.pem, key.pem)."""
    def path(name):
        return os.path.join(directory, name)

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *curve, "-keyout", path("ca.key"), "-out", path("ca.pem"),
            "-days", "2", "-subj", "/CN=matchstream bench CA")
    openssl("req", *curve, "-keyout", path("key.pem"), "-out", path("cert.csr"),
            "-subj", "/CN=127.0.0.1")
    with open(path("cert.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", path("cert.csr"), "-CA", path("ca.pem"), "-CAkey", path("ca.key"),
            "-CAcreateserial", "-out", path("cert.pem"), "-days", "2", "-extfile", path("cert.ext"))
    return path("ca.pem"), path("cert.pem"), path("key.pem")


class Stalled(RuntimeError):
    """A held run that cannot connect every viewer: some failed for good (a held viewer that
    failed never connects again), or nobody connected for a while."""


class Viewers:
    """A held `matchstream sim` run: connects N, then receives until its stdin is closed."""

    def __init__(self, cmd, n):
        self.n = n
        self.connected = threading.Event()
        self.deliveries = 0
        # The simulator's latest progress line: viewers connected now and failed for good.
        self.now_connected = 0
        self.failed = 0
        self.last_connect = time.time()
        self.last_progress = time.time()
        self.t0 = time.time()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.out = []
        drain(self.proc.stdout, self.out.append)
        drain(self.proc.stderr, self.on_err)

    def on_err(self, line):
        line = line.strip()
        if line == f"connected {self.n}":
            self.connected.set()
        elif line.startswith("{"):
            try:
                progress = json.loads(line)
                d = progress.get("deliveries", self.deliveries)
            except ValueError:
                return
            connected = progress.get("connected", self.now_connected)
            if connected != self.now_connected:
                self.now_connected = connected
                self.last_connect = time.time()
            self.failed = progress.get("failed", self.failed)
            if d != self.deliveries:
                self.deliveries = d
                self.last_progress = time.time()

    def wait_connected(self, timeout=180, quiet=30):
        """Seconds until all N are connected. Stops early (`Stalled`) as soon as a viewer failed
        for good, or when the number connected has not moved for `quiet` seconds, or the
        simulator exited: waiting longer cannot help then."""
        deadline = time.time() + timeout
        while not self.connected.wait(0.2):
            now = time.time()
            why = None
            if self.failed:
                why = f"{self.failed:,} failed for good (refused, or gave up)"
            elif now - self.last_connect > quiet:
                why = f"no viewer connected for {quiet} s"
            elif self.proc.poll() is not None:
                why = f"the simulator exited ({self.proc.returncode})"
            elif now > deadline:
                why = f"not all connected within {timeout} s"
            if why:
                raise Stalled(f"{self.now_connected:,} of {self.n:,} viewers connected, {why}")
        return time.time() - self.t0

    def wait_deliveries(self, want, timeout, quiet=3.0):
        """Until `want` deliveries were reported, or none for `quiet` seconds (progress lines
        come only while something happens), or `timeout`."""
        deadline = time.time() + timeout
        self.last_progress = time.time()
        while self.deliveries < want and time.time() < deadline and self.proc.poll() is None:
            if time.time() - self.last_progress > quiet:
                break
            time.sleep(0.1)

    def finish(self):
        self.proc.stdin.close()
        self.proc.wait(120)
        time.sleep(0.2)
        text = "".join(self.out).strip()
        return json.loads(text.splitlines()[-1]) if text else {}


def run_json(cmd, timeout):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed: {out.stderr.strip()[-400:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    def sysctl(name):
        try:
            with open("/proc/sys/" + name.replace(".", "/")) as f:
                return f.read().strip()
        except OSError:
            return "?"
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1),
        "kernel": platform.release(), "somaxconn": sysctl("net.core.somaxconn"),
        "tcp_max_syn_backlog": sysctl("net.ipv4.tcp_max_syn_backlog"),
        "redis": redis, "rustc": rustc, "profile": "release (opt-level 3, debug=line-tables-only)",
    }


def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def fmt(v, digits=0):
    if v is None:
        return "–"
    if isinstance(v, float) and digits:
        return f"{v:,.{digits}f}"
    return f"{round(v):,}"


