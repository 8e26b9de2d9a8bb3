#include "plugin/backend/fs/fs_tree.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/testing/fs_helpers.h"

namespace snapledger::fstree {
namespace {

using ::snapledger::testing::LimitLeavingFreeFds;
using ::snapledger::testing::PathExists;
using ::snapledger::testing::ReadFile;
using ::snapledger::testing::WriteFile;

using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

bool IsRoot() { return ::geteuid() == 0; }

struct stat Lstat(const std::string& path) {
  struct stat st;
  std::memset(&st, 0, sizeof(st));
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path << ": " << strerror(errno);
  return st;
}

void MakeDir(const std::string& path, mode_t mode = 0755) {
  ASSERT_EQ(::mkdir(path.c_str(), mode), 0) << path << ": " << strerror(errno);
  ASSERT_EQ(::chmod(path.c_str(), mode), 0);
}

std::string ReadLink(const std::string& path) {
  char buf[4096];
  const ssize_t n = ::readlink(path.c_str(), buf, sizeof(buf));
  EXPECT_GE(n, 0) << path;
  return n < 0 ? "" : std::string(buf, n);
}

// The descriptor limit that leaves exactly `free` descriptors to open.
// Builds `depth` nested directories named `name` below `dir`, fd-relative
// so that the total length may exceed PATH_MAX; returns an fd of the deepest.
int MakeDeepDirs(const std::string& dir, const std::string& name, int depth) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  EXPECT_GE(fd, 0);
  for (int i = 0; i < depth; ++i) {
    EXPECT_EQ(::mkdirat(fd, name.c_str(), 0755), 0) << strerror(errno);
    const int next = ::openat(fd, name.c_str(), O_RDONLY | O_DIRECTORY);
    EXPECT_GE(next, 0) << strerror(errno);
    ::close(fd);
    fd = next;
  }
  return fd;
}

class FsTreeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/fs_tree_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << strerror(errno);
    dir_ = tmpl;
    src_ = dir_ + "/src";
    dst_ = dir_ + "/dst";
    MakeDir(src_);
  }
  void TearDown() override {
    // The helper under test is the only one that copes with trees deeper
    // than PATH_MAX; fall back on the library's if it fails.
    if (!RemoveTree(dir_).ok()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }
  std::string Src(const std::string& rel) const { return src_ + "/" + rel; }
  std::string Dst(const std::string& rel) const { return dst_ + "/" + rel; }

  std::string dir_;
  std::string src_;
  std::string dst_;
};

// ---------------------------------------------------------------------------
// CopyTree

TEST_F(FsTreeTest, CopiesFilesDirectoriesAndModes) {
  MakeDir(Src("a"));
  MakeDir(Src("a/b"), 0750);
  MakeDir(Src("a/b/c"));
  MakeDir(Src("setgid"), 02775);
  MakeDir(Src("sticky"), 01777);
  WriteFile(Src("top.txt"), "top");
  WriteFile(Src("a/b/c/deep.txt"), "deep contents\n", 0600);
  WriteFile(Src("empty"), "", 0640);
  WriteFile(Src("setuid"), "#!/bin/true\n", 04755);
  WriteFile(Src("sticky/file"), "x", 0444);
  MakeDir(Src("readonly"));
  WriteFile(Src("readonly/inside"), "in a read-only directory", 0400);
  ASSERT_EQ(::chmod(Src("readonly").c_str(), 0555), 0);
  ASSERT_EQ(::chmod(src_.c_str(), 0711), 0);

  ASSERT_TRUE(CopyTree(src_, dst_).ok());

  EXPECT_EQ(ReadFile(Dst("top.txt")), "top");
  EXPECT_EQ(ReadFile(Dst("a/b/c/deep.txt")), "deep contents\n");
  EXPECT_EQ(ReadFile(Dst("empty")), "");
  EXPECT_EQ(Lstat(Dst("empty")).st_size, 0);
  EXPECT_EQ(ReadFile(Dst("readonly/inside")), "in a read-only directory");
  EXPECT_EQ(ReadFile(Dst("setuid")), "#!/bin/true\n");
  const struct {
    const char* rel;
    mode_t mode;
  } kModes[] = {
      {"", S_IFDIR | 0711},
      {"a", S_IFDIR | 0755},
      {"a/b", S_IFDIR | 0750},
      {"a/b/c", S_IFDIR | 0755},
      {"setgid", S_IFDIR | 02775},
      {"sticky", S_IFDIR | 01777},
      {"readonly", S_IFDIR | 0555},
      {"top.txt", S_IFREG | 0644},
      {"a/b/c/deep.txt", S_IFREG | 0600},
      {"empty", S_IFREG | 0640},
      {"setuid", S_IFREG | 04755},
      {"sticky/file", S_IFREG | 0444},
      {"readonly/inside", S_IFREG | 0400},
  };
  for (const auto& m : kModes) {
    EXPECT_EQ(Lstat(Dst(m.rel)).st_mode, m.mode) << m.rel;
    EXPECT_NE(Lstat(Dst(m.rel)).st_ino, Lstat(Src(m.rel)).st_ino) << m.rel;
  }
  // The source is left as it was.
  EXPECT_EQ(Lstat(src_).st_mode, S_IFDIR | 0711u);
  EXPECT_EQ(ReadFile(Src("top.txt")), "top");
}

