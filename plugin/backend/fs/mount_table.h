// The mount table of this process's mount namespace, as the kernel reports
// it in /proc/self/mountinfo (proc_pid_mountinfo(5)), and the question a
// backend asks of it before deleting a tree: is any part of it in use as a
// mount (MountsUsing), or as a layer of an overlay mount
// (OverlayMountsUsing)?
//
// Thread-safety: the functions keep no state; safe to call concurrently.
// MountTableCache is thread-safe.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace snapledger {

// One line of mountinfo. Paths are unescaped (the kernel writes space, tab,
// newline and backslash as \040, \011, \012 and \134).
struct MountEntry {
  int mount_id = 0;
  int parent_id = 0;
  dev_t dev = 0;            // field 3, major:minor of the mounted filesystem
  std::string root;         // field 4: what of that filesystem is mounted
  std::string mount_point;  // field 5, relative to this process's root
  std::string fs_type;      // first field after " - "
  std::string source;       // second field after " - "
  // Third field after " - ", as the kernel wrote it: still escaped, because
  // unescaping would make a comma in a path look like an option separator.
  // Empty if the line has none. See ParseOverlayLayers.
  std::string super_options;
};

// Parses mountinfo `text`: one entry per non-empty line, in order. Optional
// fields (zero or more, before the "-" separator) are skipped. Errors:
// InvalidArgument naming the first malformed line.
[[nodiscard]] absl::StatusOr<std::vector<MountEntry>> ParseMountInfo(
    absl::string_view text);

// Reads (in one pass) and parses the mount table at `path`.
[[nodiscard]] absl::StatusOr<std::vector<MountEntry>> ReadMountInfo(
    const std::string& path = "/proc/self/mountinfo");

// This process's mount table, read again only when the kernel reports that
// it changed. Reading /proc/self/mountinfo costs tens of microseconds (the
// kernel formats every mount); asking whether it changed is one poll(2).
//
// The kernel flags an open mountinfo file (POLLPRI | POLLERR) after any
// mount, unmount, remount or move in its mount namespace since the file was
// opened or last polled, mounts propagated from other namespaces included
// (proc_pid_mountinfo(5)). The cache keeps the file it last read open:
// Get() polls it, and reads a freshly opened file when it is flagged (or
// when the poll fails). A table read after the open it came from is never
// older than that open, and any change after the open flags the file, so
// Get() returns a table at least as new as the start of the call.
//
// The namespace is the one the file is opened in (the first Get(), and
// each re-read); a process that moves to another mount namespace sees the
// new one only after a change in the old one. `path` must be a procfs
// mounts file: a regular file is never flagged, so it would be read once.
class MountTableCache {
 public:
  explicit MountTableCache(std::string path = "/proc/self/mountinfo");
  ~MountTableCache();

  MountTableCache(const MountTableCache&) = delete;
  MountTableCache& operator=(const MountTableCache&) = delete;

  // The current table. Errors are ReadMountInfo's; an error leaves the cache
  // empty, so the next call reads again.
  [[nodiscard]] absl::StatusOr<std::shared_ptr<const std::vector<MountEntry>>>
  Get();

  // Times the table was read (for tests).
  int reads() const;

 private:
  const std::string path_;
  mutable absl::Mutex mu_;
  int fd_ ABSL_GUARDED_BY(mu_) = -1;  // the file `table_` was read from
  std::shared_ptr<const std::vector<MountEntry>> table_ ABSL_GUARDED_BY(mu_);
  int reads_ ABSL_GUARDED_BY(mu_) = 0;
};

// The mounts in `table` that use directory `dir` or anything below it, in
// table order:
//   - a mount whose mount point is at or below `dir` (a filesystem mounted
//     on or inside the tree), whether reached through `dir` or through
//     another path to the same directory;
//   - a mount whose source is at or below `dir` (a bind mount of part of the
//     tree elsewhere, e.g. a container's rootfs): its root lies there on the
//     filesystem that holds `dir`.
// `dir` is absolute and resolved (no symlinks, "." or ".."), not "/"; `dev`
// is the device of the filesystem holding it (st_dev of its parent
// directory). Where `dir` lies within that filesystem is found from the
// mount it is reached through: of the mounts whose mount point is a proper
// prefix of `dir`, the longest one of device `dev`, else (a btrfs
// subvolume's st_dev differs from its mount's) the longest one. Only mounts
// of this process's mount namespace are seen.
std::vector<MountEntry> MountsUsing(const std::vector<MountEntry>& table,
                                    const std::string& dir, dev_t dev);

// The layer directories an overlay mount names in its super options
// (lowerdir=, upperdir=, workdir=), as the mounter gave them: absolute, or
// relative to the directory the mounter was in (containerd's mount package
// chdirs to the layers' common parent for option strings near a page).
struct OverlayLayers {
  std::vector<std::string> lower_dirs;  // topmost first
  std::string upper_dir;                // empty for a read-only overlay
  std::string work_dir;
};

// Parses the super options of an overlay mount (MountEntry::super_options):
// splits at commas, undoes the kernel's octal escapes in each value, then
// splits lowerdir at ':' (a colon escaped as "\:" belongs to the path;
// "::" before data-only layers and repeated "lowerdir+=" options are
// understood too).
OverlayLayers ParseOverlayLayers(absl::string_view super_options);

// The overlay mounts in `table` that use directory `dir` or anything below
// it as a layer (lower, upper or work directory), in table order. `dir` is
// absolute and lexically normal. Layer paths are compared lexically (after
// removing "." and ".." components and repeated slashes), not resolved: a
// layer named through a symlink or another bind mount of the same directory
// is not recognised. A relative layer is taken relative to `relative_base`
// (an absolute directory, typically where the backend keeps its objects, as
// containerd's mounter makes them relative to their common parent) if
// `owns_relative` is empty or says the mount's relative layers are
// relative to it (the mount table does not say relative to what: another
// root's mount can name the same relative paths); with an empty
// `relative_base` relative layers are ignored. Only mounts of this process's
// mount namespace are seen.
std::vector<MountEntry> OverlayMountsUsing(
    const std::vector<MountEntry>& table, const std::string& dir,
    const std::string& relative_base,
    const std::function<bool(const OverlayLayers&)>& owns_relative = {});

}  // namespace snapledger
