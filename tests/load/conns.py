#!/usr/bin/env python3
"""Connection memory of gw: RSS idle, with N idle keep-alive connections, with N active
(requests in flight), and after they have all closed (issue 15, "What must show").

    python3 tests/load/conns.py [GW_BINARY]        # N = 5000 (LOAD_CONNS to change)

GW_BINARY defaults to $LOAD_GW, else target/release/gw under $CARGO_TARGET_DIR or the repo. For
each policy (gw-plain: one route, no auth; gw-policy: key auth, body guard, rate limit, token
budget, audit) it starts `gw mock` and `gw serve` on free loopback ports and then:
  1. idle       RSS after start, before any request;
     warm       after 20 requests on one connection and 2 s: what the first requests set up
                once (each thread's allocator pages for every size class, the upstream client,
                metric series) is not a cost per connection;
  2. keep-alive N connections open, each has made one request and waits (HTTP/1.1 keep-alive);
  3. active     each of those N connections has a request in flight (the mock holds every
                answer for LOAD_HOLD_MS, 3000 by default, `x-mock-delay-ms`), RSS read while held;
  4. closed     every connection closed by the client, RSS read after LOAD_SETTLE_S (3) seconds.
RSS is VmRSS of the gw process (KiB from /proc); the peak is VmHWM. Per connection = the growth
over warm divided by N. The open-file limit is raised to the hard limit (each connection is one
descriptor here, two in gw while a request is in flight). Absolute figures move with other load
on the machine; the per-connection costs and the "after close" ratio are what to compare.
"""

import asyncio
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import hashlib

N = int(os.environ.get("LOAD_CONNS", "5000"))
HOLD_MS = int(os.environ.get("LOAD_HOLD_MS", "3000"))
SETTLE_S = float(os.environ.get("LOAD_SETTLE_S", "3"))
KEY = "sk-conn-bench"
BODY = b'{"model":"gpt-4o","messages":[{"role":"user","content":"Hello"}]}'


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def wait_port(port, proc, log):
    for _ in range(400):
        if proc.poll() is not None:
            sys.exit(f"process exited: {open(log).read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}: {open(log).read()}")


def policies(mock_port, tmp):
    plain = f"""
gateway {{ listen "127.0.0.1:0" }}
upstream backend {{ target "http://127.0.0.1:{mock_port}" }}
route chat {{
    when POST "/v1/chat/completions"
    auth none
    to   backend
}}
"""
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    os.makedirs(f"{tmp}/keys", exist_ok=True)
    with open(f"{tmp}/keys/users.keys", "w") as f:
        f.write(f"{digest} alpha bench\n")
    policy = f"""
gateway {{ listen "127.0.0.1:0" audit "audit.jsonl" }}
upstream backend {{ target "http://127.0.0.1:{mock_port}" }}
keys users from "keys/users.keys"
route chat {{
    when  POST "/v1/chat/completions"
    auth  users via header "x-api-key"
    deny  400 "messages required" if not body.messages exists
    limit rate 1000000/s per key
    limit tokens 1000000000/min per key
    to    backend
}}
"""
    return [("gw-plain", plain), ("gw-policy", policy)]


async def request(reader, writer, port, delay_ms=0):
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"content-type: application/json\r\nx-api-key: {KEY}\r\ncontent-length: {len(BODY)}\r\n"
    )
    if delay_ms:
        head += f"x-mock-delay-ms: {delay_ms}\r\n"
    writer.write(head.encode() + b"\r\n" + BODY)
    await writer.drain()
    headers = await reader.readuntil(b"\r\n\r\n")
    status_line = headers.split(b"\r\n", 1)[0]
    if b" 200 " not in status_line:
        raise RuntimeError(f"answer {status_line!r}")
    length = 0
    for line in headers.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)


async def measure(pid, port):
    out = {"idle": status(pid, "VmRSS")}
    # Warm: what the first requests set up once (each thread's allocator pages for each size,
    # the upstream client and its TLS roots, metric series) is not per connection.
    r, w = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(20):
        await request(r, w, port)
    w.close()
    await asyncio.sleep(2)
    out["warm"] = status(pid, "VmRSS")
    sem = asyncio.Semaphore(200)

    async def open_one():
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            await request(r, w, port)
            return r, w

    conns = await asyncio.gather(*(open_one() for _ in range(N)))
    await asyncio.sleep(1)
    out["keep-alive"] = status(pid, "VmRSS")
    held = [asyncio.create_task(request(r, w, port, HOLD_MS)) for r, w in conns]
    await asyncio.sleep(min(HOLD_MS / 1000 * 0.6, HOLD_MS / 1000 - 0.5))
    out["active"] = status(pid, "VmRSS")
    await asyncio.gather(*held)
    for _, w in conns:
        w.close()
    await asyncio.sleep(SETTLE_S)
    out["closed"] = status(pid, "VmRSS")
    out["peak"] = status(pid, "VmHWM")
    return out


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < N + 100:
        sys.exit(f"the open-file limit ({hard}) is below {N} connections")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    target = os.environ.get("CARGO_TARGET_DIR", f"{root}/target")
    gw = (sys.argv[1:] or [os.environ.get("LOAD_GW") or f"{target}/release/gw"])[0]
    if not os.access(gw, os.X_OK):
        sys.exit(f"no gw binary at {gw} (cargo build --release -p gw-runtime --bin gw)")
    tmp = tempfile.mkdtemp(prefix="gw-conns.")
    procs = []
    try:
        mock_port = free_port()
        log = f"{tmp}/mock.log"
        mock = subprocess.Popen(
            [gw, "mock", "--listen", f"127.0.0.1:{mock_port}", "--delay-ms", "0", "--record=false"],
            stdout=open(log, "w"), stderr=subprocess.STDOUT,
        )
        procs.append(mock)
        wait_port(mock_port, mock, log)
        rows = []
        for name, text in policies(mock_port, tmp):
            path = f"{tmp}/{name}.gwp"
            with open(path, "w") as f:
                f.write(text)
            port = free_port()
            log = f"{tmp}/{name}.log"
            env = dict(os.environ, GW_LOG=os.environ.get("GW_LOG", "warn"))
            proc = subprocess.Popen(
                [gw, "serve", path, "--listen", f"127.0.0.1:{port}"],
                stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=tmp,
            )
            procs.append(proc)
            wait_port(port, proc, log)
            time.sleep(0.5)
            started = time.time()
            r = asyncio.run(measure(proc.pid, port))
            print(f"{name}: measured in {time.time() - started:.1f}s: {r}", file=sys.stderr)
            rows.append((name, r))
            proc.terminate()
            proc.wait()
        print(f"\nConnection memory, {N} connections (RSS of the gw process, MiB; per connection, KiB):\n")
        print("| target | idle | warm | keep-alive | per idle conn | active | per active conn | after close | after / idle | after / warm | peak |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, r in rows:
            mib = lambda k: f"{k / 1024:.1f}"
            per = lambda k: f"{(k - r['warm']) / N:.1f}"
            print(
                f"| {name} | {mib(r['idle'])} | {mib(r['warm'])} | {mib(r['keep-alive'])} | {per(r['keep-alive'])} | "
                f"{mib(r['active'])} | {per(r['active'])} | {mib(r['closed'])} | "
                f"{r['closed'] / r['idle']:.2f} | {r['closed'] / r['warm']:.2f} | {mib(r['peak'])} |"
            )
        print("\nAims (issue 15): an idle keep-alive connection <= 8 KiB; after close within 20% of idle (<= 1.20).")
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait()
        if os.environ.get("LOAD_KEEP") == "1":
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
