#include "checkpoint/manifest.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <memory>

namespace understudy::checkpoint {

namespace {

constexpr char kHeader[] = "understudy-checkpoint-manifest";

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '+' || c == '-';
}

bool IsName(std::string_view s) {
  return !s.empty() && s != "." && s != ".." && std::all_of(s.begin(), s.end(), IsNameChar);
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string Hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

std::string Hex128(const XXH128_hash_t& h) {
  return Hex64(h.high64) + Hex64(h.low64);
}

std::string PathIn(const std::string& dir, std::string_view name) {
  std::string p = dir;
  if (p.empty() || p.back() != '/') p += '/';
  p += name;
  return p;
}

// XXH3-128 and size of one file, read in 1 MiB pieces.
Status HashFile(const std::string& path, uint64_t* size, std::string* hex) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno("open " + path, errno);
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state(XXH3_createState(),
                                                                 XXH3_freeState);
  XXH3_128bits_reset(state.get());
  constexpr size_t kChunk = 1 << 20;
  std::unique_ptr<char[]> buf(new char[kChunk]);
  uint64_t total = 0;
  for (;;) {
    const ssize_t n = read(fd, buf.get(), kChunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      close(fd);
      return Status::FromErrno("read " + path, err);
    }
    if (n == 0) break;
    XXH3_128bits_update(state.get(), buf.get(), static_cast<size_t>(n));
    total += static_cast<uint64_t>(n);
  }
  close(fd);
  *size = total;
  *hex = Hex128(XXH3_128bits_digest(state.get()));
  return Status::Ok();
}

// The names of the image files in dir (see IsImageFile), sorted.
Status ListImages(const std::string& dir, std::vector<std::string>* names) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return Status::FromErrno("images dir " + dir, errno);
  names->clear();
  while (const dirent* e = readdir(d)) {
    const std::string_view name = e->d_name;
    if (name == "." || name == ".." || !IsImageFile(name)) continue;
    names->emplace_back(name);
  }
  closedir(d);
  std::sort(names->begin(), names->end());
  return Status::Ok();
}

