"""io_uring reads by raw system calls (no liburing in the guest)."""

import ctypes
import errno
import mmap
import os
import struct

from pcprobe.base import libc, oserror

# Layouts from include/uapi/linux/io_uring.h (x86_64): io_uring_params is 120 bytes with the
# SQ ring offsets at 40 and the CQ ring offsets at 80; an SQE is 64 bytes, a CQE 16.
SYS_IO_URING_SETUP, SYS_IO_URING_ENTER = 425, 426
IORING_OP_READ, IORING_ENTER_GETEVENTS = 22, 1
IORING_OFF_SQ_RING, IORING_OFF_CQ_RING, IORING_OFF_SQES = 0, 0x8000000, 0x10000000


def io_uring_read(fd, size, chunk=65536):
    params = ctypes.create_string_buffer(120)
    ring = libc.syscall(SYS_IO_URING_SETUP, 4, params)
    if ring < 0:
        oserror("io_uring_setup")
    _sq_head, sq_tail, sq_mask, _, _, _, sq_array = struct.unpack_from("<7I", params, 40)
    cq_head, cq_tail, cq_mask, _, _, cqes = struct.unpack_from("<6I", params, 80)
    sq_entries, cq_entries = struct.unpack_from("<2I", params, 0)
    prot = mmap.PROT_READ | mmap.PROT_WRITE
    sq = mmap.mmap(ring, sq_array + 4 * sq_entries, mmap.MAP_SHARED, prot,
                   offset=IORING_OFF_SQ_RING)
    cq = mmap.mmap(ring, cqes + 16 * cq_entries, mmap.MAP_SHARED, prot,
                   offset=IORING_OFF_CQ_RING)
    sqes = mmap.mmap(ring, 64 * sq_entries, mmap.MAP_SHARED, prot, offset=IORING_OFF_SQES)
    buf = ctypes.create_string_buffer(chunk)
    out, offset = [], 0
    try:
        while offset < size:
            tail = struct.unpack_from("<I", sq, sq_tail)[0]
            index = tail & struct.unpack_from("<I", sq, sq_mask)[0]
            sqe = struct.pack("<BBHiQQIIQ", IORING_OP_READ, 0, 0, fd, offset,
                              ctypes.addressof(buf), chunk, 0, offset).ljust(64, b"\0")
            sqes[64 * index:64 * index + 64] = sqe
            struct.pack_into("<I", sq, sq_array + 4 * index, index)
            struct.pack_into("<I", sq, sq_tail, tail + 1)
            if libc.syscall(SYS_IO_URING_ENTER, ring, 1, 1, IORING_ENTER_GETEVENTS, None, 0) < 0:
                oserror("io_uring_enter")
            head = struct.unpack_from("<I", cq, cq_head)[0]
            if head == struct.unpack_from("<I", cq, cq_tail)[0]:
                raise OSError(errno.EIO, "io_uring: no completion after io_uring_enter")
            slot = cqes + 16 * (head & struct.unpack_from("<I", cq, cq_mask)[0])
            _user, res, _flags = struct.unpack_from("<QiI", cq, slot)
            struct.pack_into("<I", cq, cq_head, head + 1)
            if res < 0:
                raise OSError(-res, f"io_uring read at {offset}: {os.strerror(-res)}")
            if res == 0:
                break
            out.append(buf.raw[:res])
            offset += res
    finally:
        sq.close()
        cq.close()
        sqes.close()
        os.close(ring)
    return b"".join(out)