TEST_F(FsTreeTest, CopiesOwners) {
  if (!IsRoot()) GTEST_SKIP() << "chown to other users needs root";
  MakeDir(Src("dir"));
  WriteFile(Src("dir/file"), "owned", 06755);
  ASSERT_EQ(::symlink("dangling", Src("link").c_str()), 0);
  ASSERT_EQ(::chown(Src("dir").c_str(), 1234, 5678), 0);
  ASSERT_EQ(::chown(Src("dir/file").c_str(), 4321, 8765), 0);
  ASSERT_EQ(::chmod(Src("dir/file").c_str(), 06755), 0);  // chown cleared it
  ASSERT_EQ(::lchown(Src("link").c_str(), 1111, 2222), 0);
  ASSERT_EQ(::chown(src_.c_str(), 42, 43), 0);

  ASSERT_TRUE(CopyTree(src_, dst_).ok());

  EXPECT_EQ(Lstat(dst_).st_uid, 42u);
  EXPECT_EQ(Lstat(dst_).st_gid, 43u);
  EXPECT_EQ(Lstat(Dst("dir")).st_uid, 1234u);
  EXPECT_EQ(Lstat(Dst("dir")).st_gid, 5678u);
  EXPECT_EQ(Lstat(Dst("dir/file")).st_uid, 4321u);
  EXPECT_EQ(Lstat(Dst("dir/file")).st_gid, 8765u);
  // setuid and setgid survive the chown.
  EXPECT_EQ(Lstat(Dst("dir/file")).st_mode, S_IFREG | 06755u);
  EXPECT_EQ(Lstat(Dst("link")).st_uid, 1111u);
  EXPECT_EQ(Lstat(Dst("link")).st_gid, 2222u);
}

TEST_F(FsTreeTest, CopiesSymlinksWithoutFollowingThem) {
  MakeDir(dir_ + "/outside");
  WriteFile(dir_ + "/outside/secret", "not part of the tree");
  MakeDir(Src("real"));
  WriteFile(Src("real/file"), "data");
  ASSERT_EQ(::symlink("real/file", Src("relative").c_str()), 0);
  ASSERT_EQ(::symlink("/etc/passwd", Src("absolute").c_str()), 0);
  ASSERT_EQ(::symlink("does/not/exist", Src("dangling").c_str()), 0);
  ASSERT_EQ(::symlink("real", Src("to_dir").c_str()), 0);
  ASSERT_EQ(::symlink((dir_ + "/outside").c_str(), Src("escape").c_str()), 0);
  ASSERT_EQ(::symlink("../../..", Src("real/up").c_str()), 0);

  ASSERT_TRUE(CopyTree(src_, dst_).ok());

  for (const char* name :
       {"relative", "absolute", "dangling", "to_dir", "escape", "real/up"}) {
    EXPECT_TRUE(S_ISLNK(Lstat(Dst(name)).st_mode)) << name;
    EXPECT_EQ(ReadLink(Dst(name)), ReadLink(Src(name))) << name;
  }
  EXPECT_EQ(ReadFile(Dst("relative")), "data");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dst_),
                          std::filesystem::directory_iterator()),
            6);
}

