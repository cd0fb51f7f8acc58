"""Byte-level helpers the e2e tests share for reading what understudy writes:
protobuf varints and the journal's frame checksum (the low 32 bits of
XXH3-64, docs/formats/journal.md).  Standard library and libxxhash only, so
a process started alone inside a namespace (tamper_proxy.py) can use it
without the harness."""
import ctypes

_xxh = None


def xxh3_low32(data):
    """The frame checksum of DATA."""
    global _xxh
    if _xxh is None:
        _xxh = ctypes.CDLL("libxxhash.so.0")  # the library the journal links
        _xxh.XXH3_64bits.restype = ctypes.c_uint64
        _xxh.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    return _xxh.XXH3_64bits(bytes(data), len(data)) & 0xFFFFFFFF


def varint(buf, i):
    """(value, offset after it) of the protobuf varint at BUF[i]."""
    v = shift = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return v, i
