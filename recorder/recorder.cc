#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <climits>
#include <cstring>
#include <cstdio>
#include "recorder/recorder.h"

#include <sys/stat.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "driver/control_mapping.h"
#include "driver/futex.h"
#include "driver/process_spec.h"
#include "interposer/syscalls.h"
#include "journal/reader.h"
#include "recorder/escape_watch.h"
#include "recorder/record_drain.h"

namespace understudy::recorder {

namespace pb = journal::pb;
using driver::ControlMapping;
using driver::LaunchSpec;
using driver::Program;
using driver::ProgramExit;

Status Record(const RecordOptions& options, RecordResult* result) {
  const auto start = std::chrono::steady_clock::now();
  if (options.argv.empty()) return Status::InvalidArgument("record: no program given after --");
  std::string binary;
  Status s = driver::ResolveExecutable(options.argv[0], &binary);
  if (!s.ok()) return s;
  std::string preload;
  s = driver::FindPreloadLibrary(&preload);
  if (!s.ok()) return s;
  std::vector<std::string> env = driver::InterposerEnv(driver::CurrentEnv(), preload);

  pb::ProcessSpec spec;
  s = driver::CaptureProcessSpec(options.argv, env, binary, &spec);
  if (!s.ok()) return s;
  std::string preload_sha;
  if (driver::Sha256File(preload, &preload_sha).ok()) spec.set_interposer_sha256(preload_sha);
  spec.set_checkpointable(options.checkpointable);
  spec.set_active_passive(options.active_passive);
  spec.set_checkpoint_interval_ms(options.checkpoint_interval_ms);
  spec.set_checkpoint_every_events(options.checkpoint_every_events);
  spec.set_checkpoint_every_bytes(options.checkpoint_every_bytes);
  spec.set_journal_segment_bytes(options.segment_bytes);

  std::unique_ptr<ControlMapping> mapping;
  uint32_t flags = options.reexec_local_files ? uint32_t{abi::kFlagReexecFiles} : 0u;
  flags |= options.hooks.extra_flags;
  if (options.audit) flags |= abi::kFlagAuditWait;
  s = ControlMapping::Create(options.ring_size, abi::kModeRecord, flags, &mapping);
  if (!s.ok()) return s;

  journal::WriterOptions wopts;
  wopts.durability = options.durability;
  wopts.on_frame = options.hooks.on_frame;
  if (options.segment_bytes != 0) wopts.segment_bytes = options.segment_bytes;
  std::unique_ptr<journal::JournalWriter> writer;
  s = journal::JournalWriter::Create(options.dir, spec, wopts, &writer);
  if (!s.ok()) return s;

  if (options.hooks.on_start) {
    options.hooks.on_start(mapping->control(), writer->journal_id(), spec.SerializeAsString());
  }

  LaunchSpec launch;
  launch.path = binary;
  launch.argv = options.argv;
  launch.env = env;
  launch.control_fd = mapping->fd();
  launch.pid_namespace = options.pid_namespace;
  launch.checkpointable = options.checkpointable;
  std::unique_ptr<Program> program;
  s = Program::Launch(launch, &program);
  if (!s.ok()) return s;

  std::atomic<bool> program_done{false};
  std::atomic<bool> abort{false};
  std::atomic<bool> drain_finished{false};
  // With a PID namespace the program has ended only once every process of
  // it is gone (Program::Kill/Poll), so a number taken but never published
  // (a thread killed inside the output gate by a fence, say) can never
  // arrive: no reason to wait for it.
  DrainOptions dopts;
  if (program->in_namespace()) dopts.final_grace = std::chrono::milliseconds(1);
  RecordDrain drain(mapping->control(), writer.get(), dopts);
  Status drain_status;
  std::thread drainer([&] {
    drain_status = drain.Run(program_done, abort);
    drain_finished.store(true, std::memory_order_release);
  });

  // Wait for the program; if the drain dies first, the program would block
  // on a full ring forever, so it is killed.
  ProgramExit exit;
  bool killed = false;
  EscapeWatch audit;
  bool audit_pending = options.audit;
  auto last_audit_report = std::chrono::steady_clock::now() - std::chrono::seconds(1);
  bool running_reported = !options.hooks.on_running;
  while (!program->Poll(&exit)) {
    if (!running_reported && program->checkpoint_root() > 0) {
      running_reported = true;
      options.hooks.on_running(mapping->control(), program->checkpoint_root(), &drain);
    }
    if (audit_pending && __atomic_load_n(&mapping->control()->stub_begin, __ATOMIC_ACQUIRE) != 0) {
      audit_pending = false;  // the interposer is up: from here on, nothing may escape it
      if (!audit.Start(mapping->control(), program->pid(), program->in_namespace(), &result->audit_off_reason))
        std::fprintf(stderr, "understudy record: %s; recording without the audit\n",
                     result->audit_off_reason.c_str());
      if (!audit.running() && options.hooks.on_audit)
        options.hooks.on_audit(false, 0, result->audit_off_reason);
      abi::ControlBlock* cb = mapping->control();
      __atomic_store_n(&cb->audit_ready, 1, __ATOMIC_RELEASE);
      syscall(SYS_futex, &cb->audit_ready, FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
    }
    if (audit.running()) {
      audit.PollLifecycle();
      const auto now = std::chrono::steady_clock::now();
      if (options.hooks.on_audit && now - last_audit_report >= std::chrono::milliseconds(200)) {
        last_audit_report = now;
        auto counts = audit.Counts();
        uint64_t escaped = 0;
        for (const auto& [nr, n] : counts) escaped += n;
        std::string text = DescribeEscapes(counts);
        for (const std::string& a : audit.alarms()) text += (text.empty() ? "" : "; ") + a;
        options.hooks.on_audit(true, escaped, text);
      }
    }
    // A refused call stopped the process that made it; the rest of the
    // program (other processes of its tree) must not run on half-recorded.
    if (!killed && __atomic_load_n(&mapping->control()->status, __ATOMIC_ACQUIRE) ==
                       abi::kStatusRefused) {
      program->Kill();
      killed = true;
    }
    if (!killed && (drain_finished.load(std::memory_order_acquire) ||
                    (options.hooks.should_kill && options.hooks.should_kill()))) {
      program->Kill();
      killed = true;
    }
    if (killed) {  // look for its end at once: a planned failover waits for it
      struct timespec ts {
        0, 200 * 1000
      };
      nanosleep(&ts, nullptr);
      continue;
    }
    const auto tick = std::chrono::milliseconds(audit_pending ? 1 : 5);
    if (options.hooks.idle) {
      options.hooks.idle(tick);
    } else {
      struct timespec ts {
        0, tick.count() * 1000 * 1000
      };
      nanosleep(&ts, nullptr);
    }
  }
  program_done.store(true, std::memory_order_release);
  driver::BumpAndWake(&mapping->control()->record_epoch);  // the drain may be in a long idle wait
  drainer.join();
  if (options.hooks.on_program_end) options.hooks.on_program_end();
  result->exit = exit;
  result->warnings = drain.warnings();
  if (!drain_status.ok()) return drain_status;

  abi::ControlBlock* cb = mapping->control();
  if (__atomic_load_n(&cb->status, __ATOMIC_ACQUIRE) == abi::kStatusRefused) {
    uint32_t call = __atomic_load_n(&cb->refused_call, __ATOMIC_ACQUIRE);
    result->refused = true;
    std::string text(cb->div_text, strnlen(cb->div_text, sizeof cb->div_text));
    if (text.empty())
      text = std::string(syscalls::SyscallLabel(call).text) + " (syscall " + std::to_string(call) +
             ") is not supported: recording it would let nondeterminism escape the journal";
    result->refused_message = "understudy record: " + text + "; the whole recorded program was stopped";
  }

  if (audit.running()) {
    audit.PollLifecycle();
    result->audit_on = true;
    result->escapes = audit.Counts();
    result->audit_alarms = audit.alarms();
    for (const auto& [nr, count] : result->escapes) {
      pb::Event e;
      e.set_seq(writer->last_sequence() + 1);
      e.set_tid(0);
      pb::AuditEvent* a = e.mutable_audit();
      a->set_call(static_cast<uint32_t>(nr));
      a->set_count(count);
      a->set_name(syscalls::SyscallLabel(nr).text);
      s = writer->Append(e);
      if (!s.ok()) return s;
    }
  } else if (options.audit && result->audit_off_reason.empty()) {
    result->audit_off_reason = "the interposer never initialised, so the audit never started";
  }

  // Never a false "clean" (issue 13 part 8): what the recording could not
  // see is said in the journal, and replay will not call such a run clean.
  if (flags & abi::kFlagNoTrap) {
    pb::Event e;
    e.set_seq(writer->last_sequence() + 1);
    e.set_tid(0);
    e.mutable_audit()->set_unseen(
        "the raw-syscall trap was off (--unsafe-no-trap): system calls made without libc were "
        "not recorded");
    s = writer->Append(e);
    if (!s.ok()) return s;
    ++result->escapes_unseen;
  }

  pb::Event final_event;
  final_event.set_seq(writer->last_sequence() + 1);
  final_event.set_tid(0);
  final_event.set_pid(0);
  pb::LifecycleEvent* life = final_event.mutable_lifecycle();
  life->set_kind(pb::LifecycleEvent::EXIT);
  life->set_status(exit.exit_code);
  s = writer->Append(final_event);
  if (s.ok()) s = writer->Close();
  if (!s.ok()) return s;
  result->events = drain.events() + 1 + result->escapes.size() + result->escapes_unseen;
  if (options.hooks.on_journal_closed) options.hooks.on_journal_closed(result->events, exit);

  std::vector<journal::SegmentInfo> segments;
  if (journal::ListSegments(options.dir, &segments).ok()) {
    result->segments = segments.size();
    for (const journal::SegmentInfo& seg : segments) {
      struct stat st;
      if (stat(seg.path.c_str(), &st) == 0) result->bytes += static_cast<uint64_t>(st.st_size);
    }
  }
  result->wall_time_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return Status::Ok();
}

}  // namespace understudy::recorder
