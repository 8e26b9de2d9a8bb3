// The overlayfs backend: every object is one overlay layer, and an object
// made on a parent starts empty — the parent's layers are stacked under it at
// mount time, nothing is copied. The design of containerd's overlayfs
// snapshotter (1.6), whose mounts it returns unchanged.
//
// Layout under `root` (snapshots/ and the parent files are ObjectDir's, in
// plugin/backend/fs/object_dir.h, shared with the other local backend):
//   snapshots/                 mode 0700
//     <id>/                    one whole object; <id> in canonical decimal
//       fs/                    its layer: the upper dir while active
//                              (0755, owned like the parent's fs/); present
//                              for views too, as in containerd, though a
//                              view with a parent never uses it
//       work/                  overlayfs's work dir (0711), active objects
//                              only; kept after Commit, as containerd does
//       parent                 the parent's id in decimal and "\n"; "0\n"
//                              for none (the native backend's format)
//       usage                  "<bytes> <inodes>\n", written at Commit
//     new-XXXXXX/              an object being built (Create)
//     rm-<id>/                 an object being removed (Remove)
// Create builds the object in a new-* directory and renames it to <id>;
// Remove renames <id> to rm-<id> and answers; the tree is deleted in the
// background, or by Cleanup (ObjectDir's "Deferred deletion"), as
// containerd's overlayfs deletes in Cleanup. With
// OverlayBackendOptions::sync, each rename is followed by an fsync of
// snapshots/ and what it renames is flushed first. A crash leaves each
// object whole or absent, plus temporaries that List() ignores and Cleanup()
// sweeps. Anything else in snapshots/ is left alone.
//
// The ancestor chain. An overlay mount names every ancestor's fs/, nearest
// first, but Backend passes only the parent's id. The backend finds the rest
// itself, from the parent files: the chain is a fact of the storage layout,
// which the coordinator need not know, and it cannot change — an object's
// parent is fixed at Create and ids are never reused. Each object's chain is
// cached in memory once learnt (Create learns it; Mounts of an object not yet
// cached reads the parent files up to the first cached ancestor). A chain is
// a linked node per object sharing its parent's node, so the cache costs one
// small node per object, however deep. Remove drops the object's node.
// MountsOfNew uses only the cache and does no I/O: for an object Create made
// in this process (the only case backend.h allows) the chain is there.
//
// Mounts, as containerd 1.6's overlay snapshotter makes them (its option
// order included):
//   - no parent: {"bind", <id>/fs, {"rw", "rbind"}} ({"ro", "rbind"} for a
//     view);
//   - a view with exactly one ancestor: {"bind", <parent>/fs, {"ro",
//     "rbind"}};
//   - otherwise {"overlay", "overlay", options}: "index=off" if
//     /sys/module/overlay/parameters/index exists (at start-up), "userxattr"
//     if needed (see NeedsOverlayUserXattr), then for an active object
//     "workdir=<id>/work" and "upperdir=<id>/fs", then "lowerdir=" the
//     ancestors' fs/ joined by ':' (nearest first), then
//     OverlayBackendOptions::mount_options.
// Paths are absolute (`root` is resolved with realpath(3)). Long lowerdir
// strings are the mounting side's problem, as in containerd (its mount
// package shortens them with relative paths).
//
// Commit measures the upper dir once (fstree::DiskUsage: st_blocks * 512,
// hard links once, plus the inode count), stores it in the usage file and
// returns it; committing again returns the stored value, and DiskUsage of a
// committed object returns it without a walk. DiskUsage of any other object
// walks its fs/. Nothing is removed at Commit. Objects this process created
// and has not committed are known to have no usage file: Commit and
// DiskUsage do not look for one.
//
// Create: an active object cannot be made on a view that has a parent
// (FailedPrecondition, as in the native backend; a view is not a layer).
//
// Remove refuses an object in use (FailedPrecondition,
//   "snapshot object <id> is in use: mounted at <mount point>... (busy)"):
// anything mounted inside <id>/, a bind mount of something in it, and an
// overlay mount that names something in it as a lower, upper or work dir
// (read from the overlay's super options in /proc/self/mountinfo; see
// OverlayMountsUsing). Limits: only this process's mount namespace is seen;
// overlay layers are matched lexically — absolute paths as Mounts() returns
// them, and relative ones taken relative to snapshots/ (what containerd's
// mount package makes when it shortens a long lowerdir); a layer named
// through a symlink or another path is not recognised. An unreadable mount
// table fails Remove with Unavailable before anything is touched.
//
// Errors beyond backend.h's: InvalidArgument for id 0, for creating a
// kCommitted object, for Mounts of kCommitted, and for Mounts with a
// parent_id other than the stored one; FailedPrecondition from MountsOfNew
// when the chain is not cached (a caller breaking its precondition); DataLoss
// for an object whose parent or usage file is missing or malformed, or whose
// ancestors are missing.
//
// Thread-safety: as backend.h requires. The chain cache and the mount table
// cache guard themselves.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "plugin/backend/backend.h"

namespace snapledger {

struct OverlayBackendOptions {
  // Flush to stable storage: new objects' directories and parent files
  // before their rename, snapshots/ after a rename, the filesystem and the
  // usage file at Commit. See NativeBackendOptions::sync for what is left
  // without it.
  bool sync = true;
  // Appended to every overlay mount's options (containerd 1.7's
  // `mount_options`), e.g. "volatile". Not applied to bind mounts.
  std::vector<std::string> mount_options;
  // Skip CheckOverlaySupport at start-up: only for tests that cannot mount.
  bool skip_support_check = false;
};

// Whether `root` can hold the overlayfs backend: (1) its filesystem reports
// file types in directory entries (d_type; overlayfs needs them), and (2) an
// overlay mount with two lower dirs under `root` succeeds (then is
// unmounted). Creates `root` (mode 0700) if missing; leaves nothing else
// behind. Needs CAP_SYS_ADMIN. Errors: FailedPrecondition naming the cause
// and suggesting `backend = "native"`; others for storage failures.
[[nodiscard]] absl::Status CheckOverlaySupport(const std::string& root);

// Whether overlay mounts of layers under `root` need the "userxattr" option,
// decided as containerd's overlayutils.NeedsUserXAttr: never outside a user
// namespace (the initial one maps all of 0..2^32-1); inside one, not on
// tmpfs, yes on kernels 5.11 and later, and otherwise yes if a test mount
// with it succeeds.
[[nodiscard]] absl::StatusOr<bool> NeedsOverlayUserXattr(
    const std::string& root);

// Opens (creating if needed, mode 0700) the overlayfs backend at `root`.
// Runs CheckOverlaySupport first (unless options.skip_support_check) and
// fails with its error: there is no silent fallback to another backend.
[[nodiscard]] absl::StatusOr<std::unique_ptr<Backend>> NewOverlayBackend(
    const std::string& root, const OverlayBackendOptions& options = {});

}  // namespace snapledger
