#!/usr/bin/env python3
"""A flood of active messages that prove nothing: tenant 1, random capabilities and request
ids, to the data ports of classes 0 and 1 of a dataplane (docs/security.md, "No
amplification": the measurement of the refusal limit); with --control, unsealed STATS
requests to a control port instead (--forged-mac: sealed with key id 0 and a random MAC, which
costs the server an HMAC each). For loopback or a network namespace of your own only.

    scripts/junk_flood.py --server 127.0.0.1:7000 --rate 40000 --seconds 9
    scripts/junk_flood.py --control 127.0.0.1:6999 --rate 200000 --seconds 9
"""
import argparse
import os
import random
import socket
import struct
import sys
import time

MAGIC = b"NA"
VERSION = 1
AM_REQUEST = 1
STATS = 0x15
SEALED = 0x20


def datagram(kind, cls, request_id, body):
    """The 24-byte header (docs/protocol.md), then the body."""
    header = MAGIC + bytes([VERSION, kind])
    header += struct.pack("<HHQII", 0, cls, request_id, len(body), 1)
    return header + body


def am_request(cls, request_id, offload, tenant, capability, args):
    body = struct.pack("<IIQHH", offload, tenant, capability, 0, len(args)) + args
    return datagram(AM_REQUEST, cls, request_id, body)


def stats_request(request_id):
    """Unsealed: the control port refuses it (`unauthorized`)."""
    return datagram(STATS, 0, request_id, struct.pack("<IHH", 0, 0, 0))


def forged_request(request_id):
    """A STATS sealed with key id 0 (the admin's) and a MAC no key gives: `unauthorized`."""
    seal = struct.pack("<IIQ", 0, 0, time.time_ns()) + os.urandom(32)
    return datagram(SEALED, 0, request_id, seal + stats_request(request_id))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", default="127.0.0.1:7000", help="data base port IP:PORT")
    p.add_argument("--control", help="a control port IP:PORT: flood it instead")
    p.add_argument("--forged-mac", action="store_true", help="with --control: sealed, wrong MAC")
    p.add_argument("--rate", type=int, default=40000, help="datagrams a second")
    p.add_argument("--seconds", type=float, default=9.0)
    a = p.parse_args()
    ip, base = a.server.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    datagrams = []
    for _ in range(512):
        if a.control:
            cip, cport = a.control.rsplit(":", 1)
            make = forged_request if a.forged_mac else stats_request
            datagrams.append((make(random.getrandbits(64)), (cip, int(cport))))
            continue
        cls = random.choice([0, 1])
        d = am_request(cls, random.getrandbits(64), cls, 1, random.getrandbits(64), os.urandom(56))
        datagrams.append((d, (ip, int(base) + cls)))
    sent, start = 0, time.time()
    while (elapsed := time.time() - start) < a.seconds:
        while sent < int(elapsed * a.rate):
            d, to = datagrams[sent % len(datagrams)]
            try:
                s.sendto(d, to)
            except OSError:
                pass
            sent += 1
        time.sleep(0.0005)
    print(f"sent {sent} in {time.time() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
