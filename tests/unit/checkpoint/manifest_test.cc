// The checkpoint manifest: written over fake image files, then every way a
// directory can differ from it is refused, naming the file.
#include "checkpoint/manifest.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace understudy::checkpoint {
namespace {

namespace fs = std::filesystem;

class ManifestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "understudy-manifest-XXXXXX").string();
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    Put("pages-1.img", std::string(3 << 20, 'p') + "tail");
    Put("core-1.img", "core");
    Put("stats-dump", "stats");
    Put("criu-dump.log", "a log, not an image");
  }
  void TearDown() override { fs::remove_all(dir_); }

  void Put(const std::string& name, const std::string& data) {
    std::ofstream(dir_ + "/" + name, std::ios::binary) << data;
  }
  std::string Get(const std::string& name) {
    std::ifstream in(dir_ + "/" + name, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  }
  void Flip(const std::string& name, size_t at) {
    std::string data = Get(name);
    ASSERT_LT(at, data.size());
    data[at] ^= 0x20;
    Put(name, data);
  }
  Manifest Written() {
    Manifest m;
    m.notes = {{"mark_seq", "77"}, {"note.with-chars_+", "a value with spaces"}};
    m.externals = {"mnt[understudy-host-0]:/dev/shm"};
    const Status st = WriteManifest(dir_, &m);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return m;
  }

  std::string dir_;
};

TEST_F(ManifestTest, ListsEveryImageButLogsAndRoundTrips) {
  const Manifest written = Written();
  ASSERT_EQ(written.files.size(), 3u);
  EXPECT_EQ(written.files[0].name, "core-1.img");  // sorted
  EXPECT_EQ(written.files[1].name, "pages-1.img");
  EXPECT_EQ(written.files[2].name, "stats-dump");
  EXPECT_EQ(written.TotalBytes(), (3u << 20) + 4 + 4 + 5);

  Manifest read;
  const Status st = Verify(dir_, &read);
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_EQ(read.files.size(), 3u);
  for (size_t i = 0; i < 3; i++) {
    EXPECT_EQ(read.files[i].name, written.files[i].name);
    EXPECT_EQ(read.files[i].size, written.files[i].size);
    EXPECT_EQ(read.files[i].xxh128, written.files[i].xxh128);
  }
  EXPECT_EQ(read.notes, written.notes);
  EXPECT_EQ(read.externals, written.externals);
  ASSERT_NE(read.Note("mark_seq"), nullptr);
  EXPECT_EQ(*read.Note("mark_seq"), "77");
  EXPECT_EQ(read.Note("absent"), nullptr);
}

TEST_F(ManifestTest, OneFlippedByteIsACorruptionNamingTheFile) {
  Written();
  Flip("pages-1.img", 1 << 20);
  const Status st = Verify(dir_);
  ASSERT_TRUE(st.IsCorruption()) << st.ToString();
  EXPECT_NE(st.message().find("image file pages-1.img: checksum mismatch"), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("take or ship it again"), std::string::npos) << st.message();
}

TEST_F(ManifestTest, ATruncatedImageNamesTheFileAndBothSizes) {
  Written();
  fs::resize_file(dir_ + "/core-1.img", 2);
  const Status st = Verify(dir_);
  ASSERT_TRUE(st.IsCorruption()) << st.ToString();
  EXPECT_NE(st.message().find("image file core-1.img has 2 bytes, the manifest says 4"),
            std::string::npos)
      << st.message();
}

TEST_F(ManifestTest, AMissingImageIsNamed) {
  Written();
  fs::remove(dir_ + "/stats-dump");
  const Status st = Verify(dir_);
  ASSERT_TRUE(st.IsCorruption()) << st.ToString();
  EXPECT_NE(st.message().find("stats-dump is listed in the manifest but missing"),
            std::string::npos)
      << st.message();
}

TEST_F(ManifestTest, AnUnlistedImageIsRefusedButLogsAndRestoreStatsAreNot) {
  Written();
  Put("criu-restore.log", "written by a restore");
  Put("stats-restore", "written by a restore");
  EXPECT_TRUE(Verify(dir_).ok());
  Put("pages-2.img", "stray");
  const Status st = Verify(dir_);
  ASSERT_TRUE(st.IsCorruption()) << st.ToString();
  EXPECT_NE(st.message().find("file pages-2.img is not in the manifest"), std::string::npos)
      << st.message();
}

TEST_F(ManifestTest, AnEditedManifestFailsItsOwnHash) {
  Written();
  std::string text = Get(kManifestName);
  const size_t at = text.find("note mark_seq 77");
  ASSERT_NE(at, std::string::npos);
  text[at + 14] = '8';  // 77 -> 87
  Put(kManifestName, text);
  const Status st = Verify(dir_);
  ASSERT_TRUE(st.IsCorruption()) << st.ToString();
  EXPECT_NE(st.message().find("manifest hash mismatch"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find(std::string(kManifestName)), std::string::npos) << st.message();
}

TEST_F(ManifestTest, ATruncatedManifestIsRefused) {
  Written();
  const std::string text = Get(kManifestName);
  Put(kManifestName, text.substr(0, text.rfind("end ")));
  Status st = Verify(dir_);
  ASSERT_TRUE(st.IsCorruption()) << st.ToString();
  EXPECT_NE(st.message().find("no end line"), std::string::npos) << st.message();
  Put(kManifestName, text.substr(0, text.size() - 3));
  st = Verify(dir_);
  ASSERT_TRUE(st.IsCorruption()) << st.ToString();
  EXPECT_NE(st.message().find("torn write"), std::string::npos) << st.message();
}

TEST_F(ManifestTest, NoManifestIsNotFoundWithTheNextStep) {
  const Status st = Verify(dir_);
  ASSERT_TRUE(st.IsNotFound()) << st.ToString();
  EXPECT_NE(st.message().find("checkpoint " + dir_ + ": no understudy-manifest"), std::string::npos)
      << st.message();
}

TEST_F(ManifestTest, AnotherFormatVersionIsRefused) {
  Written();
  std::string text = Get(kManifestName);
  text.replace(text.find(" 1\n"), 3, " 2\n");
  Put(kManifestName, text);
  const Status st = Verify(dir_);
  ASSERT_TRUE(st.IsCorruption()) << st.ToString();
  EXPECT_NE(st.message().find("format version 2, this build reads 1"), std::string::npos)
      << st.message();
}

TEST_F(ManifestTest, NotesThatCannotBeWrittenAreRefused) {
  Manifest m;
  m.notes = {{"has space", "v"}};
  EXPECT_TRUE(WriteManifest(dir_, &m).IsInvalidArgument());
  m.notes = {{"k", "two\nlines"}};
  EXPECT_TRUE(WriteManifest(dir_, &m).IsInvalidArgument());
  EXPECT_FALSE(fs::exists(dir_ + "/" + kManifestName));
}

TEST_F(ManifestTest, WhichNamesAreImages) {
  EXPECT_TRUE(IsImageFile("pages-1.img"));
  EXPECT_TRUE(IsImageFile("stats-dump"));
  EXPECT_TRUE(IsImageFile("tmpfs-dev-22.tar.gz.img"));
  EXPECT_FALSE(IsImageFile("criu-dump.log"));
  EXPECT_FALSE(IsImageFile("stats-restore"));
  EXPECT_FALSE(IsImageFile(kManifestName));
}

}  // namespace
}  // namespace understudy::checkpoint
