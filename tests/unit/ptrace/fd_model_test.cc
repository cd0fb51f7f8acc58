// FdModel (ptrace/golive.h): what the go-live rebuilds is what the replayed
// calls made.  The "program" is this process: Observe reads call arguments
// (addresses, option values, epoll events) from the thread it is given.
#include "ptrace/golive.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

namespace understudy::ptrace_backend {
namespace {

using Kind = FdModel::Desc::Kind;

uint64_t Addr(const void* p) { return reinterpret_cast<uint64_t>(p); }

class FdModelTest : public ::testing::Test {
 protected:
  void Call(long nr, std::initializer_list<uint64_t> args, long result, bool placeholder = true,
            const std::string* out0 = nullptr) {
    uint64_t a[6] = {};
    size_t i = 0;
    for (uint64_t v : args) a[i++] = v;
    model_.Observe(pid_, pid_, nr, a, result, placeholder, out0);
  }
  const FdModel::Table& table() { return model_.TableOf(pid_); }

  FdModel model_;
  const pid_t pid_ = getpid();
};

TEST_F(FdModelTest, ListenerWithOptionsAndEpollRegistration) {
  int one = 1;
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(6379);
  sin.sin_addr.s_addr = htonl(0x0a000005);
  Call(SYS_socket, {AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0}, 3);
  Call(SYS_setsockopt, {3, SOL_SOCKET, SO_REUSEADDR, Addr(&one), sizeof one}, 0);
  Call(SYS_bind, {3, Addr(&sin), sizeof sin}, 0);
  Call(SYS_listen, {3, 511}, 0);
  Call(SYS_epoll_create1, {EPOLL_CLOEXEC}, 4);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET;
  ev.data.u64 = 0x1122334455667788ull;
  Call(SYS_epoll_ctl, {4, EPOLL_CTL_ADD, 3, Addr(&ev)}, 0);

  const FdModel::Desc& l = table().at(3);
  EXPECT_EQ(l.kind, Kind::kSocket);
  EXPECT_EQ(l.domain, AF_INET);
  EXPECT_EQ(l.type, SOCK_STREAM);  // the flag bits apart
  EXPECT_TRUE(l.nonblock);
  EXPECT_EQ(l.backlog, 511);
  EXPECT_FALSE(l.connection);
  ASSERT_EQ(l.bound.size(), sizeof sin);
  EXPECT_EQ(std::memcmp(l.bound.data(), &sin, sizeof sin), 0);
  ASSERT_EQ(l.options.size(), 1u);
  EXPECT_EQ(l.options[0].first, std::make_pair(SOL_SOCKET, SO_REUSEADDR));
  EXPECT_EQ(l.options[0].second, std::string(reinterpret_cast<char*>(&one), sizeof one));

  const FdModel::Desc& e = table().at(4);
  EXPECT_EQ(e.kind, Kind::kEpoll);
  EXPECT_TRUE(e.cloexec);
  ASSERT_EQ(e.regs.count(3), 1u);
  EXPECT_EQ(e.regs.at(3).first, EPOLLIN | EPOLLET);
  EXPECT_EQ(e.regs.at(3).second, 0x1122334455667788ull);
}

TEST_F(FdModelTest, AcceptedConnectionsAndCloseRemoveRegistrations) {
  Call(SYS_socket, {AF_INET6, SOCK_STREAM, 0}, 3);
  Call(SYS_listen, {3, 128}, 0);
  Call(SYS_accept4, {3, 0, 0, SOCK_NONBLOCK | SOCK_CLOEXEC}, 5);
  Call(SYS_epoll_create, {1}, 4);
  epoll_event ev{};
  ev.events = EPOLLIN;
  Call(SYS_epoll_ctl, {4, EPOLL_CTL_ADD, 5, Addr(&ev)}, 0);
  const FdModel::Desc& c = table().at(5);
  EXPECT_EQ(c.kind, Kind::kSocket);
  EXPECT_TRUE(c.connection);
  EXPECT_EQ(c.domain, AF_INET6);  // from its listener
  EXPECT_TRUE(c.nonblock);
  EXPECT_TRUE(c.cloexec);
  EXPECT_EQ(table().at(4).regs.count(5), 1u);

  Call(SYS_close, {5}, 0, false);
  EXPECT_EQ(table().count(5), 0u);
  EXPECT_EQ(table().at(4).regs.count(5), 0u);
  // A failed call changes nothing.
  Call(SYS_close, {3}, -EBADF, false);
  EXPECT_EQ(table().count(3), 1u);
}

TEST_F(FdModelTest, DupFcntlPipesAndExec) {
  Call(SYS_socket, {AF_INET, SOCK_DGRAM, 0}, 3);
  Call(SYS_fcntl, {3, F_SETFL, O_NONBLOCK}, 0, false);
  Call(SYS_dup3, {3, 7, O_CLOEXEC}, 7, false);
  EXPECT_TRUE(table().at(7).nonblock);
  EXPECT_TRUE(table().at(7).cloexec);
  EXPECT_FALSE(table().at(3).cloexec);
  int fds[2] = {8, 9};
  const std::string out(reinterpret_cast<char*>(fds), sizeof fds);
  Call(SYS_pipe2, {0, O_NONBLOCK | O_CLOEXEC}, 0, true, &out);
  EXPECT_EQ(table().at(8).kind, Kind::kPlain);
  EXPECT_TRUE(table().at(9).nonblock);
  Call(SYS_timerfd_create, {1, 0}, 10);
  EXPECT_EQ(table().at(10).kind, Kind::kUnsupported);
  Call(SYS_close_range, {8, 20, 0}, 0, false);
  EXPECT_EQ(table().count(8), 0u);
  EXPECT_EQ(table().count(10), 0u);
  model_.Exec(pid_);  // close-on-exec descriptors go
  EXPECT_EQ(table().count(7), 0u);
  EXPECT_EQ(table().count(3), 1u);
}

TEST_F(FdModelTest, EmulatedFilesKeepPathAndFlagsRealOnesAreDropped) {
  const char path[] = "/var/log/app.log";
  Call(SYS_openat, {static_cast<uint64_t>(AT_FDCWD), Addr(path), O_WRONLY | O_APPEND | O_CREAT, 0640}, 6);
  const FdModel::Desc& f = table().at(6);
  EXPECT_EQ(f.kind, Kind::kFile);
  EXPECT_EQ(f.path, path);
  EXPECT_EQ(f.open_flags, O_WRONLY | O_APPEND | O_CREAT);
  EXPECT_EQ(f.mode, 0640);
  // A read-only file opened for real in both modes needs nothing.
  Call(SYS_openat, {static_cast<uint64_t>(AT_FDCWD), Addr(path), O_RDONLY, 0}, 6, false);
  EXPECT_EQ(table().count(6), 0u);
}

TEST_F(FdModelTest, ForkCopiesTheTable) {
  Call(SYS_socket, {AF_INET, SOCK_STREAM, 0}, 3);
  model_.Fork(pid_, pid_ + 100000);
  EXPECT_TRUE(model_.Has(pid_ + 100000));
  EXPECT_EQ(model_.TableOf(pid_ + 100000).count(3), 1u);
}

}  // namespace
}  // namespace understudy::ptrace_backend
