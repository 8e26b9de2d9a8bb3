#include "plugin/backend/native/native_backend.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "plugin/backend/fs/fs_tree.h"
#include "plugin/backend/fs/mount_table.h"
#include "plugin/backend/fs/object_dir.h"

namespace snapledger {
namespace {

using fstree::ErrnoError;
using fstree::UniqueFd;

constexpr char kTreeDir[] = "fs";

class NativeBackend final : public Backend {
 public:
  NativeBackend(std::unique_ptr<ObjectDir> objects,
                NativeBackendOptions options)
      : objects_(std::move(objects)), options_(options) {}

  std::string_view Name() const override { return "native"; }

  absl::Status Create(uint64_t id, uint64_t parent_id,
                      SnapshotKind kind) override {
    if (absl::Status s = objects_->CheckCreate(id, parent_id, kind); !s.ok()) {
      return s;
    }
    const bool copy_parent = parent_id != 0 && kind == SnapshotKind::kActive;
    const bool own_tree = parent_id == 0 || kind == SnapshotKind::kActive;
    if (copy_parent) {
      absl::StatusOr<bool> has_tree = HasTree(parent_id);
      if (!has_tree.ok()) return has_tree.status();
      if (!*has_tree) {
        return absl::FailedPreconditionError(absl::StrCat(
            "parent snapshot object ", parent_id,
            " is a view of another object and has no tree to copy"));
      }
    }

    absl::StatusOr<ObjectDir::NewObject> temp = objects_->Begin();
    if (!temp.ok()) return temp.status();
    const std::string tree_path = temp->PathOf(kTreeDir);
    if (copy_parent) {
      absl::Status s = fstree::CopyTree(TreePath(parent_id), tree_path);
      if (!s.ok()) return s;
    } else if (own_tree) {
      // Flushed here with `sync`.
      if (absl::Status s = fstree::MakeDirAt(temp->fd(), kTreeDir, 0755,
                                             tree_path, options_.sync);
          !s.ok()) {
        return s;
      }
    }
    // Without `sync` nothing is flushed: the rename alone makes the object
    // whole or absent for anything short of a power loss.
    if (options_.sync && copy_parent) {
      // One call makes the whole copied tree durable, where an fsync per
      // file and directory would cost one each.
      if (::syncfs(temp->fd()) != 0) {
        return ErrnoError(errno, "syncfs", temp->path());
      }
    }
    return objects_->Place(*std::move(temp), id, parent_id);
  }

  absl::StatusOr<Usage> Commit(uint64_t id) override {
    if (absl::Status s = objects_->CheckExists(id); !s.ok()) return s;
    UniqueFd tree(OpenTree(id));
    if (!tree.valid()) {
      if (errno == ENOENT) return Usage{};  // a view with a parent
      return ErrnoError(errno, "open", TreePath(id));
    }
    if (options_.sync && ::syncfs(tree.get()) != 0) {
      return ErrnoError(errno, "syncfs", TreePath(id));
    }
    return fstree::DiskUsage(TreePath(id));
  }

  // A bind mount of the tree (a container's rootfs) is what can use it.
  absl::Status Remove(uint64_t id) override {
    return objects_->Remove(id, MountsUsing);
  }

  absl::StatusOr<std::vector<Mount>> Mounts(uint64_t id, uint64_t parent_id,
                                            SnapshotKind kind) override {
    if (absl::Status s = CheckMountable(id, kind); !s.ok()) return s;
    if (absl::Status s = objects_->CheckExists(id); !s.ok()) return s;
    return MountsOfNew(id, parent_id, kind);
  }

  // The bind mount follows from the ids: no storage is touched.
  absl::StatusOr<std::vector<Mount>> MountsOfNew(uint64_t id,
                                                 uint64_t parent_id,
                                                 SnapshotKind kind) override {
    if (absl::Status s = CheckMountable(id, kind); !s.ok()) return s;
    const bool view = kind == SnapshotKind::kView;
    Mount mount;
    mount.type = "bind";
    mount.source = TreePath(view && parent_id != 0 ? parent_id : id);
    mount.options = {"rbind", view ? "ro" : "rw"};
    return std::vector<Mount>{std::move(mount)};
  }

  absl::StatusOr<Usage> DiskUsage(uint64_t id) override {
    if (absl::Status s = objects_->CheckExists(id); !s.ok()) return s;
    absl::StatusOr<bool> has_tree = HasTree(id);
    if (!has_tree.ok()) return has_tree.status();
    if (!*has_tree) return Usage{};
    return fstree::DiskUsage(TreePath(id));
  }

  absl::StatusOr<bool> Exists(uint64_t id) override {
    return objects_->Exists(id);
  }

  absl::StatusOr<std::vector<uint64_t>> ListIds() override {
    return objects_->ListIds();
  }
  absl::StatusOr<std::vector<BackendObject>> List() override {
    return objects_->List();
  }

  absl::Status Cleanup() override { return objects_->Cleanup(); }

 private:
  std::string TreePath(uint64_t id) const {
    return objects_->PathIn(id, kTreeDir);
  }

  // Opens object `id`'s tree; invalid with errno set on failure.
  UniqueFd OpenTree(uint64_t id) const {
    return UniqueFd(::openat(objects_->fd(),
                             absl::StrCat(id, "/", kTreeDir).c_str(),
                             O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  }

  // Whether existing object `id` has a tree of its own (all but views with
  // a parent do).
  absl::StatusOr<bool> HasTree(uint64_t id) const {
    UniqueFd tree = OpenTree(id);
    if (tree.valid()) return true;
    if (errno == ENOENT) return false;
    return ErrnoError(errno, "open", TreePath(id));
  }

  const std::unique_ptr<ObjectDir> objects_;
  const NativeBackendOptions options_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> NewNativeBackend(
    const std::string& root, const NativeBackendOptions& options) {
  absl::StatusOr<std::unique_ptr<ObjectDir>> objects =
      ObjectDir::Open(root, "native", options.sync);
  if (!objects.ok()) return objects.status();
  return std::make_unique<NativeBackend>(*std::move(objects), options);
}

}  // namespace snapledger