Status WriteAll(int fd, const std::string& data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno("write " + path, errno);
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

// Splits "a b rest of line" into `first` and `rest` at the first space.
bool SplitWord(std::string_view line, std::string_view* first, std::string_view* rest) {
  const size_t sp = line.find(' ');
  if (sp == std::string_view::npos || sp == 0) return false;
  *first = line.substr(0, sp);
  *rest = line.substr(sp + 1);
  return true;
}

bool ParseU64(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

bool IsHex(std::string_view s, size_t digits) {
  return s.size() == digits && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

}  // namespace

uint64_t Manifest::TotalBytes() const {
  uint64_t total = 0;
  for (const ManifestFile& f : files) total += f.size;
  return total;
}

const std::string* Manifest::Note(std::string_view key) const {
  for (const auto& [k, v] : notes) {
    if (k == key) return &v;
  }
  return nullptr;
}

bool IsImageFile(std::string_view name) {
  return name != kManifestName && !EndsWith(name, ".log") && name != "stats-restore" &&
         name.rfind(std::string(kManifestName) + ".tmp", 0) != 0;
}

Status WriteManifest(const std::string& dir, Manifest* manifest) {
  for (const auto& [k, v] : manifest->notes) {
    if (!IsName(k) || v.find('\n') != std::string::npos) {
      return Status::InvalidArgument("manifest note '" + k +
                                     "': keys are [A-Za-z0-9._+-]+ and values one line");
    }
  }
  for (const std::string& e : manifest->externals) {
    if (e.empty() || e.find('\n') != std::string::npos) {
      return Status::InvalidArgument("manifest external '" + e + "': must be one non-empty line");
    }
  }
  std::vector<std::string> names;
  Status st = ListImages(dir, &names);
  if (!st.ok()) return st;
  if (names.empty()) {
    return Status::InvalidArgument("images dir " + dir + " holds no image files; nothing to list");
  }
  manifest->files.clear();
  for (const std::string& name : names) {
    const std::string path = PathIn(dir, name);
    struct stat sb;
    if (lstat(path.c_str(), &sb) != 0) return Status::FromErrno("stat " + path, errno);
    if (!S_ISREG(sb.st_mode) || !IsName(name)) {
      return Status::InvalidArgument("images dir " + dir + ": '" + name +
                                     "' is not a regular file with a plain name; "
                                     "a checkpoint holds only CRIU's image files");
    }
    ManifestFile f;
    f.name = name;
    st = HashFile(path, &f.size, &f.xxh128);
    if (!st.ok()) return st;
    manifest->files.push_back(std::move(f));
  }

  std::string text = std::string(kHeader) + " " + std::to_string(kManifestVersion) + "\n";
  for (const auto& [k, v] : manifest->notes) text += "note " + k + " " + v + "\n";
  for (const std::string& e : manifest->externals) text += "external " + e + "\n";
  for (const ManifestFile& f : manifest->files) {
    text += "file " + f.xxh128 + " " + std::to_string(f.size) + " " + f.name + "\n";
  }
  text += "end " + Hex64(XXH3_64bits(text.data(), text.size())) + "\n";

  const std::string final_path = PathIn(dir, kManifestName);
  const std::string tmp_path = final_path + ".tmp" + std::to_string(getpid());
  const int fd = open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::FromErrno("create " + tmp_path, errno);
  st = WriteAll(fd, text, tmp_path);
  if (close(fd) != 0 && st.ok()) st = Status::FromErrno("close " + tmp_path, errno);
  if (st.ok() && rename(tmp_path.c_str(), final_path.c_str()) != 0) {
    st = Status::FromErrno("rename " + tmp_path + " to " + final_path, errno);
  }
  if (!st.ok()) unlink(tmp_path.c_str());
  return st;
}

Status ReadManifest(const std::string& dir, Manifest* manifest) {
  const std::string path = PathIn(dir, kManifestName);
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      return Status::NotFound("checkpoint " + dir + ": no " + kManifestName +
                              " (an interrupted dump or copy, or not a checkpoint); "
                              "take or ship the checkpoint again");
    }
    return Status::FromErrno("open " + path, errno);
  }
  std::string text;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      close(fd);
      return Status::FromErrno("read " + path, err);
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > (64u << 20)) {
      close(fd);
      return Status::Corruption(path + ": larger than 64 MiB; not a manifest");
    }
  }
  close(fd);

  auto bad = [&](size_t line_no, const std::string& why) {
    return Status::Corruption(path + " line " + std::to_string(line_no) + ": " + why +
                              "; the checkpoint cannot be trusted, take or ship it again");
  };
  Manifest m;
  bool ended = false;
  size_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) return bad(line_no + 1, "no newline at the end (torn write)");
    const std::string_view line(text.data() + pos, nl - pos);
    line_no++;
    if (ended) return bad(line_no, "text after the end line");
    std::string_view word, rest;
    if (!SplitWord(line, &word, &rest)) return bad(line_no, "not 'keyword value'");
    if (line_no == 1) {
      if (word != kHeader) return bad(line_no, "not an understudy checkpoint manifest");
      if (rest != std::to_string(kManifestVersion)) {
        return bad(line_no, "format version " + std::string(rest) + ", this build reads " +
                                std::to_string(kManifestVersion));
      }
    } else if (word == "note") {
      std::string_view key, value;
      if (!SplitWord(rest, &key, &value) || !IsName(key)) return bad(line_no, "bad note");
      m.notes.emplace_back(std::string(key), std::string(value));
    } else if (word == "external") {
      m.externals.emplace_back(rest);
    } else if (word == "file") {
      std::string_view hash, after, size, name;
      if (!SplitWord(rest, &hash, &after) || !SplitWord(after, &size, &name)) {
        return bad(line_no, "bad file line");
      }
      ManifestFile f;
      if (!IsHex(hash, 32) || !ParseU64(size, &f.size) || !IsName(name)) {
        return bad(line_no, "bad file line");
      }
      f.xxh128 = std::string(hash);
      f.name = std::string(name);
      if (!m.files.empty() && m.files.back().name >= f.name) {
        return bad(line_no, "file names out of order or repeated");
      }
      m.files.push_back(std::move(f));
    } else if (word == "end") {
      const std::string want = Hex64(XXH3_64bits(text.data(), pos));
      if (rest != want) return bad(line_no, "manifest hash mismatch (edited or damaged)");
      ended = true;
    } else {
      return bad(line_no, "unknown keyword '" + std::string(word) + "'");
    }
    pos = nl + 1;
  }
  if (!ended) return bad(line_no, "no end line (truncated)");
  if (m.files.empty()) return bad(line_no, "lists no image files");
  *manifest = std::move(m);
  return Status::Ok();
}

Status Verify(const std::string& dir, Manifest* manifest) {
  Manifest m;
  Status st = ReadManifest(dir, &m);
  if (!st.ok()) return st;
  const std::string next = "; the checkpoint cannot be trusted, take or ship it again";
  for (const ManifestFile& f : m.files) {
    const std::string path = PathIn(dir, f.name);
    uint64_t size = 0;
    std::string hex;
    st = HashFile(path, &size, &hex);
    if (!st.ok()) {
      struct stat sb;
      if (lstat(path.c_str(), &sb) != 0 && errno == ENOENT) {
        return Status::Corruption("checkpoint " + dir + ": image file " + f.name +
                                  " is listed in the manifest but missing" + next);
      }
      return st;
    }
    if (size != f.size) {
      return Status::Corruption("checkpoint " + dir + ": image file " + f.name + " has " +
                                std::to_string(size) + " bytes, the manifest says " +
                                std::to_string(f.size) + next);
    }
    if (hex != f.xxh128) {
      return Status::Corruption("checkpoint " + dir + ": image file " + f.name +
                                ": checksum mismatch (xxh3-128 " + hex + ", manifest " + f.xxh128 +
                                ")" + next);
    }
  }
  std::vector<std::string> present;
  st = ListImages(dir, &present);
  if (!st.ok()) return st;
  std::vector<std::string> listed;
  for (const ManifestFile& f : m.files) listed.push_back(f.name);  // sorted: ReadManifest checks
  for (const std::string& name : present) {
    const bool is_listed = std::binary_search(listed.begin(), listed.end(), name);
    if (!is_listed) {
      return Status::Corruption("checkpoint " + dir + ": file " + name +
                                " is not in the manifest (CRIU would read it)" + next);
    }
  }
  if (manifest != nullptr) *manifest = std::move(m);
  return Status::Ok();
}

}  // namespace understudy::checkpoint
