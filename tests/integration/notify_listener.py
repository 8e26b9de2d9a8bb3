#!/usr/bin/env python3
"""A service manager's end of systemd's notify protocol, for tests.

notify_listener.py SOCKET EVENTS DAEMON_LOG CHECK_SOCKET...

Binds an AF_UNIX datagram socket at SOCKET (what NOTIFY_SOCKET names) and
appends one line per event to EVENTS, with a monotonic timestamp:
  <t> msg <assignments, newlines as '|'>
and, the moment a message carries READY=1, before reading the next one:
  <t> connect <path> ok|<error>    for each CHECK_SOCKET (a stream connect)
  <t> recovery-logged <line>|no    DAEMON_LOG's "recovery:" line of the
                                   latest start (after the last line
                                   "=== snapledger-it: start N ===")
Runs until killed (SIGTERM).
"""
import os
import signal
import socket
import sys
import time


def main():
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    path, events_path, daemon_log = sys.argv[1:4]
    check = sys.argv[4:]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    with open(events_path, "a", buffering=1) as events:
        def log(text):
            events.write(f"{time.monotonic():.3f} {text}\n")

        log("listening")
        while True:
            data = sock.recv(4096).decode("utf-8", "replace")
            log("msg " + data.replace("\n", "|"))
            if "READY=1" not in data.split("\n"):
                continue
            for target in check:
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    conn.connect(target)
                    log(f"connect {target} ok")
                except OSError as e:
                    log(f"connect {target} {e.strerror or e}")
                finally:
                    conn.close()
            logged = "no"
            try:
                with open(daemon_log, encoding="utf-8", errors="replace") as f:
                    for line in f:
                        if line.startswith("=== snapledger-it: start"):
                            logged = "no"
                        elif "recovery: " in line:
                            logged = line.strip()
            except OSError:
                pass
            log("recovery-logged " + logged)


if __name__ == "__main__":
    sys.exit(main())
