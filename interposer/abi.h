// understudy interposer ABI: the ONE header shared by the in-process
// interposer (libunderstudy_preload.so) and the processes that drive it (the
// recorder and the replayer).
//
// Rules (rr's preload_interface.h habit):
//  - C-compatible POD only; no project headers, no STL, no protobuf.
//  - Every field of a shared structure has a fixed offset, checked by
//    static_assert below; any change bumps kProtocolVersion.
//  - All cross-process words are naturally aligned and accessed with
//    __atomic builtins; futexes on them are shared (no FUTEX_PRIVATE_FLAG).
//
// The shared mapping (a memfd the launcher installs at kControlFd before exec)
//
//   offset 0          +------------------------------+
//                     | ControlBlock (one page)      |  mode, cursors, report
//   kRingOffset       +------------------------------+
//                     | ring: ring_size bytes        |  record: interposer ->
//                     |  (power of two)              |  recorder (MPSC)
//                     |                              |  replay: replayer ->
//                     |                              |  interposer (SP, serial
//                     |                              |  consumers)
//                     +------------------------------+
//
// A ring holds variable-length records at monotonically increasing byte
// positions (index = pos & (ring_size - 1)); every record starts 8-aligned:
//
//   +---------------------------+  RecordHeader (72 bytes); `size` is the
//   | size u32 | kind u16 | nout|  publish word: 0 = not yet written.
//   | seq | tid | pid | call ...|
//   +---------------------------+
//   | OutHeader{len} | bytes... |  x nout, each padded to 8 bytes
//   +---------------------------+
//
// A record may wrap around the end of the ring (copies are split); its first
// 8 bytes never do, because positions and ring_size are multiples of 8.  The
// consumer zeroes every byte it consumed before advancing, so a zero `size`
// always means "not published yet".
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
namespace understudy::abi {
#define US_ABI_CONSTEXPR constexpr
#else
#define US_ABI_CONSTEXPR static const
#endif

US_ABI_CONSTEXPR uint32_t kControlMagic = 0x55534331;  // "USC1"
US_ABI_CONSTEXPR uint32_t kProtocolVersion = 6;  // 6: signals at a point (kActAtPoint)
// The fd number at which the control memfd is installed in the program.  High
// enough to stay out of the way of ordinary fd allocation.
US_ABI_CONSTEXPR int kControlFd = 1023;
// A second reserved descriptor, a copy of the control memfd the launcher
// installs too, so the program never has this number in record.  Replay puts
// the hardware breakpoint of a signal recorded at a point there
// (interposer/signals.cc): an fd number the replayed program cannot want.
US_ABI_CONSTEXPR int kPointFd = 1022;
US_ABI_CONSTEXPR uint64_t kRingOffset = 65536;
US_ABI_CONSTEXPR uint64_t kDefaultRingSize = 64ull << 20;
// Largest payload one record may carry; calls that could deliver more are
// clamped to it at record time (a short read is always legal for the program).
US_ABI_CONSTEXPR uint64_t kMaxRecordPayload = 4ull << 20;
// The signal the recorder sends to kick threads out of blocking interposed
// calls when it parks the program for a checkpoint (ControlBlock::park_*).
// The interposer installs its own handler for it; a program's wish for it is
// kept but never installed.  SIGRTMAX - 2: glibc and most programs leave the
// top of the real-time range alone.
US_ABI_CONSTEXPR int kKickSignal = 62;
// Environment variable naming the control fd (decimal); absent = interposer off.
#define US_ENV_CONTROL_FD "UNDERSTUDY_CONTROL_FD"

// Interposer mode, ControlBlock::mode.
enum Mode : uint32_t {
  kModeOff = 0,     // pass everything through, record nothing
  kModeRecord = 1,  // execute for real, publish events to the ring
  kModeReplay = 2,  // consume events from the ring, emulate / check
  kModeLive = 3,    // after go-live: pass through (a shadow that took over)
};

// ControlBlock::flags.
enum Flags : uint32_t {
  kFlagShowOutput = 1u << 0,    // replay: also perform writes to fds 1 and 2
  kFlagGdb = 1u << 1,           // replay: raise SIGTRAP at divergence / until
  kFlagReexecFiles = 1u << 2,   // record: writable regular files are re-executed
                                // on replay (node's own copy), not journaled
  kFlagNoTrap = 1u << 3,        // do not arm the raw-syscall trap (tests only)
  kFlagOutputGate = 1u << 4,    // record: outputs wait for durable_seq
  kFlagAuditWait = 1u << 5,     // record: after publishing stub_begin/end, wait
                                // (at most 2 s) for audit_ready before main()
};

// ControlBlock::status, written by the interposer, read by the driver.
enum Status : uint32_t {
  kStatusRunning = 0,
  kStatusDiverged = 1,       // report fields are valid
  kStatusUntilReached = 2,   // replay reached until_seq
  kStatusEndOfJournal = 3,   // replay needed an event past the journal's end
  kStatusRefused = 4,        // record: an unsupported call was refused
};

// RecordHeader::kind.
enum RecordKind : uint16_t {
  kRecSyscall = 1,    // call = syscall number
  kRecSignal = 2,     // arg = signo, result = si_code, fd = si_pid, call = si_uid,
                      // checksum = siginfo bytes 24..31 (si_value / si_status)
  kRecSync = 3,       // call = SyncOp, arg = object address, result = errno
  kRecLifecycle = 4,  // call = LifecycleKind, arg = child tid/pid, result = status
};

// kRecSyscall records whose call is an instruction, not a system call
// (interposer/tsc.cc): result = the 64-bit counter, arg = rdtscp's TSC_AUX.
// Above every syscall number.
enum PseudoCall : uint32_t {
  kCallRdtsc = 0x10001,
  kCallRdtscp = 0x10002,
};

// Event classes (values equal journal EventClass).
enum EventClassId : uint8_t {
  kClsExternalInput = 1,
  kClsReadiness = 2,
  kClsTime = 3,
  kClsRandomness = 4,
  kClsIdentity = 5,
  kClsSignal = 6,
  kClsThreadOrder = 7,
  kClsProcess = 8,
  kClsLocalFile = 9,
  kClsOutput = 10,
  kClsDeterministic = 11,
};

// Replay actions (values equal journal ReplayAction).
enum ActionId : uint8_t {
  kActEmulate = 1,
  kActReexecCheck = 2,
  kActSuppressCheck = 3,
  // Signal records only (no journal ReplayAction twin: SignalEvent.point_ip
  // says it there).  A signal that landed in code making no call (signals.cc):
  // length = the instruction pointer, reserved:pad = the 48-bit checksum of
  // the registers and the stack top there.  Replay delivers it at that point.
  kActAtPoint = 4,
};

// SyncEvent ops (values equal journal SyncEvent.Op).
enum SyncOp : uint32_t {
  kSyncMutexLock = 1,
  kSyncMutexTrylock = 2,
  kSyncRwRdlock = 3,
  kSyncRwWrlock = 4,
  kSyncCondWake = 5,
  kSyncRwTry = 6,
  kSyncMutexTimedlock = 7,
  kSyncStdio = 8,  // a stdio call on one FILE: glibc locks it where we cannot see
  kSyncSemWait = 9,  // sem_wait / sem_timedwait / sem_trywait: result 0 or the errno
  kSyncBarrier = 10,  // pthread_barrier_wait returned: result says whether this thread was the serial one
};

// Lifecycle kinds (values equal journal LifecycleEvent.Kind).
enum LifecycleKind : uint32_t {
  kLifeThreadCreate = 1,  // by the parent; arg = create token (its own seq)
  kLifeThreadExit = 2,
  kLifeFork = 3,          // by the parent; arg = child pid
  kLifeExec = 4,
  kLifeExit = 5,          // result = exit status
  kLifeWait = 6,
  kLifeThreadStart = 7,   // by the child thread; arg = parent's create token
};

struct RecordHeader {
  uint32_t size;      // total bytes incl. header and outs, multiple of 8; 0 = unpublished
  uint16_t kind;      // RecordKind
  uint16_t nout;      // number of OutHeader+bytes blocks that follow
  uint64_t seq;       // global sequence number (>= 1)
  uint32_t tid;       // recorded thread id
  uint32_t pid;       // recorded process id
  uint32_t call;      // syscall number / SyncOp / LifecycleKind
  uint8_t cls;        // EventClassId
  uint8_t action;     // ActionId
  uint16_t reserved;  // zero
  int64_t result;     // return value or -errno
  uint64_t checksum;  // XXH3-64 of checked bytes (xxhash's XXH3_64bits, computed by
                      // interposer/dispatch.cc's Payload::Checksum; 0 for none)
  uint64_t length;    // bytes covered by checksum (an emulated iovec input: the
                      // number of its data blocks among the outs)
  int32_t fd;         // first fd argument or -1
  uint32_t pad;       // zero
  uint64_t arg;       // call-specific argument kept for checks and reports
};

struct OutHeader {
  uint32_t len;  // bytes that follow (then padding to 8)
  uint32_t pad;  // zero
};

// The control block at offset 0 of the shared mapping.  Words written by more
// than one process are accessed only with __atomic builtins.
// Fields are grouped by writer onto separate cache lines (alignas(64)):
// program threads publishing events must not share a line with the words the
// recorder writes for every record it consumes.
US_ABI_CONSTEXPR int kExecSlots = 64;  // execs in flight at once (ControlBlock::exec_pid)

struct ControlBlock {
  // --- set up by the driver; read-mostly
  uint32_t magic;            // kControlMagic
  uint32_t version;          // kProtocolVersion
  uint32_t mode;             // Mode
  uint32_t flags;            // Flags
  uint64_t total_size;       // bytes of the mapping
  uint64_t ring_size;        // bytes of the ring at kRingOffset, power of two
  uint32_t main_rtid;        // replay: recorded tid of the main thread
  uint32_t service_addr;     // go-live: IPv4 address (network order) to bind
                             // listeners to; 0 = the recorded address
  uint64_t until_seq;        // replay: stop before performing this seq (0 = none)
  uint64_t stub_begin;       // interposer's allowed syscall range [begin, end)
  uint64_t stub_end;         //   (for the kmod escape audit)
  // --- record ring, written by program threads (producers)
  alignas(64) uint64_t next_seq;  // next sequence number to hand out; starts at 1
  uint64_t write_reserve;    // ring bytes reserved by producers (monotonic)
  uint32_t producers_waiting;// producers asleep on space_epoch
  uint32_t pad1;             // zero (was the one-slot exec hand-over: exec_pid below)
  // --- record ring, written by the recorder (consumer)
  alignas(64) uint64_t read_pos;  // ring bytes consumed and zeroed by the recorder
  uint32_t space_epoch;      // futex: bumped by the recorder after consuming
  uint32_t record_epoch;     // futex: bumped by a thread waiting on the gate
  uint32_t consumer_waiting; // recorder is (about to be) asleep on record_epoch
  // --- replay ring, written by the replayer (producer)
  alignas(64) uint64_t replay_tail;  // ring position up to which records are published
  uint32_t journal_ended;    // no records will follow replay_tail
  uint32_t golive_requested; // go-live (DESIGN.md 5), see below
  // --- replay ring, written by program threads in turn (consumers)
  alignas(64) uint64_t replay_cursor;  // seq of the next event allowed to happen
  uint64_t replay_head;      // ring position of the record with seq == cursor
  uint64_t events_done;      // events consumed so far
  uint32_t replay_epoch;     // futex: bumped on every cursor or tail change
  uint32_t replay_waiters;   // threads asleep on replay_epoch
  // Run-to-next-call handoff: the recorded tid of the thread that consumed
  // the last record and has not yet reached its next call (0 = none).  The
  // next record's thread waits for it (a bounded while), so the code a
  // thread runs between two of its events does not overlap the next
  // thread's -- as it mostly did not in the recording (see WaitRunToken).
  uint32_t run_token;
  uint32_t token_epoch;      // futex: bumped when run_token is released
  uint32_t token_waiters;    // threads asleep on token_epoch
  uint32_t token_timeouts;   // waits for run_token that ran out of time
  uint32_t token_off;        // 1: handoff given up (too many timeouts)
  // --- output commit (kFlagOutputGate): an output leaves only once
  // durable_seq >= the seq of its thread's last non-output event (its causal
  // past; earlier outputs are not waited for), see interposer/record.cc's
  // GateWait.  Consecutive outputs of one thread depend on the same event,
  // so one ack releases them all (group commit).
  alignas(64) uint64_t durable_seq;  // highest seq the backup made durable
  uint32_t gate_epoch;       // futex: bumped when durable_seq advances
  uint32_t gate_waiters;     // threads waiting on gate_epoch
  uint64_t gate_need;        // highest seq a gate waiter needs durable; the
                             // recorder flushes at once while it is past
                             // what the recorder has flushed
  // --- state reported back to the driver
  alignas(64) uint32_t status;  // Status
  uint32_t refused_call;     // kStatusRefused: the syscall number refused
  // go-live: the driver stops feeding, sets journal_ended = 1 and
  // golive_requested = 1 and bumps/wakes replay_epoch; the first program
  // thread that finds the ring drained converts the shadow descriptors
  // (listening sockets bound for real at service_addr, epoll registrations
  // re-issued, connection placeholders turned into closed connections), then
  // sets mode = kModeLive and golive_done = 1.
  uint32_t golive_done;      // interposer -> driver: 1 = live
  uint32_t golive_listeners; // number of listening sockets re-created
  uint32_t audit_ready;      // futex: the driver's escape audit is attached
                             // (or gave up); see kFlagAuditWait
  uint32_t refused_pid;      // kStatusRefused: the refusing process's pid (as it
                             // sees itself, i.e. inside the program's PID namespace)
  uint64_t golive_ns;        // CLOCK_MONOTONIC when go-live completed
  // --- divergence report (valid when status == kStatusDiverged; with
  // kStatusRefused, div_text holds the refusal's one-line message)
  uint64_t div_seq;          // event number where replay diverged
  uint32_t div_tid;          // recorded tid of the thread that diverged
  uint32_t div_call;         // call the replay made
  int64_t div_recorded;      // recorded value (result, checksum or length)
  int64_t div_replayed;      // replayed value
  char div_text[512];        // one-line human-readable description
  // --- per-thread wake-up slots (replay): a thread waiting for its turn
  // sleeps on slot[rtid % kWakeSlots]; whoever moves the cursor wakes the
  // slot of the next record's thread only.
  alignas(64) uint32_t wake_epoch[64];
  uint32_t wake_waiters[64];
  // --- checkpoint park (docs/checkpoint.md, "A consistent checkpoint"):
  // the recorder brings every thread to an event boundary before a dump.
  // Dekker-style, all seq_cst: a thread entering an interposed call adds 1
  // to in_call and then loads park_request; the recorder stores
  // park_request = 1 and then loads in_call.  So once the recorder reads
  // in_call == 0 after its store, no thread sits between a call's start and
  // its Publish, and every thread that enters later parks before doing
  // anything.  Threads blocked inside a call are kicked out of it with
  // kKickSignal: the call ends with EINTR, is not recorded, and is issued
  // again once unparked (in whatever mode the process then is: a restored
  // image may wake up in replay mode).
  alignas(64) uint32_t park_request;  // recorder: 1 = park at the next call
  uint32_t park_epoch;       // futex: parked threads sleep on it; the
                             // recorder bumps and wakes it to unpark
  uint32_t park_ack;         // futex: bumped (and woken) by a thread that
                             // leaves a call or parks while park_request = 1
  uint32_t pad2;             // zero
  alignas(64) uint32_t in_call;  // threads inside an interposed call, not parked
  uint32_t parked;           // threads asleep on park_epoch
  uint64_t kicks;            // calls ended by kKickSignal (re-issued later)
  // --- signals at a point (replay): deliveries whose point was not met
  // (the thread reached its next call first) and were made there instead
  alignas(64) uint32_t points_late;
  uint32_t points_hit;       // deliveries at their recorded point
  // --- process and thread numbers (record): held by a fork or a thread
  // creation from taking its seq until its clone returned, so the PID
  // namespace hands out numbers in journal order (interposer/internal.h,
  // PidOrderBegin); shared by every process of the program.
  alignas(64) uint32_t pid_lock;
  // --- exec hand-over (replay): a process about to exec leaves its recorded
  // tid under its real pid, which the new image keeps; the image's
  // interposer takes its identity from the entry of its own pid.  A table,
  // not one slot: two processes of a pipeline exec at once (one slot gave
  // `head` the identity of `date`, and both waited for each other's turn).
  uint32_t exec_pid[kExecSlots];
  uint32_t exec_rtid_of[kExecSlots];
};
US_ABI_CONSTEXPR int kWakeSlots = 64;

#ifdef __cplusplus
static_assert(sizeof(RecordHeader) == 72, "RecordHeader layout is ABI");
static_assert(offsetof(RecordHeader, seq) == 8, "RecordHeader layout is ABI");
static_assert(offsetof(RecordHeader, result) == 32, "RecordHeader layout is ABI");
static_assert(offsetof(RecordHeader, arg) == 64, "RecordHeader layout is ABI");
static_assert(sizeof(OutHeader) == 8, "OutHeader layout is ABI");
static_assert(offsetof(ControlBlock, next_seq) == 64, "ControlBlock layout is ABI");
static_assert(offsetof(ControlBlock, read_pos) == 128, "ControlBlock layout is ABI");
static_assert(offsetof(ControlBlock, replay_cursor) == 256, "ControlBlock layout is ABI");
static_assert(offsetof(ControlBlock, park_request) % 64 == 0, "ControlBlock layout is ABI");
static_assert(offsetof(ControlBlock, in_call) == offsetof(ControlBlock, park_request) + 64,
              "ControlBlock layout is ABI");
static_assert(sizeof(ControlBlock) <= 4096, "ControlBlock must fit in one page");

inline uint64_t RecordPad(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

}  // namespace understudy::abi
#endif
