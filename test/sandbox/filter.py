"""Runs a command under a systemd unit's SystemCallFilter=, SystemCallErrorNumber= and
RestrictAddressFamilies=, read from the unit file, with libseccomp (python3-seccomp): what
test/sandbox/run.sh cannot get from systemd where no systemd manager runs.
Usage: filter.py UNIT_FILE COMMAND..."""

import errno
import os
import socket
import subprocess
import sys

import seccomp


def service_settings(path):
    settings, section = {}, None
    for line in open(path, encoding="utf8"):
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def expand(name):
    """The system calls a name stands for: a @group, through systemd-analyze, or itself."""
    if not name.startswith("@"):
        return {name}
    listing = subprocess.run(
        ["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True
    ).stdout.splitlines()[1:]
    calls = set()
    for entry in (line.strip() for line in listing):
        if entry and not entry.startswith("#"):
            calls |= expand(entry)
    return calls


settings = service_settings(sys.argv[1])
allowed = set()
for i, value in enumerate(settings["SystemCallFilter"]):
    deny = value.startswith("~")
    if i == 0 and deny:
        sys.exit("filter.py: the first SystemCallFilter= must be an allow list")
    for name in value.lstrip("~").split():
        allowed = (allowed - expand(name)) if deny else (allowed | expand(name))

refusal = getattr(errno, settings.get("SystemCallErrorNumber", ["EPERM"])[-1])
rules = seccomp.SyscallFilter(defaction=seccomp.ERRNO(refusal))
for call in sorted(allowed - {"socket"}):
    try:
        rules.add_rule(seccomp.ALLOW, call)
    except (RuntimeError, ValueError):
        pass  # not a system call of this architecture
for family in settings["RestrictAddressFamilies"][-1].split():
    rules.add_rule(seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.EQ, int(getattr(socket, family))))
rules.load()
os.execvp(sys.argv[2], sys.argv[2:])
