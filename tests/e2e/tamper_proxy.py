#!/usr/bin/env python3
"""A tampering TCP proxy for the replication link (docs/formats/link.md).

Usage: tamper_proxy.py --listen HOST:PORT --upstream HOST:PORT --mode MODE
                       [--after N] [--capture FILE]

Runs (typically in its own namespace, between the recorder on node A and
understudyd on node B: the recorder's --backup names the proxy) and forwards
every connection to --upstream, cutting both directions into link messages
(`length u32 | type u8 | payload`, cluster/peer_link.h).  Once, on the first
recorder connection (AUTH_HELLO role 1), it does what MODE says; everything
else passes untouched:

  pass       nothing (a control)
  flip       flip one bit in the middle of the payload of the N-th JOURNAL
             message from the recorder
  content    overwrite 16 bytes in the middle of that payload and, if the
             payload is a journal frame in clear (the link of version 1),
             recompute the frame's checksum so it verifies again
  drop       do not forward that message
  forge-ack  after it, send the recorder a JOURNAL message of our own shaped
             like the backup's next one (its counter) holding a stream ACK
             frame for seq 2^40 with a valid journal checksum
  role       rewrite the role of the recorder's AUTH_HELLO from recorder (1)
             to admin (2)
  replay     after that message, open a new connection to the upstream and
             send it every byte the recorder sent so far on its connection
             (a captured handshake and stream), then report what came back

Prints JSON lines on stdout (flushed): {"event": "listening"}, one
{"event": "conn", ...} per connection, {"event": "tampered", ...} when MODE
acted, {"event": "replayed", "answer": [types...]} for replay.  --capture:
every byte forwarded in either direction is appended to FILE (the test
greps it for recorded client bytes in clear).  Stops on SIGTERM/SIGKILL.
No dependency beyond python's standard library and wire.py (varints and
the frame checksum through libxxhash).
"""
import argparse
import json
import os
import socket
import struct
import sys
import threading

from wire import varint, xxh3_low32

HEADER = 5                       # u32 length, u8 type
AUTH_HELLO, AUTH_RESULT, JOURNAL = 1, 4, 10
ROLE_RECORDER, ROLE_ADMIN = 1, 2
STREAM_ACK = 17                  # journal/format.h FrameType::kStreamAck
FRAME_HEADER = 9                 # journal frame: u32 length, u32 crc, u8 type
MAX_PAYLOAD = (64 << 20) + 8192

_lock = threading.Lock()
_done = False                    # MODE acted (once per proxy run)
_conn_ids = iter(range(1, 1 << 30))
_capture = None


def emit(**kw):
    with _lock:
        sys.stdout.write(json.dumps(kw) + "\n")
        sys.stdout.flush()


def capture(data):
    if _capture is not None:
        with _lock:
            _capture.write(data)
            _capture.flush()


def journal_frame(ftype, payload):
    crc = xxh3_low32(bytes([ftype]) + payload)
    return struct.pack("<IIB", len(payload), crc, ftype) + payload


def link_message(mtype, payload):
    return struct.pack("<IB", len(payload), mtype) + payload


def hello_role(payload):
    """(role, offset of its varint) of an AuthHello (cluster/link.proto field
    2), or (None, None)."""
    i = 0
    try:
        while i < len(payload):
            key, j = varint(payload, i)
            field, wire = key >> 3, key & 7
            if wire == 0:
                v, k = varint(payload, j)
                if field == 2:
                    return v, j
                i = k
            elif wire == 2:
                n, k = varint(payload, j)
                i = k + n
            elif wire == 1:
                i = j + 8
            elif wire == 5:
                i = j + 4
            else:
                return None, None
    except IndexError:
        pass
    return None, None


def claim():
    """True once: the caller is the one that tampers."""
    global _done
    with _lock:
        if _done:
            return False
        _done = True
        return True


