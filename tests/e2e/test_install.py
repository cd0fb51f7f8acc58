#!/usr/bin/env python3
"""`cmake --install` into a temporary root (DESTDIR, prefix /usr): the
layout (bin, the interposer under lib/understudy, man pages generated from
--help, bash completion, systemd units naming the installed paths, the
example configs under etc/), and a record + replay run from that root --
the installed CLI finds its own interposer from its install prefix.
Needs: cmake (the build's), tests/programs/time_calls."""
import os
import shutil
import tempfile

from harness import BUILD, expect, log, run, run_main
from install_tree import check_tree, ensure_man_pages, record_replay

NEEDS = ["cmake", "program:time_calls"]


def main():
    ensure_man_pages()
    tmp = tempfile.mkdtemp(prefix="understudy-install-")
    try:
        root = os.path.join(tmp, "root")
        env = dict(os.environ, DESTDIR=root)
        r = run(["cmake", "--install", BUILD, "--prefix", "/usr"], env=env, timeout=300)
        expect(r.rc == 0, "cmake --install failed", r)
        check_tree(root, "/usr", "/etc")
        record_replay(root, tmp, "/usr")
        # Another prefix: etc/ goes under it.
        root2 = os.path.join(tmp, "root2")
        r = run(["cmake", "--install", BUILD, "--prefix", "/opt/us"],
                env=dict(os.environ, DESTDIR=root2), timeout=300)
        expect(r.rc == 0, "cmake --install --prefix /opt/us failed", r)
        check_tree(root2, "/opt/us", "/opt/us/etc")
        log("installed and ran from %s and %s" % (root, root2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run_main(main)
