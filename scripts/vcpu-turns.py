"""How finely the guest's two vCPUs interleave: run in the guest as
``python3 vcpu-turns.py SECONDS [SLEEPER_PERIOD_S]``, for example through ``make exec``:

    make exec CMD="echo $(base64 -w0 scripts/vcpu-turns.py) | base64 -d | python3 - 5 200e-6"

Two spinners, one pinned to each CPU, each count their own loops in shared memory and note
how often the other's count moved between two of their loops: on CPUs that run at once that
is nearly every loop; under single-threaded TCG, where the vCPUs take turns on one host
thread, it is once per turn. With a period, a SCHED_FIFO sleeper on each CPU wakes that
often (each wake-up a timer interrupt, which ends the running vCPU's turn). Prints turns per
second seen from each CPU and the local timer interrupts per second.
"""

import mmap
import os
import struct
import sys
import time

SECONDS = float(sys.argv[1])
PERIOD = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
shared = mmap.mmap(-1, 4096)


def spinner(cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    mine, theirs = 8 * cpu, 8 * (1 - cpu)
    loops = turns = 0
    last = struct.unpack_from("Q", shared, theirs)[0]
    end = time.monotonic() + SECONDS
    while True:
        loops += 1
        struct.pack_into("Q", shared, mine, loops)
        seen = struct.unpack_from("Q", shared, theirs)[0]
        if seen != last:
            turns, last = turns + 1, seen
        if loops % 1000 == 0 and time.monotonic() > end:
            break
    struct.pack_into("Q", shared, 16 + 8 * cpu, turns)


def sleeper(cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except OSError:
        pass
    end = time.monotonic() + SECONDS
    while time.monotonic() < end:
        time.sleep(PERIOD)


def timer_interrupts() -> int:
    with open("/proc/interrupts") as fh:
        for line in fh:
            fields = line.split()
            if fields and fields[0] == "LOC:":
                return sum(int(f) for f in fields[1:] if f.isdigit())
    return 0


def main() -> None:
    before = timer_interrupts()
    children = []
    for cpu in (0, 1):
        for work in [spinner] + ([sleeper] if PERIOD > 0 else []):
            pid = os.fork()
            if pid == 0:
                try:
                    work(cpu)
                finally:
                    os._exit(0)
            children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    seen = [struct.unpack_from("Q", shared, 16 + 8 * cpu)[0] / SECONDS for cpu in (0, 1)]
    print(f"sleeper period {PERIOD * 1e6:.0f} us: vCPU turns seen {seen[0]:.0f}/s from cpu0, "
          f"{seen[1]:.0f}/s from cpu1; timer interrupts "
          f"{(timer_interrupts() - before) / SECONDS:.0f}/s")


if __name__ == "__main__":
    main()
