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

}  // namespace

Status ChooseBackend(const std::string& path, BackendChoice* choice) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::IOError(path + ": cannot open to inspect it: " + std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  Elf64_Ehdr eh;
  if (!ReadAt(fd, 0, &eh, sizeof eh)) {
    char two[2] = {};
    if (ReadAt(fd, 0, two, 2) && two[0] == '#' && two[1] == '!') {
      *choice = {false, "a script: its interpreter is a dynamic binary"};
      return Status::Ok();
    }
    return Status::InvalidArgument(path + ": too short to be an ELF executable");
  }
  if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) {
    if (eh.e_ident[0] == '#' && eh.e_ident[1] == '!') {
      *choice = {false, "a script: its interpreter is a dynamic binary"};
      return Status::Ok();
    }
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
      }
    }
  }
  if (!libc) {
    *choice = {true, "no libc among its DT_NEEDED libraries: the interposer's libc wrappers cannot "
                     "see its calls"};
    return Status::Ok();
  }
  *choice = {false, "dynamically linked against libc"};
  return Status::Ok();
}

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
