#!/usr/bin/env python3
"""A small RESP key-value server (PING, SET, GET, INCR, DBSIZE) with one input
the journal does not hold: a file it maps MAP_SHARED.

Usage: mapped_kv.py --port PORT --map FILE

Before each command it reads the first byte of FILE through the mapping and
asks for its parent's pid (getppid) when that byte is "1".  The journal holds
the file's contents as they were when it was mapped (interposer/handlers.cc,
Mmap), so once another process writes "1" into FILE the recorded program
makes a getppid call its replay does not: a divergence that is in the
journal, met again at the same event by every replay of it.  The test that
uses it is tests/e2e/test_shadow_heal_checkpoint.py.

Single-threaded, one selector; data in a dict."""
import argparse
import mmap
import os
import selectors
import socket


def parse(buf):
    """One RESP array of bulk strings from the front of `buf`: (args, used)
    or (None, 0) when it is not all there yet."""
    if not buf.startswith(b"*"):
        end = buf.find(b"\r\n")
        if end < 0:
            return None, 0
        return buf[:end].split(), end + 2  # an inline command
    end = buf.find(b"\r\n")
    if end < 0:
        return None, 0
    n = int(buf[1:end])
    pos = end + 2
    args = []
    for _ in range(n):
        end = buf.find(b"\r\n", pos)
        if end < 0 or buf[pos:pos + 1] != b"$":
            return None, 0
        size = int(buf[pos + 1:end])
        start = end + 2
        if len(buf) < start + size + 2:
            return None, 0
        args.append(bytes(buf[start:start + size]))
        pos = start + size + 2
    return args, pos


def bulk(v):
    return b"$-1\r\n" if v is None else b"$%d\r\n%s\r\n" % (len(v), v)


def answer(data, args):
    cmd = args[0].upper() if args else b""
    if cmd == b"PING":
        return b"+PONG\r\n"
    if cmd == b"SET" and len(args) >= 3:
        data[args[1]] = args[2]
        return b"+OK\r\n"
    if cmd == b"GET" and len(args) == 2:
        return bulk(data.get(args[1]))
    if cmd == b"INCR" and len(args) == 2:
        v = int(data.get(args[1], b"0")) + 1
        data[args[1]] = b"%d" % v
        return b":%d\r\n" % v
    if cmd == b"DBSIZE":
        return b":%d\r\n" % len(data)
    return b"-ERR unknown command\r\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--map", required=True, help="the file to map (at least 1 byte)")
    a = ap.parse_args()
    with open(a.map, "r+b") as f:
        view = mmap.mmap(f.fileno(), 0, mmap.MAP_SHARED, mmap.PROT_READ)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", a.port))
    listener.listen(64)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    data = {}
    bufs = {}
    while True:
        for key, _ in sel.select():
            if key.fileobj is listener:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(True)
                sel.register(conn, selectors.EVENT_READ)
                bufs[conn] = bytearray()
                continue
            conn = key.fileobj
            try:
                chunk = conn.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                sel.unregister(conn)
                bufs.pop(conn, None)
                conn.close()
                continue
            buf = bufs[conn]
            buf += chunk
            out = []
            while True:
                args, used = parse(buf)
                if args is None:
                    break
                del buf[:used]
                if view[0] == ord("1"):
                    os.getppid()
                out.append(answer(data, args))
            if out:
                try:
                    conn.sendall(b"".join(out))
                except OSError:
                    sel.unregister(conn)
                    bufs.pop(conn, None)
                    conn.close()


if __name__ == "__main__":
    main()
