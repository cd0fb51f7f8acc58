// A checkpoint consistent with the journal (recorder/consistent_checkpoint.h)
// of a redis-server recorded under the interposer: every thread parked at an
// event boundary, the mark in the journal and the manifest, the service
// going on untouched, and the image restorable with its control mapping
// reachable (the basis of active-passive failover).
// Needs: root, CRIU (scripts/setup.sh), redis-server + redis-cli.  Skips with
// the reason without them; fails instead under CI=true.
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <condition_variable>
#include <thread>

#include "checkpoint/criu.h"
#include "checkpoint/manifest.h"
#include "driver/futex.h"
#include "journal/reader.h"
#include "recorder/consistent_checkpoint.h"
#include "recorder/recorder.h"
#include "tests/unit/checkpoint/workload.h"

namespace understudy::recorder {
namespace {

namespace cp = understudy::checkpoint;
namespace ct = understudy::checkpoint::testing;
using Clock = std::chrono::steady_clock;

class ConsistentCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CHECKPOINT_REQUIRE_CRIU();
    ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    work_ = ct::MakeTempDir("cc-test");
    ASSERT_FALSE(work_.empty());
    ASSERT_EQ(mkdir((work_ + "/redis").c_str(), 0700), 0);
    port_ = ct::FreePort();
  }
  void TearDown() override {
    if (redis_init_ > 0) kill(redis_init_, SIGKILL);
    if (recorder_.joinable()) recorder_.join();
    for (pid_t p : restored_) ct::KillAndReap(p);
    if (HasFailure()) {
      std::printf("kept for inspection: %s (journal, images, CRIU's log)\n", work_.c_str());
    } else if (!work_.empty()) {
      ct::RemoveTree(work_);
    }
  }

