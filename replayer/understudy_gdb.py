# understudy's gdb extension, loaded by `understudy replay --gdb`.
#
# It talks to the replayer that started gdb over a unix socket (path in
# UNDERSTUDY_GDB_SOCKET, one request line, one reply line):
#   status          -> "events_done E until U state S events M"
#   restart N       -> "ok": the replay is reset to its start, to stop before
#                      event N (0 = run to the end); the next `run` replays it
#   outcome WORDS   -> "ok": how the program ended under gdb, for the
#                      replayer's final report
#
# What it adds to gdb:
#   * `run` restarts the replay (a hook-run resets the replay first);
#   * at a stop inside understudy's interposer the first frame of the user's
#     program is selected and a line names it and the event;
#   * `goto-event N`: restart the replay and stop before event N, earlier or
#     later than the current one.
import os
import socket

import gdb

_SOCKET = os.environ.get("UNDERSTUDY_GDB_SOCKET", "")
_INTERPOSER = os.path.basename(os.environ.get("UNDERSTUDY_GDB_INTERPOSER",
                                              "libunderstudy_preload.so"))
_state = {
    "until": int(os.environ.get("UNDERSTUDY_GDB_UNTIL", "0") or 0),
    "pending": None,      # goto-event target for the next run
    "runs": 0,            # runs started; the first is the replayer's own
}

# These are for gdb and this script, never for the program.
for _name in ("UNDERSTUDY_GDB_SOCKET", "UNDERSTUDY_GDB_INTERPOSER", "UNDERSTUDY_GDB_UNTIL"):
    gdb.execute("unset environment " + _name, to_string=True)


