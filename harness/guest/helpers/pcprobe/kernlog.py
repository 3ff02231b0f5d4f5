"""The kernel log as /dev/kmsg records with their sequence numbers."""

import errno
import os


class KernelLog:
    """The kernel log as /dev/kmsg records, each with its sequence number.

    A mark is the sequence number of the last record read; "since a mark" is every record
    with a higher number. Counting lines cannot work: once the ring buffer is full, old
    records drop off as new ones arrive and the count stays the same. One reader is kept
    for the life of the server, so it sees each record once even as the buffer wraps; when
    records were overwritten before it read them, it says how many (``missed``).
    """

    KEEP = 20000  # records remembered for since(); a test logs far fewer

    def __init__(self):
        # Opening /dev/kmsg starts at the oldest record still in the buffer.
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        self.records = []  # (seq, message)
        self.last = -1

    def pump(self):
        while True:
            try:
                raw = os.read(self.fd, 8192)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten before we read them: go on
                    continue
                raise
            prefix, _, rest = raw.decode(errors="replace").partition(";")
            fields = prefix.split(",")
            seq = int(fields[1])
            self.last = seq
            # Continuation lines (" SUBSYSTEM=...") are dictionary data, not the message.
            self.records.append((seq, rest.split("\n", 1)[0]))
        del self.records[:-self.KEEP]

    def mark(self):
        self.pump()
        return {"seq": self.last}

    def since(self, mark):
        self.pump()
        lines = [text for seq, text in self.records if seq > mark]
        # Sequence numbers have no gaps: whatever is not here was overwritten unread.
        missed = max(0, self.last - max(mark, -1) - len(lines)) if mark >= 0 else 0
        return {"lines": lines, "seq": self.last, "missed": missed}


_KERNEL_LOG = []


def kernel_log():
    if not _KERNEL_LOG:
        _KERNEL_LOG.append(KernelLog())
    return _KERNEL_LOG[0]
