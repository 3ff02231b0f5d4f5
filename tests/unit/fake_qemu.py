#!/usr/bin/env python3
"""A stand-in for qemu-system-x86_64 at the process seam: prints a scripted console on
stdout and plays the QEMU side of QMP (greeting, capabilities, info usernet, quit).

FAKE_QEMU_MODE: ready | panic | silent | exit | noqmp | badrestore | oopsrestore. With
-incoming (a restore) it prints no ready marker, as a restored guest does not boot again;
badrestore then fails the way QEMU does on a stream it cannot load, oopsrestore loads it
and the guest oopses (QEMU stays up, the guest never answers). QMP migrate writes a stand-in stream.
"""
import json
import os
import socket
import sys
import time

mode = os.environ.get("FAKE_QEMU_MODE", "ready")
argv = sys.argv[1:]
if argv == ["--version"]:
    print("QEMU emulator version 0.0 (fake)")
    sys.exit(0)
incoming = "-incoming" in argv
qmp_path = next(a.split("path=", 1)[1] for a in argv if a.startswith("socket,id=qmp0,path="))
print("[    0.000000] Linux version 0.0-fake", flush=True)
if mode == "exit":
    print("qemu-system-x86_64: -kernel /nope: could not load kernel", flush=True)
    sys.exit(1)
if mode == "noqmp":
    time.sleep(60)
sock = socket.socket(socket.AF_UNIX)
sock.connect(qmp_path)
sock.sendall(json.dumps({"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0},
                                             "package": "fake"}, "capabilities": []}}).encode()
             + b"\r\n")


def requests():
    """QMP clients need not end a command with a newline: decode JSON from a stream."""
    decoder, buffer = json.JSONDecoder(), ""
    while True:
        data = sock.recv(65536)
        if not data:
            return
        buffer += data.decode()
        while buffer.strip():
            try:
                obj, end = decoder.raw_decode(buffer.lstrip())
            except ValueError:
                break
            buffer = buffer.lstrip()[end:]
            yield obj


stream = requests()
capabilities = next(stream)  # QMP is up before the guest runs, as in QEMU
sock.sendall(json.dumps({"return": {}, "id": capabilities.get("id")}).encode() + b"\r\n")
if mode == "panic":
    print("[    1.0] Kernel panic - not syncing: VFS: Unable to mount root fs", flush=True)
    time.sleep(0.2)
    sys.exit(0)
if incoming and mode == "badrestore":
    print("qemu-system-x86_64: load of migration failed: Invalid argument", flush=True)
    sys.exit(1)
if incoming and mode == "oopsrestore":
    print("BUG: kernel NULL pointer dereference, address: 0000000000000000", flush=True)
    print("Oops: Oops: 0010 [#1] SMP", flush=True)
    print("Kernel panic - not syncing: Attempted to kill the idle task!", flush=True)
if mode in ("ready", "badrestore", "oopsrestore") and not incoming:
    print("HARNESS-GUEST: ready", flush=True)
for request in stream:
    reply: dict[str, object] = {"return": {}}
    if request["execute"] == "migrate":
        target = request["arguments"]["uri"].split("cat > ", 1)[1].strip("'")
        with open(target, "wb") as stream_file:
            stream_file.write(b"fake guest memory")
    if request["execute"] == "query-migrate":
        reply = {"return": {"status": "completed"}}
    if request["execute"] == "query-status":
        reply = {"return": {"status": "running", "running": True}}
    if request["execute"] == "human-monitor-command":
        reply = {"return": "Hub -1 (net0):\r\n  Protocol[State]    FD  Source Address  Port"
                           "   Dest. Address  Port RecvQ SendQ\r\n  TCP[HOST_FORWARD]  13"
                           "       127.0.0.1 1     10.0.2.15    22     0     0\r\n"}
    if "id" in request:
        reply["id"] = request["id"]
    sock.sendall(json.dumps(reply).encode() + b"\r\n")
    if request["execute"] == "quit":
        sys.exit(0)
