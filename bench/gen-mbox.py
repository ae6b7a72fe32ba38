#!/usr/bin/env python3
"""gen-mbox.py - N distinct support emails as mbox files, streamed to disk.

usage: gen-mbox.py N OUTDIR [--chunk 100000] [--size 2048] [--senders 1000]
                   [--rcpt support@acme.example] [--ids-sample 10000] [--seed 1]

Writes OUTDIR/fill-0000.mbox, fill-0001.mbox, ... (at most --chunk messages
each, so `postdesk import`, which reads one mbox into memory, stays bounded),
and OUTDIR/ids.jsonl: a uniform random sample of --ids-sample of the
messages (message_id, subject, from) in smtp-load.py's --ids-in format, so a
later load can reply to tickets spread over the whole store.

Every message is a new thread (unique Message-ID, no In-Reply-To/References,
no subject tag), so each becomes one ticket. From is one of --senders
customer addresses (the same customer%d@customers.bench.localhost addresses
smtp-load.py uses). Body: ~--size bytes of text lines (the same word list as
smtp-load.py), none starting with "From " so no >From quoting is needed.
Dates are spread over the past 30 days. stdlib only.
"""
import argparse
import json
import os
import random
import sys
import time

WORDS = ("thanks for getting back to me the invoice for order number still "
         "shows the old address could you please check again and let me know "
         "when the replacement ships we tried restarting the device twice but "
         "the error remains best regards").split()


def bodies(rng, nbytes, k):
    """k different text bodies of ~nbytes (LF line ends, as an mbox holds)."""
    out = []
    for _ in range(k):
        lines, total = [], 0
        while total < nbytes:
            words, n = [], 0
            while n < 68:
                w = rng.choice(WORDS)
                words.append(w)
                n += len(w) + 1
            line = " ".join(words)[:72].rstrip()
            lines.append(line)
            total += len(line) + 1
        out.append(("\n".join(lines) + "\n").encode("ascii"))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("n", type=int)
    ap.add_argument("outdir")
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=2048, help="approx. body bytes")
    ap.add_argument("--senders", type=int, default=1000)
    ap.add_argument("--rcpt", default="support@acme.example")
    ap.add_argument("--ids-sample", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if not (1 <= a.n <= 20_000_000) or a.chunk < 1:
        sys.exit("gen-mbox.py: need 1 <= N <= 20000000, --chunk >= 1")
    os.makedirs(a.outdir, exist_ok=True)
    rng = random.Random(a.seed)
    pool = bodies(rng, a.size, 64)
    sample = set(rng.sample(range(a.n), min(a.ids_sample, a.n)))
    now = int(time.time())
    t0 = time.monotonic()
    ids = open(os.path.join(a.outdir, "ids.jsonl"), "w")
    f, files, nbytes = None, [], 0
    for i in range(a.n):
        if i % a.chunk == 0:
            if f:
                f.close()
            path = os.path.join(a.outdir, "fill-%04d.mbox" % (i // a.chunk))
            f = open(path, "wb", buffering=1 << 20)
            files.append(path)
        sender = "customer%d@customers.bench.localhost" % (i % a.senders)
        mid = "<fill.%d.%d@bench.localhost>" % (a.seed, i)
        subject = "Order %d: question about my account" % i
        t = now - 30 * 86400 + (i * 30 * 86400) // a.n
        date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(t))
        head = ("From %s %s\nFrom: Customer %d <%s>\nTo: <%s>\nSubject: %s\nDate: %s\n"
                "Message-ID: %s\nMIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n"
                % (sender, time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(t)),
                   i % a.senders, sender, a.rcpt, subject, date, mid)).encode("ascii")
        body = pool[i % len(pool)]
        f.write(head)
        f.write(body)
        f.write(b"\n")
        nbytes += len(head) + len(body) + 1
        if i in sample:
            ids.write(json.dumps({"message_id": mid, "subject": subject, "from": sender,
                                  "references": []}) + "\n")
    if f:
        f.close()
    ids.close()
    print(json.dumps({"messages": a.n, "files": len(files), "bytes": nbytes,
                      "gen_s": round(time.monotonic() - t0, 2)}))


if __name__ == "__main__":
    main()
