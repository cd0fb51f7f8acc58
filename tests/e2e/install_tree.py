"""Shared by test_install.py and test_deb.py: checks of an installed
understudy tree at ROOT/PREFIX (a DESTDIR install or a package unpacked
into a fresh dpkg root), and a record + replay run from it."""
import os
import re

from harness import BUILD, expect, log, program, run

FILES = [
    "bin/understudy", "bin/understudyd", "bin/understudy-checkpoint",
    "lib/understudy/libunderstudy_preload.so",
    "share/man/man1/understudy.1", "share/man/man1/understudyd.1",
    "share/man/man1/understudy-record.1", "share/man/man1/understudy-run.1",
    "share/bash-completion/completions/understudy",
    "lib/systemd/system/understudyd.service", "lib/systemd/system/understudy@.service",
]


def ensure_man_pages():
    """The man pages are an ALL target; a build of only some targets may lack
    them.  Building them is cheap once the programs are built."""
    if not os.path.exists(os.path.join(BUILD, "man", "stamp")):
        r = run(["cmake", "--build", BUILD, "--target", "understudy_man"], timeout=600)
        expect(r.rc == 0, "building the man pages failed", r)


def check_tree(root, prefix="/usr", etc="/etc"):
    base = root + prefix
    for f in FILES:
        expect(os.path.exists(os.path.join(base, f)), "installed tree lacks %s/%s" % (prefix, f))
    for f in ("understudyd.conf", "example.conf"):
        expect(os.path.exists(root + etc + "/understudy/" + f),
               "installed tree lacks %s/understudy/%s" % (etc, f))
    unit = open(os.path.join(base, "lib/systemd/system/understudyd.service")).read()
    expect("ExecStart=%s/bin/understudyd --config %s/understudy/understudyd.conf" % (prefix, etc)
           in unit, "understudyd.service does not start %s/bin/understudyd with the config:\n%s"
           % (prefix, unit))
    # systemd (issue 15 part 2): notify with a watchdog, reload by SIGHUP.
    for want in ("Type=notify", "NotifyAccess=main", "WatchdogSec=", "ExecReload=/bin/kill -HUP"):
        expect(want in unit, "understudyd.service lacks %s:\n%s" % (want, unit))
    check_units_verify(root, prefix, base)
    page = open(os.path.join(base, "share/man/man1/understudy-record.1")).read()
    expect(".TH" in page and re.search(r"(\\-|-){2}journal", page),
           "understudy-record.1 is not a man page generated from --help")
    # Bash completion: `understudy rec<TAB>` and `understudy record --jo<TAB>`.
    comp = os.path.join(base, "share/bash-completion/completions/understudy")
    script = ('source %s; COMP_WORDS=(%s rec); COMP_CWORD=1; _understudy; echo "${COMPREPLY[@]}";'
              'COMP_WORDS=(%s record --jo); COMP_CWORD=2; _understudy; echo "${COMPREPLY[@]}"'
              % (comp, base + "/bin/understudy", base + "/bin/understudy"))
    r = run(["bash", "-c", script], timeout=30)
    lines = r.out.splitlines()
    expect(r.rc == 0 and len(lines) == 2 and "record" in lines[0].split() and
           "--journal" in lines[1].split(), "bash completion does not complete", r)
    # The example configs name only real options: with every commented
    # "# name = value" line switched on, both programs accept them.
    for prog, conf, sub in (("understudyd", "understudyd.conf", []),
                            ("understudy", "example.conf", ["run"])):
        text = open(root + etc + "/understudy/" + conf).read()
        on = re.sub(r"(?m)^# ([a-z-]+ = .*)$", r"\1", text)
        on = re.sub(r'(?m)^(metrics|node-name|service-address|service-dev|journal) = "".*$', "", on)
        path = os.path.join(os.path.dirname(root), "all-" + conf)
        with open(path, "w") as f:
            f.write(on)
        r = run([base + "/bin/" + prog] + sub + ["--config", path, "--help"], timeout=30)
        expect(r.rc == 0, "%s rejects its example config %s with every option on" % (prog, conf), r)
    log("installed tree under %s%s: %d files checked, completion: %r" % (root, prefix, len(FILES),
                                                                          lines))


def record_replay(root, tmp, prefix="/usr"):
    """Record and replay tests/programs/time_calls with the installed CLI,
    which must find its own interposer (no UNDERSTUDY_PRELOAD)."""
    cli = root + prefix + "/bin/understudy"
    env = {k: v for k, v in os.environ.items() if k != "UNDERSTUDY_PRELOAD"}
    r = run([cli, "doctor", "--json"], env=env, timeout=120)
    import json
    checks = {c["name"]: c for c in json.loads(r.out)["checks"]}
    want = os.path.realpath(root + prefix + "/lib/understudy/libunderstudy_preload.so")
    expect(checks["preload_library"]["ok"] and checks["preload_library"]["detail"] == want,
           "doctor does not find the installed interposer %s: %r" % (want,
                                                                    checks["preload_library"]))
    journal = os.path.join(tmp, "journal")
    rec = run([cli, "record", "--journal", journal, "--", program("time_calls")], env=env)
    expect(rec.rc == 0, "record from the installed tree exit %s" % rec.rc, rec)
    rep = run([cli, "replay", "--journal", journal, "--show-output"], env=env)
    expect(rep.rc == 0, "replay from the installed tree exit %s" % rep.rc, rep)
    expect(rep.stdout == rec.stdout, "installed replay's stdout differs from the recording", rep)
    # UNDERSTUDY_PRELOAD, when set, is the only place looked at.
    env2 = dict(env, UNDERSTUDY_PRELOAD=os.path.join(tmp, "no-such-preload.so"))
    bad = run([cli, "record", "--journal", journal + "2", "--", program("time_calls")], env=env2)
    expect(bad.rc != 0 and b"no-such-preload.so" in bad.stderr,
           "UNDERSTUDY_PRELOAD pointing nowhere was not honoured", bad)
    log("record + replay from %s%s: %d bytes of output replayed" % (root, prefix, len(rec.stdout)))


def check_units_verify(root, prefix, base):
    """systemd-analyze verify on both units (the template as an instance),
    with their binaries pointed into the installed tree: no warning at all."""
    import shutil
    import subprocess
    import tempfile
    if shutil.which("systemd-analyze") is None:
        return
    d = tempfile.mkdtemp(prefix="understudy-units-")
    try:
        for name, as_name in (("understudyd.service", "understudyd.service"),
                              ("understudy@.service", "understudy@.service")):
            text = open(os.path.join(base, "lib/systemd/system", name)).read()
            text = text.replace("%s/bin/" % prefix, "%s/bin/" % base) if root else text
            with open(os.path.join(d, as_name), "w") as f:
                f.write(text)
        for unit in ("understudyd.service", "understudy@redis.service"):
            r = subprocess.run(["systemd-analyze", "verify", "--man=no", os.path.join(d, unit)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, cwd=d)
            expect(r.returncode == 0 and not r.stderr.strip(),
                   "systemd-analyze verify %s: %s" % (unit, r.stderr.decode(errors="replace")))
    finally:
        shutil.rmtree(d, ignore_errors=True)
