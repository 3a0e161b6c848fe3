"""Files (INVARIANTS.md §13, §19, §20): who may read and write what under /etc, and no
compilers on the host.

  §13  every env file under /etc/vos-stack is 0600 root (they hold the stack's secrets)
  §19  passwd/group 0644, shadow/gshadow 0640 root:shadow, sshd_config and crontab 0600,
       the cron directories 0700 (stricter passes; paths that do not exist are skipped);
       no regular file under /etc is world-writable
  §20  no compiler or build tool installed (gcc, g++, clang, tcc, make, build-essential)

Run alone: pytest -p checks.plugin checks/test_files.py --hosts=ssh://HOST
"""

import shlex

import pytest

from checks import plugin
from checks.accounts_rules import (
    PERMISSION_BASELINE,
    STAT_FORMAT,
    compiler_violations,
    env_file_violations,
    parse_stat,
    permission_violations,
    world_writable_violations,
)

# The shared fixtures (pytest finds fixtures among a module's globals).
expect, mesh_ip = plugin.expect, plugin.mesh_ip

STACK_DIR = "/etc/vos-stack"


def test_permission_baseline(host):
    """§19: each baseline path that exists is no more open than the baseline, owned right
    (one `stat` for every path: see accounts_rules.parse_stat)."""
    paths = " ".join(shlex.quote(rule.path) for rule in PERMISSION_BASELINE)
    with plugin.as_root(host):
        # C locale: a missing path is told apart from an unreadable one by stat's message
        out = host.run(f"LC_ALL=C stat -c '{STAT_FORMAT}' -- {paths}")
    found = parse_stat(out.stdout)
    unreadable = [line for line in out.stderr.splitlines()
                  if line.strip() and "No such file or directory" not in line]
    assert not unreadable, f"FILES §19: `stat` could not read: {unreadable[:3]}"
    problems = []
    for rule in PERMISSION_BASELINE:
        if rule.path in found:
            problems += permission_violations(rule, *found[rule.path])
    assert not problems, "\n".join(problems)


def test_no_world_writable_file_under_etc(host):
    """§19: `find /etc -xdev -type f -perm -0002` finds nothing (dev-sec os-06)."""
    with plugin.as_root(host):
        out = host.run("find /etc -xdev -type f -perm -0002")
    assert out.rc == 0, f"FILES §19: `find /etc` failed: {out.stderr.strip()[:200]}"
    problems = world_writable_violations(out.stdout)
    assert not problems, "\n".join(problems)


def test_stack_env_files_are_closed(host):
    """§13: the stack's env files (app.env, migrate.env, worker.env, …) are 0600 root.
    Skips on a host without /etc/vos-stack (no stack deployed)."""
    with plugin.as_root(host):
        if not host.file(STACK_DIR).is_directory:
            pytest.skip(f"FILES §13: no {STACK_DIR} on this host (no stack deployed)")
        out = host.run(f"find {STACK_DIR} -xdev -type f -name '*.env' -printf '%m %u %g %p\\n'")
    assert out.rc == 0, f"FILES §13: `find {STACK_DIR}` failed: {out.stderr.strip()[:200]}"
    problems = env_file_violations(out.stdout)
    assert not problems, "\n".join(problems)


def test_no_compilers(host):
    """§20: no compiler or build tool is installed (CIS 1.x 'compilers', dev-sec)."""
    out = host.run("dpkg-query -W -f '${Package} ${db:Status-Abbrev}\\n'")
    assert out.rc == 0, f"FILES §20: `dpkg-query` failed: {out.stderr.strip()[:200]}"
    problems = compiler_violations(out.stdout)
    assert not problems, "\n".join(problems)
