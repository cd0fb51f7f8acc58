#!/usr/bin/env python3
"""The Debian package: `cpack -G DEB` from the build, its declared
dependencies (the tools the daemon runs and the shared libraries, each a
Debian 12 package installed on this Debian 12 machine), installed with dpkg
into a fresh, empty dpkg root (--root, --force-depends: the root has no
libc of its own) and used from there: `understudy record` and `replay` run
from ROOT/usr/bin and find ROOT/usr/lib/understudy's interposer.
Needs: cpack, dpkg-deb, dpkg-shlibdeps (dpkg-dev), dpkg,
tests/programs/time_calls."""
import glob
import os
import re
import shutil
import tempfile

from harness import BUILD, expect, log, run, run_main
from install_tree import check_tree, ensure_man_pages, record_replay

NEEDS = ["cpack", "dpkg-deb", "dpkg-shlibdeps", "dpkg", "dpkg-query", "program:time_calls"]


def main():
    ensure_man_pages()
    tmp = tempfile.mkdtemp(prefix="understudy-deb-")
    try:
        out = os.path.join(tmp, "out")
        r = run(["cpack", "-G", "DEB", "--config", os.path.join(BUILD, "CPackConfig.cmake"),
                 "-B", out], cwd=BUILD, timeout=600)
        expect(r.rc == 0, "cpack -G DEB failed", r)
        debs = glob.glob(os.path.join(out, "*.deb"))
        expect(len(debs) == 1, "cpack made %r, not one .deb" % debs, r)
        deb = debs[0]
        depends = run(["dpkg-deb", "-f", deb, "Depends"]).out.strip()
        names = [re.split(r"[ (]", d.strip())[0] for d in depends.split(",")]
        for want in ("iproute2", "iputils-arping", "libbpf1", "libssl3", "libsystemd0",
                     "libxxhash0", "libc6", "libstdc++6"):
            expect(want in names, "the package does not depend on %s: Depends: %s" % (want, depends))
        expect(any(n.startswith("libprotobuf") for n in names),
               "the package does not depend on libprotobuf: %s" % depends)
        # Each dependency is a real package of this Debian 12 machine.
        r = run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\\n"] + names)
        installed = {l.split()[0] for l in r.out.splitlines() if l.endswith(" installed")}
        expect(set(names) <= installed, "dependencies not installed here: %s"
               % sorted(set(names) - installed), r)
        conffiles = run(["dpkg-deb", "--ctrl-tarfile", deb]).stdout
        expect(b"conffiles" in conffiles, "the package declares no conffiles")

        root = os.path.join(tmp, "root")
        for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates"):
            os.makedirs(os.path.join(root, d))
        open(os.path.join(root, "var/lib/dpkg/status"), "w").close()
        r = run(["dpkg", "--root=" + root, "--log=/dev/null", "--force-depends",
                 "--force-not-root", "--force-script-chrootless", "-i", deb], timeout=300)
        expect(r.rc == 0, "dpkg -i into a fresh root failed", r)
        r = run(["dpkg-query", "--root=" + root, "-W", "-f", "${Status}", "understudy"])
        expect(r.out.strip() == "install ok installed", "dpkg does not list understudy as "
               "installed in the fresh root: %r" % r.out, r)
        check_tree(root, "/usr", "/etc")
        record_replay(root, tmp, "/usr")
        log("%s (%d KiB), Depends: %s" % (os.path.basename(deb), os.path.getsize(deb) // 1024,
                                          depends))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run_main(main)
