// Filesystem helpers for backends that keep snapshots as plain directory
// trees: copy a tree faithfully, remove one, measure one; and the small
// file and directory operations their object layout is made of.
//
// All walking is fd-relative (openat/fstatat/unlinkat): no path is ever
// handed to the kernel whole, so depth is not limited by PATH_MAX, and
// symlinks inside a tree are never followed. Depth is limited by the
// process's open-file limit instead (two descriptors per level).
//
// Errors name the path involved and the errno text; the status code follows
// errno (NotFound for ENOENT, PermissionDenied for EACCES/EPERM, ...).
//
// Thread-safety: the functions keep no shared state; concurrent calls on
// disjoint trees are safe. None of them is safe against another process
// changing the same tree meanwhile (the result is then unspecified, never a
// write outside the tree).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "plugin/backend/backend.h"

namespace snapledger::fstree {

// CopyTree, RemoveTree and DiskUsage refuse (FailedPrecondition) to walk a
// tree deeper than this many directory levels: they recurse once per level,
// and the trees they walk are made by untrusted containers.
inline constexpr int kMaxTreeDepth = 2048;

// Owns a file descriptor; closes it on destruction. Move-only.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Gives up ownership without closing.
  int release() { return std::exchange(fd_, -1); }
  // Closes the owned descriptor (if any) and takes `fd`.
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// Copies the directory tree `src_dir` to `dst_dir`, which must not exist (its
// parent must). What a container layer copy needs, preserved exactly:
//   - regular files (contents via copy_file_range, falling back to
//     pread/pwrite; holes found with SEEK_DATA/SEEK_HOLE stay holes),
//     directories, symlinks (copied as links, never followed, dangling or
//     absolute ones included), block and character devices, fifos and
//     sockets (mknod);
//   - hard links among the tree's entries, as hard links (by st_dev/st_ino);
//   - owner and group (lchown), mode including setuid/setgid/sticky,
//     extended attributes, access and modification times to the nanosecond
//     (directories' times are set after their contents).
// `src_dir` itself must be a directory, not a symlink to one; `dst_dir` gets
// its metadata too. Failing to read or write an extended attribute is an
// error, except in the "security." namespace (e.g. SELinux labels that the
// destination refuses), which is logged at debug level and skipped.
// Owner changes need CAP_CHOWN unless the owner is the caller; device nodes
// need CAP_MKNOD.
// Nothing is synced: callers that need the copy durable sync it afterwards
// (syncfs(2) covers a whole tree in one call).
// On error nothing is left at `dst_dir` (removed best effort).
[[nodiscard]] absl::Status CopyTree(const std::string& src_dir,
                                    const std::string& dst_dir);

// Removes `path` and everything below it, like `rm -rf`: a missing `path` is
// success; a non-directory is simply unlinked. Symlinks are removed, never
// followed. Directories without write or search permission for the caller
// are chmod-ed so that their contents can go. Mount points below `path` are
// not crossed: each one makes the call fail with FailedPrecondition (after
// removing everything else it can), so a forgotten bind mount never costs
// the data of the filesystem mounted there.
[[nodiscard]] absl::Status RemoveTree(const std::string& path);

// Disk usage of the tree at directory `dir`, the rule containerd's
// continuity/fs.DiskUsage uses: every inode reached from `dir` (itself
// included) without following symlinks is counted once, by (st_dev, st_ino);
// size_bytes is the sum of st_blocks * 512 over those inodes (allocated space:
// holes do not count, a hard-linked file counts once), inodes is their number.
// Mount points below `dir` are neither counted nor descended into: what is
// mounted there is not the tree's storage. Entries that vanish during the
// walk are skipped.
[[nodiscard]] absl::StatusOr<Usage> DiskUsage(const std::string& dir);

// The names in directory `dir` (not "." or ".."), in no particular order.
[[nodiscard]] absl::StatusOr<std::vector<std::string>> ListDir(
    const std::string& dir);

// The names of the directories in directory `dir` (not followed; not "." or
// ".."), in no particular order: by the entries' d_type, with an fstatat
// only where the filesystem does not say.
[[nodiscard]] absl::StatusOr<std::vector<std::string>> ListSubdirs(
    const std::string& dir);

// The error for a system call `op` that failed with `err` on `path`: the
// code follows errno, the message is "<op> <path>: <strerror>".
[[nodiscard]] absl::Status ErrnoError(int err, absl::string_view op,
                                      absl::string_view path);

// Writes all of `data` to `fd` (retrying short writes and EINTR). Errors name
// `path`.
[[nodiscard]] absl::Status WriteAll(int fd, absl::string_view data,
                                    const std::string& path);

// Reads up to `limit` bytes of file `name` under `dir_fd` (AT_FDCWD: `name`
// is a path), not following a final symlink. A missing file is nullopt;
// other failures are errors naming `path`.
[[nodiscard]] absl::StatusOr<std::optional<std::string>> ReadSmallFile(
    int dir_fd, const std::string& name, const std::string& path, size_t limit);

// Creates directory `path` and missing ancestors with `mode` (existing ones
// are left as they are). A non-directory in the way is ENOTDIR.
[[nodiscard]] absl::Status MakeDirs(const std::string& path, mode_t mode);

// Who owns a directory MakeDirAt makes.
struct DirOwner {
  uid_t uid = 0;
  gid_t gid = 0;
};

// Makes directory `name` under `dir_fd` with exactly `mode` (permission bits,
// <= 07777), whatever the umask: mkdirat(2) with `mode`, then a look at the
// new directory, and a chmod only if the umask (or a default ACL, or a
// setgid parent) made it differ — not assumed from a umask read earlier,
// since a thread may change the umask meanwhile (the daemon does, briefly,
// while it creates its sockets). With `owner`, chowns it first. With
// `flush`, fsyncs it last (through the descriptor opened for the look, so
// no FsyncAt is needed). Errors name `path`.
[[nodiscard]] absl::Status MakeDirAt(
    int dir_fd, const char* name, mode_t mode, const std::string& path,
    bool flush = false, const std::optional<DirOwner>& owner = std::nullopt);

// Flushes directory `name` under `dir_fd` (fsync(2)). Errors name `path`.
[[nodiscard]] absl::Status FsyncAt(int dir_fd, const char* name,
                                   const std::string& path);

}  // namespace snapledger::fstree