TEST_F(FsTreeTest, PreservesHardLinksWithinTheTree) {
  MakeDir(Src("a"));
  MakeDir(Src("b"));
  WriteFile(Src("a/file"), "shared", 0640);
  ASSERT_EQ(::link(Src("a/file").c_str(), Src("b/link").c_str()), 0);
  ASSERT_EQ(::link(Src("a/file").c_str(), Src("link2").c_str()), 0);
  ASSERT_EQ(::link(Src("a/file").c_str(), (dir_ + "/outside").c_str()), 0);
  // A hard link to a symlink links the symlink itself.
  ASSERT_EQ(::symlink("a/file", Src("sym").c_str()), 0);
  ASSERT_EQ(::linkat(AT_FDCWD, Src("sym").c_str(), AT_FDCWD,
                     Src("b/sym2").c_str(), 0),
            0);
  WriteFile(Src("single"), "alone");
  ASSERT_EQ(Lstat(Src("a/file")).st_nlink, 4u);

  ASSERT_TRUE(CopyTree(src_, dst_).ok());

  const struct stat file = Lstat(Dst("a/file"));
  EXPECT_EQ(file.st_nlink, 3u);  // the link outside the tree is not copied
  EXPECT_NE(file.st_ino, Lstat(Src("a/file")).st_ino);
  EXPECT_EQ(Lstat(Dst("b/link")).st_ino, file.st_ino);
  EXPECT_EQ(Lstat(Dst("link2")).st_ino, file.st_ino);
  EXPECT_EQ(file.st_mode, S_IFREG | 0640u);
  EXPECT_EQ(ReadFile(Dst("b/link")), "shared");
  EXPECT_EQ(Lstat(Dst("sym")).st_ino, Lstat(Dst("b/sym2")).st_ino);
  EXPECT_TRUE(S_ISLNK(Lstat(Dst("b/sym2")).st_mode));
  EXPECT_EQ(Lstat(Dst("single")).st_nlink, 1u);
}

