// CRIU's stats images: the bytes of a real stats-dump from this machine,
// then synthetic ones for the error paths.
#include "checkpoint/criu_stats.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "checkpoint/criu_rpc.pb.h"

namespace understudy::checkpoint {
namespace {

namespace fs = std::filesystem;

// stats-dump of a small redis-server dumped by CRIU 4.2.1 here.
const unsigned char kRealStatsDump[] = {0x40, 0x59, 0x10, 0x55, 0x06, 0x33, 0x09, 0x57, 0x25, 0x00,
                                        0x00, 0x00, 0x0a, 0x23, 0x08, 0x9f, 0x2c, 0x10, 0xcf, 0xdf,
                                        0x12, 0x18, 0xdd, 0x39, 0x20, 0xbf, 0x0c, 0x28, 0xab, 0x06,
                                        0x30, 0x00, 0x38, 0xb0, 0x05, 0x40, 0x00, 0x48, 0x00, 0x50,
                                        0x08, 0x58, 0x08, 0x60, 0x00, 0x68, 0x00, 0x70, 0x00};

class CriuStatsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "understudy-stats-XXXXXX").string();
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    dir_ = templ;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Put(const std::string& name, const std::string& bytes) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
  static std::string Image(const rpc::StatsEntry& entry, uint32_t magic = kCriuStatsMagic) {
    const std::string payload = entry.SerializeAsString();
    const uint32_t words[3] = {kCriuServiceMagic, magic, static_cast<uint32_t>(payload.size())};
    return std::string(reinterpret_cast<const char*>(words), sizeof words) + payload;
  }
  std::string dir_;
};

TEST_F(CriuStatsTest, ReadsARealStatsDump) {
  const std::string path =
      Put("stats-dump",
          std::string(reinterpret_cast<const char*>(kRealStatsDump), sizeof kRealStatsDump));
  DumpStats s;
  const Status st = ReadDumpStats(path, &s);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(s.freezing_us, 5663u);
  EXPECT_EQ(s.frozen_us, 307151u);
  EXPECT_EQ(s.memdump_us, 7389u);
  EXPECT_EQ(s.memwrite_us, 1599u);
  EXPECT_EQ(s.pages_scanned, 811u);
  EXPECT_EQ(s.pages_written, 688u);  // pages-1.img was 688 * 4096 bytes
}

TEST_F(CriuStatsTest, ReadsARestoreEntry) {
  rpc::StatsEntry e;
  e.mutable_restore()->set_forking_time(4);
  e.mutable_restore()->set_restore_time(117595);
  e.mutable_restore()->set_pages_restored(688);
  RestoreStats s;
  const Status st = ReadRestoreStats(Put("stats-restore", Image(e)), &s);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(s.restore_us, 117595u);
  EXPECT_EQ(s.forking_us, 4u);
  EXPECT_EQ(s.pages_restored, 688u);
}

TEST_F(CriuStatsTest, ErrorsNameTheFile) {
  rpc::StatsEntry e;
  e.mutable_dump()->set_frozen_time(1);
  DumpStats s;
  Status st = ReadDumpStats(Put("bad-magic", Image(e, 0x12345678)), &s);
  EXPECT_TRUE(st.IsCorruption());
  EXPECT_NE(st.message().find(dir_ + "/bad-magic: not a stats image"), std::string::npos)
      << st.message();

  const std::string whole = Image(e);
  st = ReadDumpStats(Put("short", whole.substr(0, whole.size() - 1)), &s);
  EXPECT_TRUE(st.IsCorruption()) << st.ToString();

  RestoreStats r;
  st = ReadRestoreStats(Put("dump-only", whole), &r);
  EXPECT_TRUE(st.IsCorruption());
  EXPECT_NE(st.message().find("no restore entry"), std::string::npos) << st.message();

  st = ReadDumpStats(dir_ + "/absent", &s);
  EXPECT_TRUE(st.IsNotFound()) << st.ToString();
}

}  // namespace
}  // namespace understudy::checkpoint
