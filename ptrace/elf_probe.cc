// ChooseBackend: which backend can serve a binary, from its ELF headers.
#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "ptrace/backend.h"

namespace understudy::ptrace_backend {
namespace {

bool ReadAt(int fd, uint64_t off, void* buf, size_t n) {
  return pread(fd, buf, n, static_cast<off_t>(off)) == static_cast<ssize_t>(n);
}

// True if the ELF file's dynamic symbol table (.dynsym) defines `name`.
bool DefinesDynamicSymbol(int fd, const Elf64_Ehdr& eh, const char* name) {
  if (eh.e_shoff == 0 || eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shnum > 4096) return false;
  std::vector<Elf64_Shdr> sh(eh.e_shnum);
  if (!ReadAt(fd, eh.e_shoff, sh.data(), sh.size() * sizeof(Elf64_Shdr))) return false;
  const size_t want = std::strlen(name);
  for (const Elf64_Shdr& s : sh) {
    if (s.sh_type != SHT_DYNSYM || s.sh_link >= sh.size() || s.sh_entsize != sizeof(Elf64_Sym)) continue;
    const Elf64_Shdr& strs = sh[s.sh_link];
    if (strs.sh_size > (64u << 20) || s.sh_size > (64u << 20)) continue;
    std::string names(strs.sh_size, '\0');
    std::vector<Elf64_Sym> syms(s.sh_size / sizeof(Elf64_Sym));
    if (!ReadAt(fd, strs.sh_offset, names.data(), names.size()) ||
        !ReadAt(fd, s.sh_offset, syms.data(), syms.size() * sizeof(Elf64_Sym)))
      continue;
    for (const Elf64_Sym& sym : syms)
      if (sym.st_shndx != SHN_UNDEF && sym.st_name + want < names.size() &&
          std::memcmp(names.data() + sym.st_name, name, want + 1) == 0)
        return true;
  }
  return false;
}

Status Choose(const std::string& path, int depth, BackendChoice* choice);

// A "#!" script: the backend its interpreter needs ("#!/usr/bin/env node"
// looks node up in PATH, as env will).  An interpreter that is itself a
// script, or cannot be found: the preload backend, which follows the exec.
Status ChooseForScript(int fd, int depth, BackendChoice* choice) {
  char line[256] = {};
  const ssize_t n = pread(fd, line, sizeof line - 1, 0);
  std::string first(line, n > 0 ? static_cast<size_t>(n) : 0);
  first = first.substr(2, first.find('\n') == std::string::npos ? std::string::npos : first.find('\n') - 2);
  std::vector<std::string> words;
  for (size_t i = 0; i < first.size();) {
    while (i < first.size() && (first[i] == ' ' || first[i] == '\t')) ++i;
    size_t j = i;
    while (j < first.size() && first[j] != ' ' && first[j] != '\t') ++j;
    if (j > i) words.push_back(first.substr(i, j - i));
    i = j;
  }
  std::string interp = words.empty() ? "" : words[0];
  if (interp.size() >= 4 && interp.compare(interp.size() - 4, 4, "/env") == 0) {
    interp.clear();
    for (size_t k = 1; k < words.size() && interp.empty(); ++k)
      if (words[k][0] != '-' && words[k].find('=') == std::string::npos) interp = words[k];
  }
  std::string resolved;
  BackendChoice inner;
  if (depth > 0 || interp.empty() || !driver::ResolveExecutable(interp, &resolved).ok() ||
      !Choose(resolved, depth + 1, &inner).ok()) {
    *choice = {false, "a script: its interpreter is a dynamic binary"};
    return Status::Ok();
  }
  *choice = inner;
  choice->reason = "a script for " + resolved + ", which is " + inner.reason;
  return Status::Ok();
}

}  // namespace

Status ChooseBackend(const std::string& path, BackendChoice* choice) { return Choose(path, 0, choice); }

namespace {

Status Choose(const std::string& path, int depth, BackendChoice* choice) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::IOError(path + ": cannot open to inspect it: " + std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  Elf64_Ehdr eh;
  if (!ReadAt(fd, 0, &eh, sizeof eh)) {
    char two[2] = {};
    if (ReadAt(fd, 0, two, 2) && two[0] == '#' && two[1] == '!') return ChooseForScript(fd, depth, choice);
    return Status::InvalidArgument(path + ": too short to be an ELF executable");
  }
  if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) {
    if (eh.e_ident[0] == '#' && eh.e_ident[1] == '!') return ChooseForScript(fd, depth, choice);
    return Status::InvalidArgument(path + ": not an ELF executable or a script");
  }
  if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_machine != EM_X86_64)
    return Status::InvalidArgument(path + ": not an x86_64 ELF executable");

  bool interp = false;
  Elf64_Phdr dyn{};
  bool have_dyn = false;
  std::vector<Elf64_Phdr> loads;
  for (int i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    if (!ReadAt(fd, eh.e_phoff + static_cast<uint64_t>(i) * eh.e_phentsize, &ph, sizeof ph)) break;
    if (ph.p_type == PT_INTERP) interp = true;
    if (ph.p_type == PT_DYNAMIC) dyn = ph, have_dyn = true;
    if (ph.p_type == PT_LOAD) loads.push_back(ph);
  }