def _ask(line):
    if not _SOCKET:
        raise gdb.GdbError("understudy: not started by `understudy replay --gdb`")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    try:
        s.connect(_SOCKET)
        s.sendall((line + "\n").encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        raise gdb.GdbError("understudy: the replayer at %s did not answer (%s)" % (_SOCKET, e))
    finally:
        s.close()
    return data.decode(errors="replace").strip()


def _status():
    words = _ask("status").split()
    return dict(zip(words[0::2], words[1::2]))


def _before_run():
    """hook-run: every run after the first restarts the replay."""
    _state["runs"] += 1
    target = _state["pending"] if _state["pending"] is not None else _state["until"]
    _state["pending"] = None
    if _state["runs"] == 1:
        return
    if gdb.selected_inferior().pid != 0:
        gdb.execute("kill", to_string=True)
    reply = _ask("restart %d" % target)
    if not reply.startswith("ok"):
        raise gdb.GdbError("understudy: the replay could not restart: " + reply)
    where = "to stop before event %d" % target if target else "to the end of the recording"
    print("understudy: restarting the replay from its start, %s" % where)


def _in_interposer(frame):
    name = gdb.solib_name(frame.pc())
    return name is not None and os.path.basename(name) == _INTERPOSER


def _user_frame():
    """The first frame of the program itself (not a shared library), else the
    first frame outside the interposer; with its level."""
    frame = gdb.newest_frame()
    level = 0
    outside = None
    while frame is not None:
        if frame.type() == gdb.NORMAL_FRAME and not _in_interposer(frame):
            if outside is None:
                outside = (frame, level)
            if gdb.solib_name(frame.pc()) is None:
                return frame, level
        frame = frame.older()
        level += 1
    return outside if outside is not None else (None, 0)


def _describe(frame):
    sal = frame.find_sal()
    name = frame.name() or "??"
    if sal.symtab is not None:
        return "%s at %s:%d" % (name, sal.symtab.filename, sal.line)
    return "%s (pc %#x)" % (name, frame.pc())


def _on_stop(event):
    # gdb reports the interposer's SIGTRAP as a plain StopEvent (a trap),
    # other signals as SignalEvents; breakpoints are BreakpointEvents.
    if isinstance(event, gdb.BreakpointEvent):
        return
    sig = event.stop_signal if isinstance(event, gdb.SignalEvent) else "SIGTRAP"
    if sig != "SIGTRAP":
        try:
            _ask("outcome signal %s" % sig)
        except gdb.GdbError:
            pass
        return
    try:
        if not _in_interposer(gdb.newest_frame()):
            return
        st = _status()
    except (gdb.error, gdb.GdbError):
        return
    frame, level = _user_frame()
    done = int(st.get("events_done", "0"))
    state = st.get("state", "")
    if state == "until":
        what = "stopped before event %d (%d events replayed)" % (done + 1, done)
    elif state == "diverged":
        what = "stopped at the divergence, event %d" % (done + 1)
    else:
        what = "stopped after event %d" % done
    if frame is None:
        print("understudy: %s, inside the interposer" % what)
        return
    frame.select()
    _state["select_level"] = level
    print("understudy: %s, in %s -- frame #%d selected, the innermost of the program "
          "itself (#0-#%d: understudy's interposer %s and the libraries it was called from)"
          % (what, _describe(frame), level, max(level - 1, 0), _INTERPOSER))


def _before_prompt():
    level = _state.pop("select_level", None)
    if level is None:
        return
    try:
        frame = gdb.newest_frame()
        for _ in range(level):
            frame = frame.older()
        if frame is not None:
            frame.select()
    except gdb.error:
        pass


def _on_exited(event):
    if hasattr(event, "exit_code"):
        try:
            _ask("outcome exit %d" % event.exit_code)
        except gdb.GdbError:
            pass


class GotoEvent(gdb.Command):
    """goto-event N: replay the recording again from its start and stop
before event N (events are numbered from 1, as in `understudy replay
--until N`).  N may be earlier or later than the current event: this is
how to go back in a replay."""

    def __init__(self):
        super().__init__("goto-event", gdb.COMMAND_RUNNING)

    def invoke(self, arg, from_tty):
        args = gdb.string_to_argv(arg)
        if len(args) != 1 or not args[0].isdigit() or int(args[0]) < 1:
            raise gdb.GdbError("usage: goto-event N (an event number, 1 or more)")
        n = int(args[0])
        events = int(_status().get("events", "0"))
        if n > events + 1:
            raise gdb.GdbError("goto-event %d: the recording has only %d events; "
                               "give 1..%d" % (n, events, events + 1))
        _state["pending"] = n
        _state["runs"] = max(_state["runs"], 1)
        gdb.execute("run", from_tty)


# The interposer's signal handlers return through its own restorer
# (interposer/stub.S us_restorer: mov $15,%rax; syscall), which gdb does not
# know as a signal trampoline, so a backtrace from inside the SIGSYS handler
# (a libc-internal call trapped by syscall user dispatch) stopped there.
# This unwinder reads the interrupted registers from the ucontext that the
# kernel put on the stack (at the trampoline, rsp points at it).
_SIGRETURN = b"\x48\xc7\xc0\x0f\x00\x00\x00\x0f\x05"
_GREGS = ("r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi", "rsi", "rbp",
          "rbx", "rdx", "rax", "rcx", "rsp", "rip")
_GREGS_OFFSET = 40  # ucontext_t: uc_flags, uc_link, uc_stack (24), then mcontext gregs


class _FrameId:
    def __init__(self, sp, pc):
        self.sp = sp
        self.pc = pc


try:
    from gdb.unwinder import Unwinder as _Unwinder, register_unwinder as _register_unwinder

    class _RestorerUnwinder(_Unwinder):
        def __init__(self):
            super().__init__("understudy-restorer")

        def __call__(self, pending_frame):
            try:
                pc = pending_frame.read_register("rip")
                name = gdb.solib_name(int(pc))
                if name is None or os.path.basename(name) != _INTERPOSER:
                    return None
                inf = gdb.selected_inferior()
                if bytes(inf.read_memory(int(pc), len(_SIGRETURN))) != _SIGRETURN:
                    return None
                sp = pending_frame.read_register("rsp")
                raw = bytes(inf.read_memory(int(sp) + _GREGS_OFFSET, 8 * len(_GREGS)))
            except (gdb.error, gdb.MemoryError, ValueError):
                return None
            info = pending_frame.create_unwind_info(_FrameId(sp, pc))
            u64 = gdb.lookup_type("unsigned long")
            for i, reg in enumerate(_GREGS):
                v = int.from_bytes(raw[8 * i:8 * i + 8], "little")
                t = pending_frame.read_register(reg).type
                info.add_saved_register(reg, gdb.Value(v).cast(u64).cast(t))
            return info

    _register_unwinder(None, _RestorerUnwinder(), replace=True)
except ImportError:  # a gdb without Python unwinders: backtraces stop at the handler
    pass

GotoEvent()
gdb.events.stop.connect(_on_stop)
gdb.events.exited.connect(_on_exited)
gdb.events.before_prompt.connect(_before_prompt)
gdb.execute("define hook-run\npython _before_run()\nend")
gdb.execute("define hook-start\npython _before_run()\nend")
