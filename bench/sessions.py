#!/usr/bin/env python3
"""sessions.py - a server's memory with K SMTP sessions open at once.

usage: sessions.py --port 2525 --pid PID [-k 256] [--rcpt support@acme.example]
                   [--body-bytes 61440] [--hold 2] [--timeout 30]

Opens K connections to 127.0.0.1:PORT (only loopback) from one thread and
walks them through three phases, reading the server's memory from
/proc/PID/status (VmRSS now, VmHWM = the kernel's exact peak) after each:

  idle      every session connected, banner read, EHLO answered; held --hold s
  in_data   every session inside DATA with --body-bytes of a message sent but
            no final dot (the server holds K partial messages); held --hold s
  committed every session sends its final dot at once (K messages arrive
            together: a burst of commits), every reply read, then QUIT

Prints one JSON line: the phases with vmrss_kib / vmhwm_kib, the replies'
codes, seconds per phase. Every socket it opened is closed at the end (also on
error). stdlib only; never signals anything.
"""
import argparse
import json
import socket
import sys
import time
import uuid
from collections import Counter


def status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
    return {"vmrss_kib": out.get("VmRSS"), "vmhwm_kib": out.get("VmHWM"),
            "threads": out.get("Threads")}


class C:
    def __init__(self, port, timeout):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def reply(self):
        while True:
            i = self.buf.find(b"\n")
            while i >= 0:
                line, self.buf = self.buf[:i + 1], self.buf[i + 1:]
                if line[3:4] != b"-":
                    return int(line[:3])
                i = self.buf.find(b"\n")
            d = self.s.recv(65536)
            if not d:
                raise ConnectionError("closed")
            self.buf += d

    def cmd(self, b):
        self.s.sendall(b)
        return self.reply()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("-k", type=int, default=256)
    ap.add_argument("--rcpt", default="support@acme.example")
    ap.add_argument("--body-bytes", type=int, default=61440)
    ap.add_argument("--hold", type=float, default=2.0)
    ap.add_argument("--timeout", type=float, default=30.0)
    a = ap.parse_args()
    if not (1 <= a.k <= 2000 and 0 <= a.body_bytes <= 16 << 20 and 0 <= a.hold <= 60):
        sys.exit("sessions.py: need 1 <= -k <= 2000, --body-bytes <= 16 MiB, --hold <= 60")
    run = uuid.uuid4().hex[:12]
    line = b"the replacement still shows the old address could you check again\r\n"
    body = line * max(1, a.body_bytes // len(line))
    res = {"k": a.k, "body_bytes": len(body), "pid": a.pid, "before": status(a.pid)}
    conns, codes = [], Counter()
    try:
        t = time.monotonic()
        for _ in range(a.k):
            conns.append(C(a.port, a.timeout))
        for c in conns:
            codes["banner:%d" % c.reply()] += 1
        for c in conns:
            codes["ehlo:%d" % c.cmd(b"EHLO sessions.bench.localhost\r\n")] += 1
        time.sleep(a.hold)
        res["idle"] = dict(status(a.pid), seconds=round(time.monotonic() - t, 2))

        t = time.monotonic()
        for i, c in enumerate(conns):
            sender = "customer%d@customers.bench.localhost" % i
            codes["mail:%d" % c.cmd(b"MAIL FROM:<%s>\r\n" % sender.encode())] += 1
            codes["rcpt:%d" % c.cmd(b"RCPT TO:<%s>\r\n" % a.rcpt.encode())] += 1
            codes["data:%d" % c.cmd(b"DATA\r\n")] += 1
            hdr = ("From: <%s>\r\nTo: <%s>\r\nSubject: sessions probe %d\r\n"
                   "Message-ID: <sessions.%s.%d@bench.localhost>\r\n\r\n"
                   % (sender, a.rcpt, i, run, i)).encode()
            c.s.sendall(hdr + body)
        time.sleep(a.hold)
        res["in_data"] = dict(status(a.pid), seconds=round(time.monotonic() - t, 2))

        t = time.monotonic()
        for c in conns:
            c.s.sendall(b".\r\n")
        for c in conns:
            codes["dot:%d" % c.reply()] += 1
        res["committed"] = dict(status(a.pid), seconds=round(time.monotonic() - t, 2))
        for c in conns:
            try:
                c.cmd(b"QUIT\r\n")
            except OSError:
                pass
    except (OSError, ValueError, ConnectionError) as e:
        res["error"] = "%s after %d connections" % (repr(e), len(conns))
    finally:
        for c in conns:
            try:
                c.s.close()
            except OSError:
                pass
    time.sleep(0.5)
    res["after"] = status(a.pid)
    res["codes"] = dict(codes)
    print(json.dumps(res), flush=True)
    return 1 if "error" in res else 0


if __name__ == "__main__":
    sys.exit(main())
