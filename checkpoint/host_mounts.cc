#include "checkpoint/host_mounts.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <fstream>
#include <sstream>

namespace understudy::checkpoint {

namespace {

struct MountLine {
  std::string dev;          // "major:minor"
  std::string root;         // root of the mount within its filesystem
  std::string mount_point;  // unescaped
  std::string fstype;
};

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); i++) {
    auto octal = [&](size_t j) { return s[j] >= '0' && s[j] <= '7'; };
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] <= '3' && octal(i + 1) && octal(i + 2) &&
        octal(i + 3)) {
      out.push_back(
          static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue"
std::vector<MountLine> ParseMountinfo(const std::string& text) {
  std::vector<MountLine> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string id, parent, dev, root, point, opts, word;
    if (!(f >> id >> parent >> dev >> root >> point >> opts)) continue;
    // Optional fields run up to the lone "-".
    while (f >> word && word != "-") {
    }
    std::string fstype;
    if (word != "-" || !(f >> fstype)) continue;
    out.push_back({dev, Unescape(root), Unescape(point), fstype});
  }
  return out;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string Link(const std::string& path) {
  char buf[PATH_MAX];
  const ssize_t n = readlink(path.c_str(), buf, sizeof buf - 1);
  return n < 0 ? std::string() : std::string(buf, static_cast<size_t>(n));
}

}  // namespace

std::vector<HostMount> MatchHostTmpfsMounts(const std::string& workload_mountinfo,
                                            const std::string& our_mountinfo) {
  const std::vector<MountLine> theirs = ParseMountinfo(workload_mountinfo);
  const std::vector<MountLine> ours = ParseMountinfo(our_mountinfo);
  std::vector<HostMount> out;
  for (const MountLine& t : theirs) {
    if (t.fstype != "tmpfs") continue;
    const bool shared = std::any_of(ours.begin(), ours.end(), [&](const MountLine& o) {
      return o.fstype == t.fstype && o.dev == t.dev && o.root == t.root &&
             o.mount_point == t.mount_point;
    });
    const bool seen = std::any_of(
        out.begin(), out.end(), [&](const HostMount& m) { return m.mount_point == t.mount_point; });
    // CRIU's mnt[...] names a mount point; one key covers stacked mounts there.
    if (shared && !seen) {
      out.push_back({t.mount_point, "understudy-host-" + std::to_string(out.size())});
    }
  }
  return out;
}

Status FindHostTmpfsMounts(pid_t pid, std::vector<HostMount>* out) {
  out->clear();
  const std::string proc = "/proc/" + std::to_string(pid);
  const std::string their_ns = Link(proc + "/ns/mnt");
  if (their_ns.empty()) {
    return Status::FromErrno(
        "mount namespace of pid " + std::to_string(pid) + " (" + proc + "/ns/mnt)", errno);
  }
  if (their_ns == Link("/proc/self/ns/mnt")) return Status::Ok();
  const std::string theirs = ReadAll(proc + "/mountinfo");
  if (theirs.empty()) {
    return Status::IOError("cannot read " + proc + "/mountinfo; is pid " + std::to_string(pid) +
                           " still alive?");
  }
  *out = MatchHostTmpfsMounts(theirs, ReadAll("/proc/self/mountinfo"));
  return Status::Ok();
}

std::string DumpExternal(const HostMount& m) {
  return "mnt[" + m.mount_point + "]:" + m.key;
}

std::string RestoreExternal(const HostMount& m) {
  return "mnt[" + m.key + "]:" + m.mount_point;
}

}  // namespace understudy::checkpoint
