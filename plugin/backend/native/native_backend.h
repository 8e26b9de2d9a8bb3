// The native backend: every object is a plain directory tree, and an active
// object made on a parent starts as a full copy of the parent's tree — the
// design of containerd's native snapshotter. It works on any filesystem, at
// the price of a copy per layer.
//
// Layout under `root` (snapshots/ and the parent files are ObjectDir's, in
// plugin/backend/fs/object_dir.h, shared with the other local backend):
//   snapshots/                 mode 0700
//     <id>/                    one whole object; <id> in canonical decimal
//       fs/                    its tree (absent for a view with a parent)
//       parent                 the parent's id in decimal and "\n"; "0\n"
//                              for none
//     new-XXXXXX/              an object being built (Create)
//     rm-<id>/                 an object being removed (Remove)
// Create builds the whole object in a new-* directory, syncs it (syncfs(2)
// after a copy; fsync otherwise), renames it to <id> and syncs snapshots/;
// Remove renames <id> to rm-<id>, syncs snapshots/ and answers; the tree is
// deleted in the background, or by Cleanup (ObjectDir's "Deferred
// deletion"). The syncs only with NativeBackendOptions::sync.
// A crash therefore leaves each object whole or absent, plus temporaries
// that List() ignores and Cleanup() sweeps. Anything else in snapshots/ is
// left alone (and List() warns about it).
//
// Mounts are containerd native's: one "bind" mount with options
// {"rbind", "rw"} of <id>/fs for an active object, {"rbind", "ro"} for a
// view (of the parent's fs/ when it has a parent, else of its own empty fs/).
//
// Commit has nothing to freeze: it syncs the filesystem (so that what the
// client wrote is durable before the ledger calls it committed) and returns
// the tree's usage (see fstree::DiskUsage). A view with a parent owns no
// storage: its usage is zero. An active object cannot be created on a view
// that has a parent (it has no tree to copy): FailedPrecondition.
//
// Remove refuses an object in use as a mount. A bind mount of <id>/fs (what
// a container's rootfs is here) makes neither rename(2) nor rmdir(2) fail:
// deleting would pull the files from under the container. So Remove first
// consults this process's mount table (/proc/self/mountinfo, read again only
// when the kernel reports a mount change since the last read: see
// MountTableCache) and touches nothing, failing with FailedPrecondition
//   "snapshot object <id> is in use: mounted at <mount point>[, <mount
//   point>][ and <n> more] (busy)"
// when a mount's source lies in <id>/ (a mount of that filesystem whose root
// is there) or a mount point lies in it (see MountsUsing in mount_table.h);
// likewise, naming it, when the rm-<id> leftover of an earlier removal is
// in use; and when the rename fails with EBUSY ("... (busy)" too). Only
// mounts of the daemon's mount namespace are seen, and one made between the
// check and the rename is not: callers must not hand out an object's mounts
// while removing it. An unreadable mount table fails the call with
// Unavailable, before anything is touched.
//
// Errors beyond backend.h's: InvalidArgument for id 0, for creating a
// kCommitted object and for Mounts of kCommitted; DataLoss for an object
// whose parent file is missing or malformed, or whose <id> entry is not a
// directory; FailedPrecondition (busy) and Unavailable from Remove, above.
//
// Thread-safety: as backend.h requires; the only mutable state is the
// cached mount table, which guards itself.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "plugin/backend/backend.h"

namespace snapledger {

struct NativeBackendOptions {
  // Flush to stable storage: copied trees and parent files before their
  // rename, snapshots/ after a rename, and the filesystem at Commit. Makes
  // objects whole and committed layers durable across a power loss. Off,
  // a kill -9 still leaves every object whole or absent (renames are atomic
  // and the page cache survives the process) — the guarantee containerd's
  // own native snapshotter gives, which never flushes.
  bool sync = true;
};

// Opens (creating if needed, mode 0700) the native backend at `root`.
// Mount sources are absolute: `root` is resolved with realpath(3).
[[nodiscard]] absl::StatusOr<std::unique_ptr<Backend>> NewNativeBackend(
    const std::string& root, const NativeBackendOptions& options = {});

}  // namespace snapledger
