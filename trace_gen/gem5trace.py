"""gem5 packet traces: the file format gem5's TrafficGen replays in TRACE mode.

The file is gzip'd: the magic bytes ``gem5``, then varint32-length-delimited protobuf messages,
one ``PacketHeader`` (``tick_freq`` must be 1e12: ticks are picoseconds) and one ``Packet`` per
request. The messages are defined here (not copied from gem5) as this ``.proto`` would:

    syntax = "proto2";
    package ProtoMessage;
    message PacketHeader {
      required string obj_id = 1;
      optional uint32 ver = 2 [default = 0];
      required uint64 tick_freq = 3;
      message IdStringEntry { optional uint32 key = 1; optional string value = 2; }
      repeated IdStringEntry id_strings = 4;
    }
    message Packet {
      required uint64 tick = 1;  required uint32 cmd = 2;  required uint64 addr = 3;
      required uint32 size = 4;  optional uint32 flags = 5; optional uint64 pkt_id = 6;
      optional uint64 pc = 7;
    }

``cmd`` is gem5's MemCmd: 1 = ReadReq, 4 = WriteReq. Packets never cross a cache line (gem5's
caches reject such requests), so requests are written one line each.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from pathlib import Path

import numba as nb
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from harness.core import numba_cache
from harness.core.accesstrace import LineAccesses
from harness.core.traffic import LINE_SHIFT

numba_cache.guard()  # a broken cache file of a kernel: compiled again, not a crash

MAGIC = b"gem5"
TICK_FREQ = 10**12
READ_REQ, WRITE_REQ = 1, 4


def _message_classes():
    f = descriptor_pb2.FileDescriptorProto(name="dsa_llc_gem5_packet.proto", package="ProtoMessage",
                                           syntax="proto2")
    T = descriptor_pb2.FieldDescriptorProto
    req, opt, rep = T.LABEL_REQUIRED, T.LABEL_OPTIONAL, T.LABEL_REPEATED

    def add(msg, name, number, label, ftype, type_name=None, default=None):
        fld = msg.field.add(name=name, number=number, label=label, type=ftype)
        if type_name:
            fld.type_name = type_name
        if default is not None:
            fld.default_value = default

    header = f.message_type.add(name="PacketHeader")
    add(header, "obj_id", 1, req, T.TYPE_STRING)
    add(header, "ver", 2, opt, T.TYPE_UINT32, default="0")
    add(header, "tick_freq", 3, req, T.TYPE_UINT64)
    entry = header.nested_type.add(name="IdStringEntry")
    add(entry, "key", 1, opt, T.TYPE_UINT32)
    add(entry, "value", 2, opt, T.TYPE_STRING)
    add(header, "id_strings", 4, rep, T.TYPE_MESSAGE, ".ProtoMessage.PacketHeader.IdStringEntry")
    packet = f.message_type.add(name="Packet")
    for name, number, label, ftype in [("tick", 1, req, T.TYPE_UINT64), ("cmd", 2, req, T.TYPE_UINT32),
                                       ("addr", 3, req, T.TYPE_UINT64), ("size", 4, req, T.TYPE_UINT32),
                                       ("flags", 5, opt, T.TYPE_UINT32), ("pkt_id", 6, opt, T.TYPE_UINT64),
                                       ("pc", 7, opt, T.TYPE_UINT64)]:
        add(packet, name, number, label, ftype)
    pool = descriptor_pool.DescriptorPool()
    fd = pool.Add(f)
    get = message_factory.GetMessageClass
    return (get(pool.FindMessageTypeByName("ProtoMessage.PacketHeader")),
            get(pool.FindMessageTypeByName("ProtoMessage.Packet")), fd)


PacketHeader, Packet, _FILE = _message_classes()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def open_packet_trace(path: str | Path, obj_id: str = "dsa-llc"):
    """A gzip file with the magic and header written; append ``encode_packets`` output."""
    f = gzip.open(path, "wb", compresslevel=3)
    f.write(MAGIC)
    blob = PacketHeader(obj_id=obj_id, tick_freq=TICK_FREQ).SerializeToString()
    f.write(_varint(len(blob)) + blob)
    return f


def write_packet_trace(path: str | Path, chunks: Iterable[LineAccesses], tick_spacing: int = 1_000_000,
                       obj_id: str = "dsa-llc") -> int:
    """Write line accesses as a gem5 packet trace, one packet per line, ``tick_spacing``
    picoseconds apart (1 us by default: far beyond a miss, so no two requests overlap).
    Returns the number of packets."""
    n = 0
    with open_packet_trace(path, obj_id) as f:
        for chunk in chunks:
            f.write(_encode(chunk, n, tick_spacing))
            n += len(chunk)
    return n


def _encode(chunk: LineAccesses, first: int, spacing: int) -> bytes:
    """Length-delimited Packet messages for one chunk, the i-th at tick (first + i) * spacing."""
    ticks = (np.arange(len(chunk), dtype=np.int64) + first) * spacing
    return encode_packets(chunk.line, chunk.write, ticks)


def encode_packets(lines: np.ndarray, writes: np.ndarray, ticks: np.ndarray) -> bytes:
    """Length-delimited Packet messages (the bytes protobuf itself would write), one per line."""
    out = np.empty(len(lines) * 40, dtype=np.uint8)  # a packet takes at most 37 bytes
    n = _encode_packets(np.ascontiguousarray(lines, dtype=np.int64), np.ascontiguousarray(writes),
                        np.ascontiguousarray(ticks, dtype=np.int64), out)
    return out[:n].tobytes()


@nb.njit(inline="always")
def _put_varint(out, n, value):
    v = np.uint64(value)
    while v >= 0x80:
        out[n] = np.uint8((v & np.uint64(0x7F)) | np.uint64(0x80))
        v >>= np.uint64(7)
        n += 1
    out[n] = np.uint8(v)
    return n + 1


@nb.njit(cache=True)
def _varint_len(value):
    v = np.uint64(value)
    n = 1
    while v >= 0x80:
        v >>= np.uint64(7)
        n += 1
    return n


@nb.njit(cache=True)
def _encode_packets(lines, writes, ticks, out):
    n = 0
    for i in range(lines.shape[0]):
        tick = ticks[i]
        addr = lines[i] << LINE_SHIFT
        cmd = WRITE_REQ if writes[i] else READ_REQ
        body = 1 + _varint_len(tick) + 1 + 1 + 1 + _varint_len(addr) + 2
        n = _put_varint(out, n, body)
        out[n] = 0x08  # field 1 (tick), varint
        n = _put_varint(out, n + 1, tick)
        out[n] = 0x10  # field 2 (cmd)
        out[n + 1] = cmd
        out[n + 2] = 0x18  # field 3 (addr)
        n = _put_varint(out, n + 3, addr)
        out[n] = 0x20  # field 4 (size) = 64
        out[n + 1] = 64
        n += 2
    return n


def read_packet_trace(path: str | Path) -> tuple[object, Iterator[object]]:
    """The header and an iterator over the packets of a gem5 packet trace (gzip'd or plain)."""
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if data[:4] != MAGIC:
        raise ValueError(f"{path} is not a gem5 packet trace (bad magic)")
    pos = 4

    def message(cls):
        nonlocal pos
        size, shift = 0, 0
        while True:
            b = data[pos]
            pos += 1
            size |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        m = cls()
        m.ParseFromString(data[pos:pos + size])
        pos += size
        return m

    header = message(PacketHeader)

    def packets():
        while pos < len(data):
            yield message(Packet)

    return header, packets()