class Conn:
    def __init__(self, args, down):
        self.args, self.down = args, down
        self.id = next(_conn_ids)
        self.up = socket.create_connection(args.upstream, timeout=5)
        self.up.settimeout(None)
        for s in (self.up, self.down):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.role = None
        self.journal_msgs = 0
        self.sent = bytearray()        # what the client sent (replay mode only)
        self.forge = threading.Event()  # b2a: inject the forged ack
        self.handshake_done = False     # b2a saw AUTH_RESULT
        self.b2a_counter = None         # counter of the last sealed b2a message
        self.down_lock = threading.Lock()

    def run(self):
        emit(event="conn", conn=self.id)
        t = threading.Thread(target=self.pump, args=(self.up, self.down, False), daemon=True)
        t.start()
        self.pump(self.down, self.up, True)
        t.join()

    def pump(self, src, dst, a2b):
        buf = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                buf += data
                while len(buf) >= HEADER:
                    n, mtype = struct.unpack_from("<IB", buf)
                    if n > MAX_PAYLOAD:          # not our framing: pass it all on
                        self.send(dst, buf, a2b)
                        buf = b""
                        break
                    if len(buf) < HEADER + n:
                        break
                    msg, buf = buf[:HEADER + n], buf[HEADER + n:]
                    out = self.a2b(msg, mtype) if a2b else self.b2a(msg)
                    if out:
                        self.send(dst, out, a2b)
                    if not a2b and self.forge.is_set() and self.b2a_counter is not None:
                        self.forge.clear()
                        # Shaped like the next sealed message: its counter,
                        # then a stream ACK frame (valid checksum) where the
                        # ciphertext goes, then a tag we cannot compute.
                        ack = journal_frame(STREAM_ACK, struct.pack("<Q", 1 << 40))
                        body = struct.pack("<Q", self.b2a_counter + 1) + ack + b"\0" * 16
                        self.send(dst, link_message(JOURNAL, body), a2b)
                        emit(event="tampered", mode="forge-ack", conn=self.id,
                             what="sent the recorder a forged ACK for seq 2^40 (journal "
                                  "checksum valid, counter %d)" % (self.b2a_counter + 1))
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def send(self, dst, data, a2b):
        capture(data)
        if a2b:
            if self.args.mode == "replay" and not _done:
                self.sent += data
            dst.sendall(data)
        else:
            with self.down_lock:
                dst.sendall(data)

    def b2a(self, msg):
        # After the handshake the first 8 payload bytes are the sender's
        # message counter (docs/formats/link.md).
        if self.handshake_done and len(msg) >= HEADER + 8:
            self.b2a_counter, = struct.unpack_from("<Q", msg, HEADER)
        elif msg[4] == AUTH_RESULT:
            self.handshake_done = True
        return msg

    def a2b(self, msg, mtype):
        mode = self.args.mode
        payload = bytearray(msg[HEADER:])
        if mtype == AUTH_HELLO and self.role is None:
            self.role, at = hello_role(payload)
            emit(event="hello", conn=self.id, role=self.role)
            if mode == "role" and self.role == ROLE_RECORDER and claim():
                payload[at] = ROLE_ADMIN
                emit(event="tampered", mode=mode, conn=self.id,
                     what="rewrote the AUTH_HELLO role from recorder to admin")
                return msg[:HEADER] + bytes(payload)
            return msg
        if mtype != JOURNAL or self.role != ROLE_RECORDER:
            return msg
        self.journal_msgs += 1
        if self.journal_msgs < self.args.after or mode in ("pass", "role") or _done:
            return msg
        if not claim():
            return msg
        mid = len(payload) // 2
        if mode == "flip":
            payload[mid] ^= 0x10
            emit(event="tampered", mode=mode, conn=self.id, index=self.journal_msgs,
                 what="flipped bit 4 of byte %d of %d" % (mid, len(payload)))
            return msg[:HEADER] + bytes(payload)
        if mode == "content":
            end = min(len(payload), mid + 16)
            payload[mid:end] = b"X" * (end - mid)
            fixed = False
            if len(payload) >= FRAME_HEADER:
                flen, = struct.unpack_from("<I", payload)
                if flen == len(payload) - FRAME_HEADER:      # a journal frame in clear
                    struct.pack_into("<I", payload, 4, xxh3_low32(payload[8:]))
                    fixed = True
            emit(event="tampered", mode=mode, conn=self.id, index=self.journal_msgs,
                 what="overwrote bytes %d..%d of %d; frame checksum %s" %
                      (mid, end, len(payload), "recomputed" if fixed else
                       "not found (no frame in clear)"))
            return msg[:HEADER] + bytes(payload)
        if mode == "drop":
            emit(event="tampered", mode=mode, conn=self.id, index=self.journal_msgs,
                 what="dropped JOURNAL message %d (%d bytes)" % (self.journal_msgs, len(msg)))
            return None
        if mode == "forge-ack":
            self.forge.set()
            return msg
        if mode == "replay":
            threading.Thread(target=self.replay, args=(bytes(self.sent) + msg,),
                             daemon=True).start()
            return msg
        return msg

    def replay(self, data):
        answer = []
        try:
            s = socket.create_connection(self.args.upstream, timeout=5)
            s.sendall(data)
            buf = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                buf += d
            while len(buf) >= HEADER:
                n, t = struct.unpack_from("<IB", buf)
                answer.append(t)
                buf = buf[HEADER + n:]
            s.close()
        except OSError as e:
            answer.append("error: %s" % e)
        emit(event="tampered", mode="replay", conn=self.id,
             what="replayed %d captured bytes of connection %d on a new connection" %
                  (len(data), self.id), answer=answer)


def hostport(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", type=hostport, required=True)
    ap.add_argument("--upstream", type=hostport, required=True)
    ap.add_argument("--mode", required=True,
                    choices=["pass", "flip", "content", "drop", "forge-ack", "role", "replay"])
    ap.add_argument("--after", type=int, default=200,
                    help="act on the N-th JOURNAL message of the recorder's connection")
    ap.add_argument("--capture")
    args = ap.parse_args()
    global _capture
    if args.capture:
        _capture = open(args.capture, "ab")
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(args.listen)
    ls.listen(64)
    emit(event="listening", listen="%s:%d" % args.listen)
    while True:
        down, _ = ls.accept()
        try:
            c = Conn(args, down)
        except OSError as e:
            emit(event="upstream-error", error=str(e))
            down.close()
            continue
        threading.Thread(target=c.run, daemon=True).start()


if __name__ == "__main__":
    main()
