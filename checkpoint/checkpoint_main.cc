// understudy-checkpoint: the checkpoint driver from a shell.
//
//   understudy-checkpoint version | check
//   understudy-checkpoint dump PID DIR [--note key=value]... [--json]
//   understudy-checkpoint restore DIR [--json]
//   understudy-checkpoint verify DIR
//
// For tests, benchmarks (bench/checkpoint_bench.py) and operators; the daemon
// links the library instead.  --json prints one object per command on
// stdout, with the figures of the DumpReport / RestoreReport.  Exit status:
// 0 done, 1 failed (the reason on stderr), 2 bad usage.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>
#include <vector>

#include "checkpoint/criu.h"
#include "checkpoint/manifest.h"

namespace {

using understudy::Status;
namespace cp = understudy::checkpoint;

int Fail(const Status& st) {
  std::fprintf(stderr, "understudy-checkpoint: %s\n", st.ToString().c_str());
  return 1;
}

// JSON string literal (the paths and keys here are plain, but be exact).
std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"understudy-checkpoint: CRIU checkpoints through criu swrk (docs/checkpoint.md)"};
  app.require_subcommand(1);
  std::string criu_binary;
  app.add_option("--criu", criu_binary,
                 "CRIU to run (default: $UNDERSTUDY_CRIU or " + cp::Criu::DefaultBinary() + ")");
  bool json = false;
  app.add_flag("--json", json, "print the result as one JSON object");

  CLI::App* version = app.add_subcommand("version", "CRIU's version, asked over RPC");
  CLI::App* check = app.add_subcommand("check", "can CRIU checkpoint on this kernel");

  CLI::App* dump = app.add_subcommand("dump", "checkpoint a process tree (--leave-running)");
  pid_t pid = 0;
  std::string dir;
  cp::DumpOptions dopt;
  std::vector<std::string> notes;
  bool stop = false, no_tcp = false, no_locks = false, no_host_mounts = false;
  dump->add_option("pid", pid, "root of the tree (init of its PID namespace)")->required();
  dump->add_option("dir", dir, "images directory to create (must be new or empty)")->required();
  dump->add_flag("--stop", stop, "leave the tree stopped (no --leave-running)");
  dump->add_flag("--no-tcp-established", no_tcp, "refuse established TCP connections");
  dump->add_flag("--ext-unix-sk", dopt.ext_unix_sk, "allow unix sockets with outside peers");
  dump->add_flag("--shell-job", dopt.shell_job, "the tree shares a session or tty");
  dump->add_flag("--no-file-locks", no_locks, "do not dump file locks");
  dump->add_flag("--no-external-host-mounts", no_host_mounts,
                 "tar the node's tmpfs mounts too (see host_mounts.h)");
  dump->add_option("--external", dopt.external, "extra CRIU --external value");
  dump->add_option("--note", notes, "key=value written into the manifest");
  dump->add_option("--log-level", dopt.log_level, "CRIU log level 0..4")->capture_default_str();

  CLI::App* restore = app.add_subcommand("restore", "restore a checkpoint, detached");
  cp::RestoreOptions ropt;
  bool no_verify = false;
  restore->add_option("dir", dir, "images directory")->required();
  restore->add_flag("--no-verify", no_verify, "skip the manifest check");
  restore->add_flag("--sibling", ropt.sibling, "the restored root becomes our child");
  restore->add_option("--root", ropt.root, "root of the restored mount namespace")
      ->capture_default_str();
  restore->add_option("--external", ropt.external, "extra CRIU --external value");
  restore->add_option("--log-level", ropt.log_level, "CRIU log level 0..4")->capture_default_str();

  CLI::App* verify = app.add_subcommand("verify", "check a checkpoint against its manifest");
  verify->add_option("dir", dir, "images directory")->required();

  CLI11_PARSE(app, argc, argv);
  const cp::Criu criu(criu_binary);

  if (version->parsed()) {
    cp::CriuVersion v;
    Status st = criu.Version(&v);
    if (!st.ok()) return Fail(st);
    if (json) {
      std::printf("{\"version\":%s,\"binary\":%s}\n", Quote(v.ToString()).c_str(),
                  Quote(criu.binary()).c_str());
    } else {
      std::printf("CRIU %s at %s\n", v.ToString().c_str(), criu.binary().c_str());
    }
    return 0;
  }
  if (check->parsed()) {
    Status st = criu.Check();
    if (!st.ok()) return Fail(st);
    if (json) {
      std::printf("{\"check\":\"ok\",\"binary\":%s}\n", Quote(criu.binary()).c_str());
    } else {
      std::printf("CRIU at %s: check passed\n", criu.binary().c_str());
    }
    return 0;
  }
  if (dump->parsed()) {
    dopt.leave_running = !stop;
    dopt.tcp_established = !no_tcp;
    dopt.file_locks = !no_locks;
    dopt.external_host_mounts = !no_host_mounts;
    for (const std::string& n : notes) {
      const size_t eq = n.find('=');
      if (eq == std::string::npos || eq == 0) {
        std::fprintf(stderr, "understudy-checkpoint: --note %s: expected key=value\n", n.c_str());
        return 2;
      }
      dopt.notes.emplace_back(n.substr(0, eq), n.substr(eq + 1));
    }
    cp::DumpReport r;
    Status st = criu.Dump(pid, dir, dopt, &r);
    if (!st.ok()) return Fail(st);
    if (json) {
      std::printf(
          "{\"pid\":%d,\"images_dir\":%s,\"log\":%s,\"frozen_ms\":%.3f,\"freezing_ms\":%.3f,"
          "\"memdump_ms\":%.3f,\"memwrite_ms\":%.3f,\"pages_written\":%llu,\"criu_ms\":%.3f,"
          "\"manifest_ms\":%.3f,\"total_ms\":%.3f,\"image_bytes\":%llu,\"image_files\":%zu,"
          "\"host_mounts\":%zu}\n",
          r.pid, Quote(r.images_dir).c_str(), Quote(r.log_path).c_str(), r.frozen_ms,
          r.stats.freezing_us / 1000.0, r.stats.memdump_us / 1000.0, r.stats.memwrite_us / 1000.0,
          static_cast<unsigned long long>(r.stats.pages_written), r.criu_ms, r.manifest_ms,
          r.total_ms, static_cast<unsigned long long>(r.image_bytes), r.image_files,
          r.host_mounts.size());
    } else {
      std::printf("dumped pid %d into %s: frozen %.1f ms, %.1f MB in %zu files, total %.1f ms\n",
                  r.pid, r.images_dir.c_str(), r.frozen_ms, r.image_bytes / 1e6, r.image_files,
                  r.total_ms);
    }
    return 0;
  }
  if (restore->parsed()) {
    ropt.verify = !no_verify;
    cp::RestoreReport r;
    Status st = criu.Restore(dir, ropt, &r);
    if (!st.ok()) return Fail(st);
    if (json) {
      std::printf(
          "{\"pid\":%d,\"log\":%s,\"verify_ms\":%.3f,\"criu_ms\":%.3f,\"total_ms\":%.3f,"
          "\"criu_restore_ms\":%.3f,\"criu_forking_ms\":%.3f}\n",
          r.pid, Quote(r.log_path).c_str(), r.verify_ms, r.criu_ms, r.total_ms,
          r.stats.restore_us / 1000.0, r.stats.forking_us / 1000.0);
    } else {
      std::printf("restored %s: root pid %d, total %.1f ms\n", dir.c_str(), r.pid, r.total_ms);
    }
    return 0;
  }
  if (verify->parsed()) {
    cp::Manifest m;
    Status st = cp::Verify(dir, &m);
    if (!st.ok()) return Fail(st);
    std::printf(json ? "{\"files\":%zu,\"bytes\":%llu}\n" : "%zu files, %llu bytes: ok\n",
                m.files.size(), static_cast<unsigned long long>(m.TotalBytes()));
    return 0;
  }
  return 2;
}
