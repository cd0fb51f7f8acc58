// Manifest: what a checkpoint's images directory must hold, byte for byte.
//
// Written by Criu::Dump() after CRIU has finished, as the file
// `understudy-manifest` in the images directory; checked by Verify() before a
// restore and (issue 12 part 2) after shipping, so a torn copy or a flipped
// bit is refused with the name of the file, never restored.
//
// Format: text, one record per line, fields separated by one space.
//
//   understudy-checkpoint-manifest 1          header and format version
//   note <key> <value>                        caller's annotations (pid, mark seq, ...)
//   external <value>                          --external that restore must pass
//   file <xxh3-128 hex> <size> <name>         one per image file, sorted by name
//   end <xxh3-64 hex>                         hash of every byte before this line
//
// The `end` line makes a truncated or edited manifest detectable on its own.
// Keys and file names are [A-Za-z0-9._+-]+; a note's value and an external
// are the rest of the line (no newline).  Version 1 is the only version; a
// reader refuses any other.
//
// Which files are images: every regular file of the directory except the
// manifest itself, CRIU's logs (*.log) and `stats-restore` (written into the
// images directory by each restore).  Anything else present but not listed
// is refused by Verify(): CRIU reads images by name, so a stray file could be
// restored.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "journal/status.h"

namespace understudy::checkpoint {

inline constexpr char kManifestName[] = "understudy-manifest";
inline constexpr int kManifestVersion = 1;

struct ManifestFile {
  std::string name;  // relative to the images directory
  uint64_t size = 0;
  std::string xxh128;  // 32 lowercase hex digits, XXH3-128 of the contents
};

struct Manifest {
  std::vector<std::pair<std::string, std::string>> notes;  // in the order written
  std::vector<std::string> externals;                      // restore --external values
  std::vector<ManifestFile> files;                         // sorted by name

  uint64_t TotalBytes() const;
  // The value of note `key`, or nullptr.
  const std::string* Note(std::string_view key) const;
};

// True for names Verify() expects to find listed (see above).
bool IsImageFile(std::string_view name);

// Hashes every image file in `dir` into `manifest->files` (replacing what
// was there) and writes the manifest, with manifest's notes and externals,
// atomically (temporary file + rename).  Fails with InvalidArgument when a
// note key or a file name cannot be written in the format.
Status WriteManifest(const std::string& dir, Manifest* manifest);

// Parses dir's manifest and checks its own `end` hash; does not read images.
Status ReadManifest(const std::string& dir, Manifest* manifest);

// ReadManifest() plus every listed file's presence, size and hash, and no
// unlisted image file.  The first problem found is returned as Corruption
// (NotFound when there is no manifest at all), naming the file.
Status Verify(const std::string& dir, Manifest* manifest = nullptr);

}  // namespace understudy::checkpoint
