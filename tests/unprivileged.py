"""Run a child process that permission bits apply to, even when the tests run as root.

Root reads a mode-000 file through the capabilities CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH;
dropping them from the bounding set before exec leaves a uid-0 process that the file modes bind
(as the owner), so permission errors can be tested for real in containers that run as root.
"""

from __future__ import annotations

import ctypes
import os

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def drop_file_capabilities() -> None:
    """preexec_fn for subprocess: no-op for ordinary users."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def permissions_apply() -> bool:
    """Whether a child started with ``drop_file_capabilities`` is refused a mode-000 file."""
    import subprocess
    import sys
    import tempfile
    with tempfile.NamedTemporaryFile() as f:
        os.chmod(f.name, 0)
        try:
            p = subprocess.run([sys.executable, "-c", f"open({f.name!r}).read()"], capture_output=True,
                               preexec_fn=drop_file_capabilities, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return False
        return p.returncode != 0 and b"PermissionError" in p.stderr


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


class file_permissions_enforced:
    """Context manager: in this thread, file modes bind even a root process (the two DAC
    capabilities leave the effective set and come back on exit). No-op for ordinary users."""

    def __enter__(self):
        self.saved = None
        if os.geteuid() != 0:
            return self
        libc = ctypes.CDLL(None, use_errno=True)
        header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()
        if libc.capget(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capget failed")
        self.saved = (_CapData * 2)(*data)
        data[0].effective &= ~((1 << CAP_DAC_OVERRIDE) | (1 << CAP_DAC_READ_SEARCH))
        if libc.capset(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capset failed")
        self.libc, self.header = libc, header
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            self.libc.capset(ctypes.byref(self.header), self.saved)
        return False