  // Go build info: a section named .go.buildinfo (every Go binary since 1.13).
  bool go = false;
  if (eh.e_shoff != 0 && eh.e_shstrndx != SHN_UNDEF && eh.e_shstrndx < eh.e_shnum) {
    Elf64_Shdr strs;
    if (ReadAt(fd, eh.e_shoff + static_cast<uint64_t>(eh.e_shstrndx) * eh.e_shentsize, &strs,
               sizeof strs) &&
        strs.sh_size < (16u << 20)) {
      std::string names(strs.sh_size, '\0');
      if (ReadAt(fd, strs.sh_offset, names.data(), names.size())) {
        for (int i = 0; i < eh.e_shnum && !go; ++i) {
          Elf64_Shdr sh;
          if (!ReadAt(fd, eh.e_shoff + static_cast<uint64_t>(i) * eh.e_shentsize, &sh, sizeof sh))
            break;
          if (sh.sh_name < names.size() &&
              std::strcmp(names.c_str() + sh.sh_name, ".go.buildinfo") == 0)
            go = true;
        }
      }
    }
  }
  if (go) {
    *choice = {true, std::string("a Go binary (.go.buildinfo): Go makes raw system calls and reads "
                                 "the vDSO from its own code, out of the interposer's reach") +
                         (interp ? "" : "; statically linked")};
    choice->go = true;
    return Status::Ok();
  }
  if (!interp) {
    *choice = {true, "statically linked (no ELF interpreter): LD_PRELOAD cannot load into it"};
    return Status::Ok();
  }
  // DT_NEEDED: is libc among them?
  bool libc = false;
  bool node = false;  // Node.js: Debian's links libnode.so, a self-contained one exports N-API
  if (have_dyn) {
    std::vector<Elf64_Dyn> entries(dyn.p_filesz / sizeof(Elf64_Dyn));
    if (!entries.empty() && ReadAt(fd, dyn.p_offset, entries.data(), entries.size() * sizeof(Elf64_Dyn))) {
      uint64_t strtab_vaddr = 0;
      for (const Elf64_Dyn& d : entries)
        if (d.d_tag == DT_STRTAB) strtab_vaddr = d.d_un.d_ptr;
      uint64_t strtab_off = 0;
      for (const Elf64_Phdr& l : loads)
        if (strtab_vaddr >= l.p_vaddr && strtab_vaddr < l.p_vaddr + l.p_filesz)
          strtab_off = strtab_vaddr - l.p_vaddr + l.p_offset;
      for (const Elf64_Dyn& d : entries) {
        if (d.d_tag != DT_NEEDED || strtab_off == 0) continue;
        char name[64] = {};
        if (!ReadAt(fd, strtab_off + d.d_un.d_val, name, sizeof name - 1)) continue;
        if (std::strncmp(name, "libc.so", 7) == 0) libc = true;
        if (std::strncmp(name, "libnode.so", 10) == 0) node = true;
      }
    }
  }
  if (!libc) {
    *choice = {true, "no libc among its DT_NEEDED libraries: the interposer's libc wrappers cannot "
                     "see its calls"};
    return Status::Ok();
  }
  // Node.js: V8's and libuv's threads hand work to each other through plain
  // atomics (a task queue's flag, uv_async_send's pending word) as well as
  // through locks; the preload backend orders only the locks, so its replays
  // of Node diverge.  The ptrace backend runs a process's threads one turn at
  // a time, handed over at traced calls in journal order, which orders the
  // atomics too (docs/ptrace.md "Choosing").
  if (node || DefinesDynamicSymbol(fd, eh, "napi_module_register")) {
    *choice = {true, "Node.js (it links libnode or exports N-API): its runtime's threads hand work "
                     "over through plain atomics, which only the ptrace backend's one-thread-at-a-time "
                     "turns order"};
    return Status::Ok();
  }
  *choice = {false, "dynamically linked against libc"};
  return Status::Ok();
}

}  // namespace

}  // namespace understudy::ptrace_backend

namespace understudy::ptrace_backend {

bool FindElfSymbol(const std::string& path, const char* name, uint64_t* addr, uint64_t* size) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  Elf64_Ehdr eh;
  if (!ReadAt(fd, 0, &eh, sizeof eh) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) return false;
  std::vector<Elf64_Shdr> sh(eh.e_shnum);
  for (int i = 0; i < eh.e_shnum; ++i)
    if (!ReadAt(fd, eh.e_shoff + static_cast<uint64_t>(i) * eh.e_shentsize, &sh[i], sizeof sh[i]))
      return false;
  const size_t want = std::strlen(name);
  for (const Elf64_Shdr& s : sh) {
    if (s.sh_type != SHT_SYMTAB || s.sh_link >= sh.size() || s.sh_entsize != sizeof(Elf64_Sym)) continue;
    const Elf64_Shdr& strs = sh[s.sh_link];
    if (strs.sh_size > (64u << 20) || s.sh_size > (256u << 20)) continue;
    std::string names(strs.sh_size, '\0');
    std::vector<Elf64_Sym> syms(s.sh_size / sizeof(Elf64_Sym));
    if (!ReadAt(fd, strs.sh_offset, names.data(), names.size()) ||
        !ReadAt(fd, s.sh_offset, syms.data(), syms.size() * sizeof(Elf64_Sym)))
      continue;
    for (const Elf64_Sym& sym : syms) {
      if (sym.st_name + want >= names.size()) continue;
      if (std::memcmp(names.data() + sym.st_name, name, want + 1) == 0 && sym.st_value != 0) {
        *addr = sym.st_value;
        *size = sym.st_size;
        return true;
      }
    }
  }
  return false;
}

}  // namespace understudy::ptrace_backend