TEST_F(FsTreeTest, CopiesFifosSocketsAndDevices) {
  ASSERT_EQ(::mkfifo(Src("fifo").c_str(), 0620), 0);
  ASSERT_EQ(::chmod(Src("fifo").c_str(), 0620), 0);
  ASSERT_EQ(::mknod(Src("socket").c_str(), S_IFSOCK | 0600, 0), 0);
  if (IsRoot()) {
    ASSERT_EQ(::mknod(Src("null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
    ASSERT_EQ(::chmod(Src("null").c_str(), 0666), 0);
    ASSERT_EQ(::mknod(Src("block").c_str(), S_IFBLK | 0600, makedev(7, 200)),
              0);
  }

  ASSERT_TRUE(CopyTree(src_, dst_).ok());

  EXPECT_EQ(Lstat(Dst("fifo")).st_mode, S_IFIFO | 0620u);
  EXPECT_EQ(Lstat(Dst("socket")).st_mode, S_IFSOCK | 0600u);
  if (IsRoot()) {
    const struct stat null = Lstat(Dst("null"));
    EXPECT_EQ(null.st_mode, S_IFCHR | 0666u);
    EXPECT_EQ(null.st_rdev, makedev(1, 3));
    const struct stat block = Lstat(Dst("block"));
    EXPECT_EQ(block.st_mode, S_IFBLK | 0600u);
    EXPECT_EQ(block.st_rdev, makedev(7, 200));
  }
}

TEST_F(FsTreeTest, CopiesExtendedAttributes) {
  MakeDir(Src("dir"));
  WriteFile(Src("file"), "x", 0444);
  const std::string binary("\0\x01\xff value", 9);
  const std::string big(3000, 'v');
  if (::setxattr(Src("file").c_str(), "user.binary", binary.data(),
                 binary.size(), 0) != 0) {
    GTEST_SKIP() << "no user xattrs here: " << strerror(errno);
  }
  ASSERT_EQ(
      ::setxattr(Src("file").c_str(), "user.big", big.data(), big.size(), 0),
      0);
  ASSERT_EQ(::setxattr(Src("file").c_str(), "user.empty", "", 0, 0), 0);
  ASSERT_EQ(::setxattr(Src("dir").c_str(), "user.dir", "d", 1, 0), 0);
  ASSERT_EQ(::setxattr(src_.c_str(), "user.root", "r", 1, 0), 0);
  ASSERT_EQ(::symlink("file", Src("link").c_str()), 0);
  ASSERT_EQ(::mkfifo(Src("fifo").c_str(), 0600), 0);
  const bool trusted =
      IsRoot() &&
      ::lsetxattr(Src("link").c_str(), "trusted.link", "l", 1, 0) == 0 &&
      ::lsetxattr(Src("fifo").c_str(), "trusted.fifo", "f", 1, 0) == 0;

  ASSERT_TRUE(CopyTree(src_, dst_).ok());

  auto get = [](const std::string& path, const char* name) {
    char buf[4096];
    const ssize_t n = ::lgetxattr(path.c_str(), name, buf, sizeof(buf));
    EXPECT_GE(n, 0) << path << " " << name << ": " << strerror(errno);
    return n < 0 ? std::string("<missing>") : std::string(buf, n);
  };
  EXPECT_EQ(get(Dst("file"), "user.binary"), binary);
  EXPECT_EQ(get(Dst("file"), "user.big"), big);
  EXPECT_EQ(get(Dst("file"), "user.empty"), "");
  EXPECT_EQ(get(Dst("dir"), "user.dir"), "d");
  EXPECT_EQ(get(dst_, "user.root"), "r");
  EXPECT_EQ(Lstat(Dst("file")).st_mode, S_IFREG | 0444u);
  if (trusted) {
    EXPECT_EQ(get(Dst("link"), "trusted.link"), "l");
    EXPECT_EQ(get(Dst("fifo"), "trusted.fifo"), "f");
  }
}

TEST_F(FsTreeTest, CopiesTimestampsToTheNanosecond) {
  MakeDir(Src("dir"));
  MakeDir(Src("dir/sub"));
  WriteFile(Src("dir/sub/file"), "timed");
  ASSERT_EQ(::symlink("dir", Src("link").c_str()), 0);
  ASSERT_EQ(::mkfifo(Src("fifo").c_str(), 0600), 0);
  const struct timespec times[2] = {{1000000000, 123456789},
                                    {1500000000, 987654321}};
  // Deepest first: setting a child's times does not touch its directory's.
  for (const std::string rel :
       {"dir/sub/file", "dir/sub", "dir", "link", "fifo", ""}) {
    ASSERT_EQ(
        ::utimensat(AT_FDCWD, Src(rel).c_str(), times, AT_SYMLINK_NOFOLLOW), 0)
        << rel;
  }

  ASSERT_TRUE(CopyTree(src_, dst_).ok());

  for (const std::string rel :
       {"dir/sub/file", "dir/sub", "dir", "link", "fifo", ""}) {
    const struct stat st = Lstat(Dst(rel));
    EXPECT_EQ(st.st_atim.tv_sec, times[0].tv_sec) << rel;
    EXPECT_EQ(st.st_atim.tv_nsec, times[0].tv_nsec) << rel;
    EXPECT_EQ(st.st_mtim.tv_sec, times[1].tv_sec) << rel;
    EXPECT_EQ(st.st_mtim.tv_nsec, times[1].tv_nsec) << rel;
  }
  // Reading the source did not touch its access time either.
  EXPECT_EQ(Lstat(Src("dir/sub/file")).st_atim.tv_sec, times[0].tv_sec);
}

TEST_F(FsTreeTest, CopiesSparseFilesWithTheirHoles) {
  constexpr off_t kSize = 64 << 20;
  const std::string chunk(4096, 'z');
  {
    const int fd = ::open(Src("sparse").c_str(), O_WRONLY | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, kSize), 0);
    for (off_t at : {off_t{0}, kSize / 2 + 12345, kSize - 4096}) {
      ASSERT_EQ(::pwrite(fd, chunk.data(), chunk.size(), at), 4096);
    }
    ASSERT_EQ(::close(fd), 0);
  }
  // And a file ending in a hole.
  {
    const int fd = ::open(Src("tail_hole").c_str(), O_WRONLY | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, chunk.data(), chunk.size(), 0), 4096);
    ASSERT_EQ(::ftruncate(fd, 8 << 20), 0);
    ASSERT_EQ(::close(fd), 0);
  }

  ASSERT_TRUE(CopyTree(src_, dst_).ok());

  const struct stat src = Lstat(Src("sparse"));
  const struct stat dst = Lstat(Dst("sparse"));
  EXPECT_EQ(dst.st_size, kSize);
  EXPECT_EQ(Lstat(Dst("tail_hole")).st_size, 8 << 20);
  EXPECT_TRUE(ReadFile(Dst("sparse")) == ReadFile(Src("sparse")));
  EXPECT_TRUE(ReadFile(Dst("tail_hole")) == ReadFile(Src("tail_hole")));
  if (src.st_blocks * 512 < kSize / 2) {  // the source filesystem has holes
    EXPECT_LE(dst.st_blocks, src.st_blocks + 64);
    EXPECT_LT(Lstat(Dst("tail_hole")).st_blocks * 512, 1 << 20);
  }
}

TEST_F(FsTreeTest, CopiesTreesDeeperThanPathMax) {
  const std::string name(200, 'd');
  constexpr int kDepth = 30;  // about 6,000 bytes of path
  {
    const int deep = MakeDeepDirs(src_, name, kDepth);
    ASSERT_GE(deep, 0);
    const int fd = ::openat(deep, "leaf", O_WRONLY | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, "leaf", 4), 4);
    ::close(fd);
    // A second link one level up: the first copy is reached by a long path.
    const int up = ::openat(deep, "..", O_RDONLY | O_DIRECTORY);
    ASSERT_GE(up, 0);
    ASSERT_EQ(::linkat(deep, "leaf", up, "leaf_link", 0), 0);
    ::close(up);
    ::close(deep);
  }

  ASSERT_TRUE(CopyTree(src_, dst_).ok());

  int fd = ::open(dst_.c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(fd, 0);
  for (int i = 0; i < kDepth; ++i) {
    const int next = ::openat(fd, name.c_str(), O_RDONLY | O_DIRECTORY);
    ASSERT_GE(next, 0) << "level " << i << ": " << strerror(errno);
    ::close(fd);
    fd = next;
  }
  struct stat leaf, link;
  ASSERT_EQ(::fstatat(fd, "leaf", &leaf, 0), 0);
  ASSERT_EQ(::fstatat(fd, "../leaf_link", &link, 0), 0);
  ::close(fd);
  EXPECT_EQ(leaf.st_size, 4);
  EXPECT_EQ(leaf.st_ino, link.st_ino);
  EXPECT_EQ(leaf.st_nlink, 2u);

  absl::StatusOr<Usage> usage = DiskUsage(dst_);
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_EQ(usage->inodes, 1 + kDepth + 1);

  EXPECT_TRUE(RemoveTree(dst_).ok());
  EXPECT_FALSE(PathExists(dst_));
  EXPECT_TRUE(RemoveTree(src_).ok());
  EXPECT_FALSE(PathExists(src_));
}

TEST_F(FsTreeTest, CopyTreeErrors) {
  MakeDir(dst_);
  absl::Status s = CopyTree(src_, dst_);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
  EXPECT_THAT(s.message(), HasSubstr(dst_));

  s = CopyTree(dir_ + "/missing", dir_ + "/out");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(s.message(), HasSubstr(dir_ + "/missing"));
  EXPECT_THAT(s.message(), HasSubstr("No such file or directory"));
  EXPECT_FALSE(PathExists(dir_ + "/out"));

  WriteFile(dir_ + "/file", "not a directory");
  s = CopyTree(dir_ + "/file", dir_ + "/out");
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr(dir_ + "/file"));

  // The source itself must not be a symlink either.
  ASSERT_EQ(::symlink(src_.c_str(), (dir_ + "/link").c_str()), 0);
  s = CopyTree(dir_ + "/link", dir_ + "/out");
  EXPECT_FALSE(s.ok());
  EXPECT_FALSE(PathExists(dir_ + "/out"));

  s = CopyTree(src_, dir_ + "/no/such/parent");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;

  s = CopyTree(src_, "/");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

TEST_F(FsTreeTest, FailedCopyLeavesNothingBehind) {
  const int deep = MakeDeepDirs(src_, "level", 20);
  ASSERT_GE(deep, 0);
  ::close(deep);
  struct rlimit old_limit;
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &old_limit), 0);
  struct rlimit limit = old_limit;
  limit.rlim_cur = LimitLeavingFreeFds(8);  // runs out a few levels down
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &limit), 0);
  absl::Status s = CopyTree(src_, dst_);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &old_limit), 0);

  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(s.message(), HasSubstr("level"));
  EXPECT_FALSE(PathExists(dst_));
}