  // Records redis in a thread; returns once it answers PING.
  void StartRecordedRedis() {
    RecordOptions o;
    o.dir = work_ + "/journal";
    o.argv = {ct::FindOnPath("redis-server"), "--port", std::to_string(port_), "--save", "",
              "--appendonly", "no", "--dir", work_ + "/redis", "--daemonize", "no"};
    o.checkpointable = true;
    o.ring_size = 8ull << 20;  // the ring is dumped with the image: the smallest allowed
    o.hooks.on_running = [this](abi::ControlBlock* cb, pid_t pid, RecordDrain* drain) {
      std::lock_guard<std::mutex> lock(mu_);
      cb_ = cb;
      redis_init_ = pid;
      drain_ = drain;
      cv_.notify_all();
    };
    recorder_ = std::thread([this, o] {
      Status s = Record(o, &record_result_);
      std::lock_guard<std::mutex> lock(mu_);
      record_status_ = s;
      record_done_ = true;
      cv_.notify_all();
    });
    {
      std::unique_lock<std::mutex> lock(mu_);
      ASSERT_TRUE(cv_.wait_for(lock, std::chrono::seconds(30),
                               [this] { return cb_ != nullptr || record_done_; }));
      ASSERT_FALSE(record_done_) << "the recording ended at once: " << record_status_.ToString()
                                 << " " << record_result_.exit.launch_error;
    }
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (ct::RedisCli(port_, {"PING"}) != "PONG") {
      ASSERT_LT(Clock::now(), deadline) << "recorded redis never answered PING";
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  std::string work_;
  int port_ = 0;
  std::thread recorder_;
  Status record_status_;
  bool record_done_ = false;
  RecordResult record_result_;
  std::mutex mu_;
  std::condition_variable cv_;
  abi::ControlBlock* cb_ = nullptr;
  pid_t redis_init_ = -1;
  RecordDrain* drain_ = nullptr;
  std::vector<pid_t> restored_;
};

TEST_F(ConsistentCheckpointTest, MarkInJournalAndManifestServiceGoesOnImageRestores) {
  ASSERT_NO_FATAL_FAILURE(StartRecordedRedis());
  ASSERT_EQ(ct::RedisCli(port_, {"SET", "before", "1"}), "OK");

  ConsistentCheckpointOptions opts;
  opts.images_dir = work_ + "/images";
  ConsistentCheckpointReport rep;
  const Status s = TakeConsistentCheckpoint(cb_, redis_init_, drain_, opts, &rep);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(rep.mark_seq, rep.last_seq + 1);
  EXPECT_GT(rep.last_seq, 0u);
  EXPECT_GT(rep.dump.image_bytes, 0u);
  EXPECT_GE(rep.pause_ms, rep.freeze_ms);
  EXPECT_EQ(__atomic_load_n(&cb_->park_request, __ATOMIC_SEQ_CST), 0u);
  std::printf("checkpoint: mark %llu, park %.1f ms, pause %.1f ms, CRIU freeze %.1f ms, "
              "image %.1f MB, kicks %llu, parked %u\n",
              static_cast<unsigned long long>(rep.mark_seq), rep.park_ms, rep.pause_ms,
              rep.freeze_ms, rep.dump.image_bytes / 1e6,
              static_cast<unsigned long long>(rep.kicks), rep.parked);

  cp::Manifest m;
  ASSERT_TRUE(cp::Verify(opts.images_dir, &m).ok());
  ASSERT_NE(m.Note("mark_seq"), nullptr);
  EXPECT_EQ(*m.Note("mark_seq"), std::to_string(rep.mark_seq));
  EXPECT_EQ(*m.Note("last_seq"), std::to_string(rep.last_seq));

  // The service goes on, recorded, after the park.
  ASSERT_EQ(ct::RedisCli(port_, {"SET", "after", "2"}), "OK");
  ASSERT_EQ(ct::RedisCli(port_, {"GET", "before"}), "1");

  // The image restores beside nothing (the original is gone first); its
  // control mapping comes back with the park still requested, so its threads
  // wait at their next call until the restorer decides (here: pass-through).
  (void)ct::RedisCli(port_, {"SHUTDOWN", "NOSAVE"});
  recorder_.join();
  ASSERT_TRUE(record_status_.ok()) << record_status_.ToString();
  redis_init_ = -1;

  // The journal: contiguous seqs, the mark at mark_seq, the program's events
  // both sides of it.
  {
    std::unique_ptr<journal::JournalReader> reader;
    ASSERT_TRUE(journal::JournalReader::Open(work_ + "/journal", {}, &reader).ok());
    journal::pb::Event e;
    uint64_t expect = 1;
    bool saw_mark = false;
    uint64_t after_mark = 0;
    while (reader->Next(&e)) {
      ASSERT_EQ(e.seq(), expect) << "a hole in the journal";
      ++expect;
      if (e.has_checkpoint()) {
        EXPECT_EQ(e.seq(), rep.mark_seq);
        EXPECT_EQ(e.checkpoint().last_seq(), rep.last_seq);
        EXPECT_EQ(e.checkpoint().image_id(), "images");
        EXPECT_EQ(e.tid(), 0u);
        saw_mark = true;
      } else if (saw_mark && e.tid() != 0) {
        ++after_mark;
      }
    }
    EXPECT_TRUE(reader->status().ok()) << reader->status().ToString();
    EXPECT_TRUE(saw_mark);
    EXPECT_GT(after_mark, 0u) << "the program recorded nothing after the checkpoint";
  }

  cp::Criu criu;
  cp::RestoreOptions ro;
  ro.sibling = true;  // the recorder's init has a parent-death signal
  cp::RestoreReport rr;
  Status rs;
  for (int i = 0; i < 50; i++) {  // the dumped PIDs stay taken ~2 s after a kill
    rs = criu.Restore(opts.images_dir, ro, &rr);
    if (rs.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_TRUE(rs.ok()) << rs.ToString();
  restored_.push_back(rr.pid);
  // redis is the init's child; its control mapping is at abi::kControlFd.
  pid_t prog = -1;
  {
    std::ifstream ch("/proc/" + std::to_string(rr.pid) + "/task/" + std::to_string(rr.pid) +
                     "/children");
    ch >> prog;
  }
  ASSERT_GT(prog, 0);
  const std::string fdpath =
      "/proc/" + std::to_string(prog) + "/fd/" + std::to_string(abi::kControlFd);
  const int fd = open(fdpath.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << fdpath;
  void* p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  ASSERT_NE(p, MAP_FAILED);
  auto* cb = static_cast<abi::ControlBlock*>(p);
  EXPECT_EQ(cb->magic, abi::kControlMagic);
  EXPECT_EQ(__atomic_load_n(&cb->park_request, __ATOMIC_SEQ_CST), 1u);
  EXPECT_EQ(__atomic_load_n(&cb->next_seq, __ATOMIC_SEQ_CST), rep.mark_seq);
  __atomic_store_n(&cb->mode, abi::kModeOff, __ATOMIC_SEQ_CST);
  __atomic_store_n(&cb->park_request, 0, __ATOMIC_SEQ_CST);
  driver::BumpAndWake(&cb->park_epoch);
  munmap(p, 4096);

  const auto deadline = Clock::now() + std::chrono::seconds(20);
  while (ct::RedisCli(port_, {"PING"}) != "PONG") {
    ASSERT_LT(Clock::now(), deadline) << "the restored redis never answered";
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(ct::RedisCli(port_, {"GET", "before"}), "1");
  EXPECT_EQ(ct::RedisCli(port_, {"GET", "after"}), "");  // written after the checkpoint
}

}  // namespace
}  // namespace understudy::recorder
