#!/usr/bin/env python3
"""Node RSS per idle v2 viewer, measured with plain Python sockets (no simulator in the way).

Usage: bench/idle_rss.py N   (from the repository root, after `cargo build --release`;
       MATCHSTREAM_BIN=<path> measures another binary)
Starts a node on free ports, opens N viewers on one started match, reads RSS before and after,
checks that one event still reaches all of them, and stops the node.
"""
import socket, subprocess, sys, time, re, os, json, urllib.request, tempfile
N=int(sys.argv[1])
d=tempfile.mkdtemp()
BIN=os.environ.get("MATCHSTREAM_BIN") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "matchstream")
p=subprocess.Popen([BIN,"serve","--http","127.0.0.1:0","--viewers","127.0.0.1:0","--data",d,"--watcher-token","t"],stderr=subprocess.PIPE,text=True)
http=None; vport=None
for line in p.stderr:
    m=re.search(r"addr=(\S+)",line)
    if "viewer listener ready" in line: vport=int(m.group(1).split(":")[1])
    if "http listener ready" in line: http=m.group(1); break
def post(path, body):
    r=urllib.request.Request("http://"+http+path, data=json.dumps(body).encode(), headers={"Authorization":"Bearer t","Content-Type":"application/json"})
    return urllib.request.urlopen(r).read()
post("/1/matches",{"home":"aa","visit":"bb","start_date":"2020-01-01"})
post("/1/match/aa-bb-2020-01-01/events",{"kind":"start"})
def rss(): 
    for l in open(f"/proc/{p.pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
time.sleep(0.5); r0=rss()
socks=[]
t=time.time()
for i in range(N):
    s=socket.create_connection(("127.0.0.1",vport)); s.sendall(b"VERSION:2:CONNECT:u:MATCH:aa-bb-2020-01-01\n"); socks.append(s)
for s in socks: s.recv(4096)
el=time.time()-t
time.sleep(1); r1=rss()
print(f"N={N} rss0={r0}KiB rss1={r1}KiB per-viewer={(r1-r0)*1024/N:.0f}B connect {N/el:.0f}/s")
post("/1/match/aa-bb-2020-01-01/events",{"kind":"comment","data":{"text":"x"*150}})
got=sum(1 for s in socks if b"comment" in s.recv(4096))
print("delivered", got)
p.terminate(); p.wait()
