#!/usr/bin/env python3
"""Node RSS per idle v2 viewer, measured with plain Python sockets (no simulator in the way).

Usage: bench/idle_rss.py N [--tls]   (from the repository root, after `cargo build --release`;
       MATCHSTREAM_BIN=<path> measures another binary)
Starts a node on free ports, opens N viewers on one started match (one after the other), reads
RSS before and after and the node's CPU time spent on the connects, checks that one event still
reaches all of them, and stops the node. With --tls the node has a
certificate (a private CA's, made with openssl: benchlib.make_certificate) and every viewer
makes its TLS handshake (Python's ssl, checking the certificate) before its connect line.
"""
import socket, ssl, subprocess, sys, time, re, os, json, urllib.request, tempfile
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import make_certificate  # noqa: E402
N=int(sys.argv[1])
TLS="--tls" in sys.argv[2:]
d=tempfile.mkdtemp()
BIN=os.environ.get("MATCHSTREAM_BIN") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "matchstream")
args=[BIN,"serve","--http","127.0.0.1:0","--viewers","127.0.0.1:0","--data",d,"--watcher-token","t"]
ctx=None
if TLS:
    ca,cert,key=make_certificate(d)
    args+=["--tls-cert",cert,"--tls-key",key]
    ctx=ssl.create_default_context(cafile=ca)
p=subprocess.Popen(args,stderr=subprocess.PIPE,text=True)
http=None; vport=None
for line in p.stderr:
    m=re.search(r"addr=(\S+)",line)
    if "viewer listener ready" in line: vport=int(m.group(1).split(":")[1])
    if "http listener ready" in line: http=m.group(1); break
def post(path, body):
    r=urllib.request.Request(("https://" if TLS else "http://")+http+path, data=json.dumps(body).encode(), headers={"Authorization":"Bearer t","Content-Type":"application/json"})
    return urllib.request.urlopen(r, context=ctx).read()
post("/1/matches",{"home":"aa","visit":"bb","start_date":"2020-01-01"})
post("/1/match/aa-bb-2020-01-01/events",{"kind":"start"})
def rss(): 
    for l in open(f"/proc/{p.pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
def cpu():
    f=open(f"/proc/{p.pid}/stat").read().rsplit(")",1)[1].split()
    return (int(f[11])+int(f[12]))/os.sysconf("SC_CLK_TCK")
time.sleep(0.5); r0=rss(); c0=cpu()
socks=[]
t=time.time()
for i in range(N):
    s=socket.create_connection(("127.0.0.1",vport))
    if TLS: s=ctx.wrap_socket(s, server_hostname="127.0.0.1")
    s.sendall(b"VERSION:2:CONNECT:u:MATCH:aa-bb-2020-01-01\n"); socks.append(s)
for s in socks: s.recv(4096)
el=time.time()-t
time.sleep(1); r1=rss(); c1=cpu()
print(f"N={N}{' tls' if TLS else ''} rss0={r0}KiB rss1={r1}KiB per-viewer={(r1-r0)*1024/N:.0f}B connect {N/el:.0f}/s (node CPU {(c1-c0)*1e6/N:.0f} us per viewer connected)")
post("/1/match/aa-bb-2020-01-01/events",{"kind":"comment","data":{"text":"x"*150}})
got=sum(1 for s in socks if b"comment" in s.recv(4096))
print("delivered", got)
p.terminate(); p.wait()
