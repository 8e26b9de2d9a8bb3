#include "plugin/backend/fs/mount_table.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "plugin/testing/private_mount_namespace.h"

namespace snapledger {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

std::vector<MountEntry> Parse(const std::string& text) {
  absl::StatusOr<std::vector<MountEntry>> table = ParseMountInfo(text);
  EXPECT_TRUE(table.ok()) << table.status();
  return table.ok() ? *table : std::vector<MountEntry>{};
}

std::vector<std::string> MountPoints(const std::vector<MountEntry>& entries) {
  std::vector<std::string> points;
  for (const MountEntry& e : entries) points.push_back(e.mount_point);
  return points;
}

using ::snapledger::testing::PrivateMountNamespace;

TEST(ParseMountInfoTest, ReadsTheFieldsAndSkipsOptionalOnes) {
  const std::vector<MountEntry> table = Parse(
      "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
      "23 22 0:21 / /proc rw,nosuid - proc proc rw\n"
      "\n"
      "31 22 259:17 /sl/snapshots/42/fs /run/c/rootfs rw shared:5 "
      "master:1 propagate_from:2 - ext4 /dev/nvme0n1p1 rw,errors=x\n");
  ASSERT_EQ(table.size(), 3u);
  EXPECT_EQ(table[0].mount_id, 22);
  EXPECT_EQ(table[0].parent_id, 1);
  EXPECT_EQ(table[0].dev, makedev(8, 1));
  EXPECT_EQ(table[0].root, "/");
  EXPECT_EQ(table[0].mount_point, "/");
  EXPECT_EQ(table[0].fs_type, "ext4");
  EXPECT_EQ(table[0].source, "/dev/sda1");
  EXPECT_EQ(table[1].mount_point, "/proc");
  EXPECT_EQ(table[1].fs_type, "proc");
  EXPECT_EQ(table[2].mount_id, 31);
  EXPECT_EQ(table[2].parent_id, 22);
  EXPECT_EQ(table[2].dev, makedev(259, 17));
  EXPECT_EQ(table[2].root, "/sl/snapshots/42/fs");
  EXPECT_EQ(table[2].mount_point, "/run/c/rootfs");
  EXPECT_EQ(table[2].fs_type, "ext4");
  EXPECT_EQ(table[2].source, "/dev/nvme0n1p1");
}

TEST(ParseMountInfoTest, UnescapesPaths) {
  const std::vector<MountEntry> table = Parse(
      "40 22 8:1 /my\\040dir/a\\011b /mnt/x\\012y\\134z rw - ext4 "
      "/dev/my\\040disk rw\n"
      "41 22 8:1 /back\\slash /mnt/short\\04 rw - ext4 /dev/sda1 rw");
  ASSERT_EQ(table.size(), 2u);
  EXPECT_EQ(table[0].root, "/my dir/a\tb");
  EXPECT_EQ(table[0].mount_point, "/mnt/x\ny\\z");
  EXPECT_EQ(table[0].source, "/dev/my disk");
  // Backslashes that are no escape stay as they are.
  EXPECT_EQ(table[1].root, "/back\\slash");
  EXPECT_EQ(table[1].mount_point, "/mnt/short\\04");
}

TEST(ParseMountInfoTest, AcceptsAnEmptyTableAndAnEmptySource) {
  EXPECT_THAT(Parse(""), IsEmpty());
  const std::vector<MountEntry> table =
      Parse("50 22 0:60 / /mnt rw - tmpfs  rw\n");
  ASSERT_EQ(table.size(), 1u);
  EXPECT_EQ(table[0].fs_type, "tmpfs");
  EXPECT_EQ(table[0].source, "");
}

TEST(ParseMountInfoTest, RejectsMalformedLines) {
  const std::string good = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n";
  for (const std::string bad : {
           "23 22 0:21 / /proc rw proc proc rw",    // no separator
           "23 22 0:21 / /proc rw - proc",          // no source
           "23 22 0-21 / /proc rw - proc proc rw",  // device
           "x 22 0:21 / /proc rw - proc proc rw",   // id
           "23 22 0:21 / /proc - proc proc rw",     // separator too early
           "23 22 0:21  /proc rw - proc proc rw",   // empty root
       }) {
    absl::StatusOr<std::vector<MountEntry>> table =
        ParseMountInfo(good + bad + "\n");
    EXPECT_EQ(table.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(table.status().message(), HasSubstr("line 2")) << bad;
  }
}

TEST(ReadMountInfoTest, ReadsThisProcesssTable) {
  absl::StatusOr<std::vector<MountEntry>> table = ReadMountInfo();
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_THAT(MountPoints(*table), Contains("/"));
  EXPECT_EQ(ReadMountInfo("/nonexistent/mountinfo").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(MountTableCacheTest, ReadsThisProcesssTable) {
  MountTableCache cache;
  absl::StatusOr<std::shared_ptr<const std::vector<MountEntry>>> table =
      cache.Get();
  ASSERT_TRUE(table.ok()) << table.status();
  ASSERT_NE(*table, nullptr);
  EXPECT_THAT(MountPoints(**table), Contains("/"));
  EXPECT_EQ(cache.reads(), 1);
}

TEST(MountTableCacheTest, ErrorsAreNotCached) {
  MountTableCache cache("/nonexistent/mountinfo");
  EXPECT_EQ(cache.Get().status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(cache.Get().status().code(), absl::StatusCode::kNotFound);
}

TEST(MountTableCacheTest, ConcurrentCallers) {
  MountTableCache cache;
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&cache, &failures, t] {
      for (int i = 0; i < 200; ++i) {
        absl::StatusOr<std::shared_ptr<const std::vector<MountEntry>>> table =
            cache.Get();
        if (!table.ok() || *table == nullptr || (*table)->empty()) {
          ++failures[t];
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_THAT(failures, ::testing::Each(0));
}

// Mounts made and unmade between calls: in the private mount namespace only.
class MountTableCacheMountTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!PrivateMountNamespace::Unavailable().empty()) {
      GTEST_SKIP() << PrivateMountNamespace::Unavailable();
    }
    std::string tmpl = ::testing::TempDir() + "/mount_table_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << strerror(errno);
    char resolved[PATH_MAX];
    ASSERT_NE(::realpath(tmpl.c_str(), resolved), nullptr);
    dir_ = resolved;
  }
  void TearDown() override {
    if (!dir_.empty()) ::rmdir(dir_.c_str());
  }
  std::vector<std::string> Points() {
    absl::StatusOr<std::shared_ptr<const std::vector<MountEntry>>> table =
        cache_.Get();
    EXPECT_TRUE(table.ok()) << table.status();
    return table.ok() ? MountPoints(**table) : std::vector<std::string>{};
  }

  std::string dir_;
  MountTableCache cache_;
};

TEST_F(MountTableCacheMountTest, ReadsAgainOnlyAfterAChange) {
  EXPECT_THAT(Points(), Not(Contains(dir_)));
  absl::StatusOr<std::shared_ptr<const std::vector<MountEntry>>> first =
      cache_.Get();
  ASSERT_TRUE(first.ok());
  absl::StatusOr<std::shared_ptr<const std::vector<MountEntry>>> second =
      cache_.Get();
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*first, *second);  // the same copy: nothing changed
  EXPECT_EQ(cache_.reads(), 1);

  ASSERT_EQ(::mount("tmpfs", dir_.c_str(), "tmpfs", 0, nullptr), 0)
      << strerror(errno);
  absl::Cleanup unmount = [this] { ::umount2(dir_.c_str(), MNT_DETACH); };
  EXPECT_THAT(Points(), Contains(dir_));
  EXPECT_EQ(cache_.reads(), 2);
  EXPECT_THAT(Points(), Contains(dir_));
  EXPECT_EQ(cache_.reads(), 2);

  // A bind mount on top, then its unmount: the table is read again.
  ASSERT_EQ(::mount(dir_.c_str(), dir_.c_str(), nullptr, MS_BIND, nullptr), 0)
      << strerror(errno);
  ASSERT_EQ(::umount2(dir_.c_str(), 0), 0) << strerror(errno);
  EXPECT_THAT(Points(), Contains(dir_));
  EXPECT_EQ(cache_.reads(), 3);

  ASSERT_EQ(::umount2(dir_.c_str(), 0), 0) << strerror(errno);
  std::move(unmount).Cancel();
  EXPECT_THAT(Points(), Not(Contains(dir_)));
  EXPECT_EQ(cache_.reads(), 4);
}

// The root filesystem (8:1) at /, a second one (8:2) at /var/lib.
constexpr char kBase[] =
    "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
    "30 22 8:2 / /var/lib rw - ext4 /dev/sdb1 rw\n";

TEST(MountsUsingTest, BindMountsOfTheTreeAndMountsInsideIt) {
  const std::vector<MountEntry> table = Parse(
      std::string(kBase) +
      // The object's tree as a container's rootfs: 8:2 is mounted at
      // /var/lib, so the object lies at /sl/snapshots/42 on it.
      "31 22 8:2 /sl/snapshots/42/fs /run/c1/rootfs rw - ext4 /dev/sdb1 rw\n"
      // A file of the tree bound elsewhere.
      "32 22 8:2 /sl/snapshots/42/fs/etc/hosts /run/c1/hosts rw - ext4 s rw\n"
      // A sibling whose name only starts alike.
      "33 22 8:2 /sl/snapshots/420/fs /run/c2/rootfs rw - ext4 s rw\n"
      // The same path, but on the other filesystem.
      "34 22 8:1 /sl/snapshots/42/fs /run/c3/rootfs rw - ext4 s rw\n"
      // The path as seen from /, which is not a path of 8:2.
      "35 22 8:2 /var/lib/sl/snapshots/42 /run/c4 rw - ext4 s rw\n"
      // Something mounted inside the tree.
      "36 30 0:50 / /var/lib/sl/snapshots/42/fs/proc rw - proc proc rw\n"
      // Something mounted on the object directory itself.
      "37 30 0:51 / /var/lib/sl/snapshots/42 rw - tmpfs tmpfs rw\n");
  EXPECT_THAT(MountPoints(MountsUsing(table, "/var/lib/sl/snapshots/42",
                                      makedev(8, 2))),
              ElementsAre("/run/c1/rootfs", "/run/c1/hosts",
                          "/var/lib/sl/snapshots/42/fs/proc",
                          "/var/lib/sl/snapshots/42"));
  EXPECT_THAT(MountPoints(MountsUsing(table, "/var/lib/sl/snapshots/420",
                                      makedev(8, 2))),
              ElementsAre("/run/c2/rootfs"));
  EXPECT_THAT(MountsUsing(table, "/var/lib/sl/snapshots/7", makedev(8, 2)),
              IsEmpty());
}

TEST(MountsUsingTest, TreeOnTheRootFilesystem) {
  const std::vector<MountEntry> table = Parse(
      "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
      "31 22 8:1 /srv/snapshots/42/fs /run/c1/rootfs rw - ext4 s rw\n"
      "32 22 8:1 /srv/snapshots/43/fs /run/c2/rootfs rw - ext4 s rw\n");
  EXPECT_THAT(
      MountPoints(MountsUsing(table, "/srv/snapshots/42", makedev(8, 1))),
      ElementsAre("/run/c1/rootfs"));
}

TEST(MountsUsingTest, TreeReachedThroughABindMount) {
  // /var/lib/sl is /data/sl of 8:1: that is where the tree lies on 8:1.
  const std::vector<MountEntry> table = Parse(
      "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
      "30 22 8:1 /data/sl /var/lib/sl rw - ext4 /dev/sda1 rw\n"
      "31 22 8:1 /data/sl/snapshots/42/fs /run/c1/rootfs rw - ext4 s rw\n"
      "32 22 8:1 /var/lib/sl/snapshots/42/fs /run/c2/rootfs rw - ext4 s rw\n"
      // Mounted inside the tree through the other path to it.
      "33 22 0:50 / /data/sl/snapshots/42/fs/proc rw - proc proc rw\n");
  EXPECT_THAT(MountPoints(MountsUsing(table, "/var/lib/sl/snapshots/42",
                                      makedev(8, 1))),
              ElementsAre("/run/c1/rootfs", "/data/sl/snapshots/42/fs/proc"));
}

TEST(MountsUsingTest, PrefersTheMountOfTheDirectorysDevice) {
  // Two filesystems stacked on /var/lib; the tree is on the lower one (8:2),
  // e.g. reached through a descriptor opened before the upper was mounted.
  const std::vector<MountEntry> table = Parse(
      "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
      "30 22 8:2 / /var/lib rw - ext4 /dev/sdb1 rw\n"
      "31 30 8:3 / /var/lib rw - ext4 /dev/sdc1 rw\n"
      "40 22 8:2 /sl/snapshots/42/fs /run/c1/rootfs rw - ext4 s rw\n"
      "41 22 8:3 /sl/snapshots/42/fs /run/c2/rootfs rw - ext4 s rw\n");
  EXPECT_THAT(MountPoints(MountsUsing(table, "/var/lib/sl/snapshots/42",
                                      makedev(8, 2))),
              ElementsAre("/run/c1/rootfs"));
  EXPECT_THAT(MountPoints(MountsUsing(table, "/var/lib/sl/snapshots/42",
                                      makedev(8, 3))),
              ElementsAre("/run/c2/rootfs"));
  // No mount of that device (a btrfs subvolume): the longest prefix, the
  // visible (last) one on a tie.
  EXPECT_THAT(MountPoints(MountsUsing(table, "/var/lib/sl/snapshots/42",
                                      makedev(0, 99))),
              ElementsAre("/run/c2/rootfs"));
}

TEST(MountsUsingTest, EscapedPaths) {
  const std::vector<MountEntry> table = Parse(
      "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
      "30 22 8:1 /my\\040data /srv/my\\040root rw - ext4 /dev/sda1 rw\n"
      "31 22 8:1 /my\\040data/snapshots/42/fs /run/c\\0401 rw - ext4 s rw\n");
  EXPECT_THAT(MountPoints(MountsUsing(table, "/srv/my root/snapshots/42",
                                      makedev(8, 1))),
              ElementsAre("/run/c 1"));
}

TEST(ParseMountInfoTest, KeepsSuperOptionsEscaped) {
  const std::vector<MountEntry> table = Parse(
      "69 46 0:40 / /m rw,relatime - overlay overlay "
      "rw,lowerdir=/l\\134:1:l\\0542,upperdir=/u,workdir=/w\n"
      "70 46 0:41 / /n rw - tmpfs tmpfs\n");
  ASSERT_EQ(table.size(), 2u);
  EXPECT_EQ(table[0].super_options,
            "rw,lowerdir=/l\\134:1:l\\0542,upperdir=/u,workdir=/w");
  EXPECT_EQ(table[1].super_options, "");
}

TEST(ParseOverlayLayersTest, SplitsTheOptionsAndTheLowerDirs) {
  const OverlayLayers layers = ParseOverlayLayers(
      "rw,lowerdir=/s/3/fs:/s/2/fs:/s/1/fs,upperdir=/s/4/fs,"
      "workdir=/s/4/work,index=off,uuid=on");
  EXPECT_THAT(layers.lower_dirs, ElementsAre("/s/3/fs", "/s/2/fs", "/s/1/fs"));
  EXPECT_EQ(layers.upper_dir, "/s/4/fs");
  EXPECT_EQ(layers.work_dir, "/s/4/work");

  const OverlayLayers read_only = ParseOverlayLayers("ro,lowerdir=/a:/b");
  EXPECT_THAT(read_only.lower_dirs, ElementsAre("/a", "/b"));
  EXPECT_EQ(read_only.upper_dir, "");
  EXPECT_EQ(read_only.work_dir, "");
  EXPECT_THAT(ParseOverlayLayers("rw,relatime").lower_dirs, IsEmpty());
}

TEST(ParseOverlayLayersTest, UnescapesAndHonoursEscapedColons) {
  // As the kernel shows lowerdir="/l\:1:l 2,x" (a colon escaped for
  // overlayfs, then backslash, space and comma escaped for mountinfo).
  const OverlayLayers layers = ParseOverlayLayers(
      "rw,lowerdir=/l\\134:1:l\\0402\\054x,upperdir=/u\\040p,workdir=w");
  EXPECT_THAT(layers.lower_dirs, ElementsAre("/l:1", "l 2,x"));
  EXPECT_EQ(layers.upper_dir, "/u p");
  EXPECT_EQ(layers.work_dir, "w");
}

TEST(ParseOverlayLayersTest, DataLayersAndAppendedLayers) {
  EXPECT_THAT(ParseOverlayLayers("lowerdir=/a:/b::/d1::/d2").lower_dirs,
              ElementsAre("/a", "/b", "/d1", "/d2"));
  EXPECT_THAT(ParseOverlayLayers("lowerdir+=/a,lowerdir+=/b\\054c,datadir+=/d")
                  .lower_dirs,
              ElementsAre("/a", "/b,c", "/d"));
}

TEST(OverlayMountsUsingTest, FindsEveryKindOfLayer) {
  const std::vector<MountEntry> table = Parse(
      "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
      "60 22 0:40 / /run/a rw - overlay overlay "
      "rw,lowerdir=/s/3/fs:/s/1/fs,upperdir=/s/5/fs,workdir=/s/5/work\n"
      "61 22 0:41 / /run/b rw - overlay overlay ro,lowerdir=/s/12/fs:/s/2/fs\n"
      "62 22 0:42 / /run/c rw - overlay overlay "
      "rw,lowerdir=7/fs:9/fs,upperdir=/s/8/fs,workdir=/s/8/work\n"
      "63 22 0:43 / /run/d rw - tmpfs /s/6/fs rw,lowerdir=/s/6/fs\n"
      "64 22 0:44 / /run/e rw - overlay overlay "
      "rw,lowerdir=/s//4/./x/../fs/,upperdir=/u,workdir=/w\n");
  const std::string base = "/s";
  EXPECT_THAT(MountPoints(OverlayMountsUsing(table, "/s/1", base)),
              ElementsAre("/run/a"));  // the bottom layer
  EXPECT_THAT(MountPoints(OverlayMountsUsing(table, "/s/3", base)),
              ElementsAre("/run/a"));
  EXPECT_THAT(MountPoints(OverlayMountsUsing(table, "/s/5", base)),
              ElementsAre("/run/a"));  // upper and work dir
  EXPECT_THAT(MountPoints(OverlayMountsUsing(table, "/s/2", base)),
              ElementsAre("/run/b"));  // not fooled by /s/12
  EXPECT_THAT(MountPoints(OverlayMountsUsing(table, "/s/12", base)),
              ElementsAre("/run/b"));
  EXPECT_THAT(MountPoints(OverlayMountsUsing(table, "/s/9", base)),
              ElementsAre("/run/c"));  // relative, as containerd mounts
  EXPECT_THAT(OverlayMountsUsing(table, "/s/9", ""), IsEmpty());
  EXPECT_THAT(MountPoints(OverlayMountsUsing(table, "/s/4", base)),
              ElementsAre("/run/e"));  // lexically normalised
  EXPECT_THAT(OverlayMountsUsing(table, "/s/6", base), IsEmpty());  // tmpfs
  EXPECT_THAT(MountPoints(OverlayMountsUsing(table, "/s", base)),
              ElementsAre("/run/a", "/run/b", "/run/c", "/run/e"));
  EXPECT_THAT(OverlayMountsUsing(table, "/s/10", base), IsEmpty());
}

// Relative lowerdirs do not say what they are relative to: the caller
// decides, per mount, whether they are its own.
TEST(OverlayMountsUsingTest, RelativeLayersCountOnlyWhereTheCallerOwnsThem) {
  const std::vector<MountEntry> table = Parse(
      "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
      "70 22 0:50 / /run/ours rw - overlay overlay ro,lowerdir=3/fs:2/fs\n"
      "71 22 0:51 / /run/theirs rw - overlay overlay ro,lowerdir=9/fs:2/fs\n"
      "72 22 0:52 / /run/abs rw - overlay overlay "
      "ro,lowerdir=/s/2/fs:/s/1/fs\n");
  std::vector<std::vector<std::string>> asked;
  auto ours = [&](const OverlayLayers& l) {
    asked.push_back(l.lower_dirs);
    return l.lower_dirs.front() == "3/fs";
  };
  EXPECT_THAT(MountPoints(OverlayMountsUsing(table, "/s/2", "/s", ours)),
              ElementsAre("/run/ours", "/run/abs"));
  EXPECT_THAT(asked, ElementsAre(ElementsAre("3/fs", "2/fs"),
                                 ElementsAre("9/fs", "2/fs"),
                                 ElementsAre("/s/2/fs", "/s/1/fs")));
  // Absolute layers count whatever the caller says.
  EXPECT_THAT(
      MountPoints(OverlayMountsUsing(
          table, "/s/1", "/s", [](const OverlayLayers&) { return false; })),
      ElementsAre("/run/abs"));
}

}  // namespace
}  // namespace snapledger
