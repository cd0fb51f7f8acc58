// Test fixtures shared by the daemon's unit tests.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <system_error>

#include "journal/event.pb.h"
#include "journal/stream.h"

namespace understudy::daemon::fixtures {

// A journal stream frame (journal/stream.h) holding events first..last, each
// a thread-1 EXIT, as a primary's replication client would send them.
inline std::string Frame(uint64_t first, uint64_t last) {
  journal::pb::EventBatch batch;
  for (uint64_t s = first; s <= last; ++s) {
    journal::pb::Event* e = batch.add_events();
    e->set_seq(s);
    e->set_tid(1);
    e->mutable_lifecycle()->set_kind(journal::pb::LifecycleEvent::EXIT);
  }
  std::string out;
  journal::EncodeStreamBatch(batch.SerializeAsString(), &out);
  return out;
}

// A fresh --data directory per run (runs of these tests in other build trees
// share /tmp), removed at the end whatever the outcome.  `path` is empty if
// mkdtemp failed.
struct DataDir {
  explicit DataDir(const std::string& prefix) {
    std::string tmpl = ::testing::TempDir() + prefix + "-XXXXXX";
    if (mkdtemp(tmpl.data()) != nullptr) path = tmpl;
  }
  DataDir(const DataDir&) = delete;
  DataDir& operator=(const DataDir&) = delete;
  ~DataDir() {
    std::error_code ec;
    if (!path.empty()) std::filesystem::remove_all(path, ec);
  }
  std::string path;
};

}  // namespace understudy::daemon::fixtures