TEST_F(FsTreeTest, SkipsTheDestinationWhenInsideTheSource) {
  MakeDir(Src("sub"));
  WriteFile(Src("sub/file"), "f");
  ASSERT_TRUE(CopyTree(src_, Src("sub/copy")).ok());
  EXPECT_EQ(ReadFile(Src("sub/copy/sub/file")), "f");
  EXPECT_FALSE(PathExists(Src("sub/copy/sub/copy")));
}

// ---------------------------------------------------------------------------
// RemoveTree

TEST_F(FsTreeTest, RemovesTreesWithReadOnlyParts) {
  MakeDir(Src("a"));
  MakeDir(Src("a/b"));
  WriteFile(Src("a/b/file"), "x", 0);
  ASSERT_EQ(::symlink("/", Src("a/root_link").c_str()), 0);
  ASSERT_EQ(::mkfifo(Src("a/fifo").c_str(), 0600), 0);
  ASSERT_EQ(::chmod(Src("a/b").c_str(), 0), 0);
  ASSERT_EQ(::chmod(Src("a").c_str(), 0555), 0);

  ASSERT_TRUE(RemoveTree(src_).ok());
  EXPECT_FALSE(PathExists(src_));
  EXPECT_TRUE(PathExists(dir_));
}

TEST_F(FsTreeTest, RemoveTreeOfMissingFileOrSymlink) {
  EXPECT_TRUE(RemoveTree(dir_ + "/missing").ok());
  EXPECT_TRUE(RemoveTree(dir_ + "/missing/deeper").ok());

  WriteFile(dir_ + "/file", "f");
  EXPECT_TRUE(RemoveTree(dir_ + "/file").ok());
  EXPECT_FALSE(PathExists(dir_ + "/file"));

  // A symlink to a directory goes; the directory it names stays.
  WriteFile(Src("keep"), "k");
  ASSERT_EQ(::symlink(src_.c_str(), (dir_ + "/link").c_str()), 0);
  EXPECT_TRUE(RemoveTree(dir_ + "/link/").ok());
  EXPECT_FALSE(PathExists(dir_ + "/link"));
  EXPECT_EQ(ReadFile(Src("keep")), "k");

  EXPECT_EQ(RemoveTree("/").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RemoveTree(dir_ + "/..").code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(FsTreeTest, RemoveTreeDoesNotFollowSymlinksOutOfTheTree) {
  MakeDir(dir_ + "/outside");
  WriteFile(dir_ + "/outside/precious", "p");
  MakeDir(Src("d"));
  ASSERT_EQ(::symlink((dir_ + "/outside").c_str(), Src("d/abs").c_str()), 0);
  ASSERT_EQ(::symlink("../../outside", Src("d/rel").c_str()), 0);

  ASSERT_TRUE(RemoveTree(src_).ok());
  EXPECT_FALSE(PathExists(src_));
  EXPECT_EQ(ReadFile(dir_ + "/outside/precious"), "p");
}

TEST_F(FsTreeTest, RemoveTreeWithoutPrivilegesOpensUpReadOnlyDirectories) {
  if (!IsRoot()) GTEST_SKIP() << "needs root to switch to another user";
  constexpr uid_t kNobody = 65534;
  const std::string home = dir_ + "/home";
  MakeDir(home);
  ASSERT_EQ(::chown(home.c_str(), kNobody, kNobody), 0);
  ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::setgid(kNobody) != 0 || ::setuid(kNobody) != 0) ::_exit(2);
    const std::string tree = home + "/tree";
    bool made = ::mkdir(tree.c_str(), 0755) == 0 &&
                ::mkdir((tree + "/ro").c_str(), 0755) == 0 &&
                ::mkdir((tree + "/ro/closed").c_str(), 0755) == 0 &&
                ::mkdir((tree + "/ro/closed/in").c_str(), 0755) == 0;
    const int fd =
        ::open((tree + "/ro/closed/in/f").c_str(), O_WRONLY | O_CREAT, 0);
    made = made && fd >= 0 && ::close(fd) == 0 &&
           ::chmod((tree + "/ro/closed/in").c_str(), 0500) == 0 &&
           ::chmod((tree + "/ro/closed").c_str(), 0) == 0 &&
           ::chmod((tree + "/ro").c_str(), 0555) == 0;
    if (!made) ::_exit(3);
    // Plain unlink fails here without the chmods.
    if (::rmdir((tree + "/ro/closed").c_str()) == 0) ::_exit(4);
    const absl::Status s = RemoveTree(tree);
    if (!s.ok()) {
      ::fprintf(stderr, "%s\n", s.ToString().c_str());
      ::_exit(5);
    }
    struct stat st;
    ::_exit(::lstat(tree.c_str(), &st) == 0 ? 6 : 0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// Bind-mounts `source` at `target`; skips the test when not allowed.
#define BIND_MOUNT_OR_SKIP(source, target)                               \
  do {                                                                   \
    if (!IsRoot()) GTEST_SKIP() << "mount(2) needs root";                \
    if (::mount((source).c_str(), (target).c_str(), nullptr, MS_BIND,    \
                nullptr) != 0) {                                         \
      if (errno == EPERM) GTEST_SKIP() << "mount(2) not permitted here"; \
      FAIL() << "mount: " << strerror(errno);                            \
    }                                                                    \
  } while (false)

TEST_F(FsTreeTest, RemoveTreeDoesNotCrossMountPoints) {
  const std::string outside = dir_ + "/outside";
  MakeDir(outside);
  WriteFile(outside + "/precious", "p");
  MakeDir(Src("sub"));
  MakeDir(Src("sub/mnt"));
  WriteFile(Src("sub/other"), "o");
  WriteFile(Src("top"), "t");
  BIND_MOUNT_OR_SKIP(outside, Src("sub/mnt"));
  absl::Cleanup unmount = [this] {
    ::umount2(Src("sub/mnt").c_str(), MNT_DETACH);
  };

  absl::Status s = RemoveTree(src_);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr(Src("sub/mnt")));
  EXPECT_EQ(ReadFile(outside + "/precious"), "p");
  EXPECT_EQ(ReadFile(Src("sub/mnt/precious")), "p");
  // Everything else went.
  EXPECT_FALSE(PathExists(Src("sub/other")));
  EXPECT_FALSE(PathExists(Src("top")));

  ASSERT_EQ(::umount2(Src("sub/mnt").c_str(), 0), 0);
  std::move(unmount).Cancel();
  EXPECT_TRUE(RemoveTree(src_).ok());
  EXPECT_FALSE(PathExists(src_));
  EXPECT_EQ(ReadFile(outside + "/precious"), "p");
}

// ---------------------------------------------------------------------------
// DiskUsage

TEST_F(FsTreeTest, DiskUsageCountsEachInodeOnceByAllocatedBlocks) {
  MakeDir(Src("dir"));
  WriteFile(Src("dir/file"), std::string(10000, 'u'));
  ASSERT_EQ(::link(Src("dir/file").c_str(), Src("hardlink").c_str()), 0);
  ASSERT_EQ(::symlink("dir/file", Src("symlink").c_str()), 0);
  WriteFile(Src("empty"), "");
  {
    const int fd = ::open(Src("sparse").c_str(), O_WRONLY | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, 256 << 20), 0);
    ::close(fd);
  }

  absl::StatusOr<Usage> usage = DiskUsage(src_);
  ASSERT_TRUE(usage.ok()) << usage.status();
  // src, dir, file (= hardlink), symlink, empty, sparse.
  EXPECT_EQ(usage->inodes, 6);
  int64_t expected = 0;
  for (const char* rel :
       {"", "dir", "dir/file", "symlink", "empty", "sparse"}) {
    expected += Lstat(Src(rel)).st_blocks * 512;
  }
  EXPECT_EQ(usage->size_bytes, expected);
  EXPECT_GE(usage->size_bytes, 10000);
  EXPECT_LT(usage->size_bytes, 1 << 20);  // the 256 MiB hole costs nothing
}

TEST_F(FsTreeTest, DiskUsageOfEmptyDirectoryIsTheDirectory) {
  absl::StatusOr<Usage> usage = DiskUsage(src_);
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_EQ(usage->inodes, 1);
  EXPECT_EQ(usage->size_bytes, Lstat(src_).st_blocks * 512);
}

TEST_F(FsTreeTest, DiskUsageErrors) {
  absl::StatusOr<Usage> usage = DiskUsage(dir_ + "/missing");
  EXPECT_EQ(usage.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(usage.status().message(), HasSubstr(dir_ + "/missing"));
  WriteFile(dir_ + "/file", "f");
  EXPECT_FALSE(DiskUsage(dir_ + "/file").ok());
  ASSERT_EQ(::symlink(src_.c_str(), (dir_ + "/link").c_str()), 0);
  EXPECT_FALSE(DiskUsage(dir_ + "/link").ok());
}

TEST_F(FsTreeTest, DiskUsageSkipsMountPoints) {
  const std::string outside = dir_ + "/outside";
  MakeDir(outside);
  WriteFile(outside + "/big", std::string(1 << 20, 'b'));
  MakeDir(Src("mnt"));
  WriteFile(Src("file"), "f");
  absl::StatusOr<Usage> before = DiskUsage(src_);
  ASSERT_TRUE(before.ok());
  const int64_t mnt_bytes = Lstat(Src("mnt")).st_blocks * 512;
  BIND_MOUNT_OR_SKIP(outside, Src("mnt"));
  absl::Cleanup unmount = [this] { ::umount2(Src("mnt").c_str(), MNT_DETACH); };

  absl::StatusOr<Usage> during = DiskUsage(src_);
  ASSERT_TRUE(during.ok()) << during.status();
  // Neither the mounted tree nor the directory it covers counts.
  EXPECT_EQ(during->inodes, before->inodes - 1);
  EXPECT_EQ(during->size_bytes, before->size_bytes - mnt_bytes);
}

TEST_F(FsTreeTest, ListDirNamesEntries) {
  MakeDir(Src("d"));
  WriteFile(Src("f"), "");
  ASSERT_EQ(::symlink("nowhere", Src("l").c_str()), 0);
  absl::StatusOr<std::vector<std::string>> names = ListDir(src_);
  ASSERT_TRUE(names.ok()) << names.status();
  EXPECT_THAT(*names, UnorderedElementsAre("d", "f", "l"));
  EXPECT_EQ(ListDir(dir_ + "/missing").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace snapledger::fstree

namespace snapledger::fstree {
namespace {

// A container can nest directories far deeper than the walks' bound: every
// walk must refuse with an error, never crash, and removal must still get rid
// of everything above the bound.
TEST(FsTreeDepthTest, TooDeepTreesAreRefusedNotACrash) {
  char tmpl[] = "/tmp/fs_tree_depth.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string root = tmpl;
  const std::string src = root + "/src";
  ASSERT_EQ(::mkdir(src.c_str(), 0755), 0);
  int fd = ::open(src.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  for (int i = 0; i < kMaxTreeDepth + 10; ++i) {
    ASSERT_EQ(::mkdirat(fd, "d", 0755), 0) << i;
    int next = ::openat(fd, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(next, 0);
    ::close(fd);
    fd = next;
  }
  ::close(fd);

  auto usage = DiskUsage(src);
  EXPECT_EQ(usage.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(usage.status().message()),
              ::testing::HasSubstr("deeper than 2048"));
  absl::Status copy = CopyTree(src, root + "/dst");
  EXPECT_EQ(copy.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(std::filesystem::exists(root + "/dst"));  // nothing half-made
  absl::Status removed = RemoveTree(src);
  EXPECT_EQ(removed.code(), absl::StatusCode::kFailedPrecondition);

  // Clean up with the shell, which walks iteratively.
  std::string cmd = "rm -rf '" + root + "'";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
}

}  // namespace
}  // namespace snapledger::fstree
