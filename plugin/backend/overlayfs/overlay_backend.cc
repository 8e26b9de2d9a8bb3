#include "plugin/backend/overlayfs/overlay_backend.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "plugin/backend/fs/fs_tree.h"
#include "plugin/backend/fs/mount_table.h"
#include "plugin/backend/fs/object_dir.h"
#include "spdlog/spdlog.h"

namespace snapledger {
namespace {

using fstree::ErrnoError;
using fstree::UniqueFd;

constexpr char kTreeDir[] = "fs";
constexpr char kWorkDir[] = "work";
constexpr char kUsageFile[] = "usage";
constexpr char kUsageTempFile[] = "usage.new";
constexpr char kIndexParameter[] = "/sys/module/overlay/parameters/index";
constexpr char kUseNative[] = "use backend = \"native\" instead";
constexpr long kTmpfsMagic = 0x01021994;

// Removes the leftovers of start-up checks that a crash interrupted.
void RemoveCheckLeftovers(const std::string& root, absl::string_view prefix) {
  absl::StatusOr<std::vector<std::string>> names = fstree::ListDir(root);
  if (!names.ok()) return;
  for (const std::string& name : *names) {
    if (!absl::StartsWith(name, prefix)) continue;
    if (absl::Status s = fstree::RemoveTree(absl::StrCat(root, "/", name));
        !s.ok()) {
      spdlog::warn("overlayfs: cannot remove {}/{}: {}", root, name,
                   s.ToString());
    }
  }
}

// A new directory `<parent>/<prefix>XXXXXX`, removed (best effort) when the
// object goes.
class ScratchDir {
 public:
  static absl::StatusOr<std::unique_ptr<ScratchDir>> Make(
      const std::string& parent, absl::string_view prefix) {
    std::string path = absl::StrCat(parent, "/", prefix, "XXXXXX");
    if (::mkdtemp(path.data()) == nullptr) {
      return ErrnoError(errno, "mkdtemp", path);
    }
    return std::unique_ptr<ScratchDir>(new ScratchDir(std::move(path)));
  }
  ~ScratchDir() {
    if (absl::Status s = fstree::RemoveTree(path_); !s.ok()) {
      spdlog::warn("overlayfs: cannot remove {}: {}", path_, s.ToString());
    }
  }
  const std::string& path() const { return path_; }

 private:
  explicit ScratchDir(std::string path) : path_(std::move(path)) {}
  const std::string path_;
};

// Mounts an overlay of two lower dirs (plus `extra_option`, if any) in a
// scratch directory under `dir`, and unmounts it. Returns the mount's
// errno as a status on failure.
absl::Status TryOverlayMount(const std::string& dir,
                             absl::string_view extra_option) {
  absl::StatusOr<std::unique_ptr<ScratchDir>> scratch =
      ScratchDir::Make(dir, "overlay-check-");
  if (!scratch.ok()) return scratch.status();
  const std::string& td = (*scratch)->path();
  for (const char* name : {"lower1", "lower2", "upper", "work", "merged"}) {
    const std::string path = absl::StrCat(td, "/", name);
    if (::mkdir(path.c_str(), 0755) != 0) {
      return ErrnoError(errno, "mkdir", path);
    }
  }
  std::string data =
      absl::StrCat("lowerdir=", td, "/lower2:", td, "/lower1", ",upperdir=", td,
                   "/upper", ",workdir=", td, "/work");
  if (!extra_option.empty()) absl::StrAppend(&data, ",", extra_option);
  const std::string merged = absl::StrCat(td, "/merged");
  if (::mount("overlay", merged.c_str(), "overlay", 0, data.c_str()) != 0) {
    return ErrnoError(errno, "mount overlay on", merged);
  }
  if (::umount2(merged.c_str(), 0) != 0) {
    spdlog::warn("overlayfs: cannot unmount {}: {}", merged, ::strerror(errno));
    ::umount2(merged.c_str(), MNT_DETACH);
  }
  return absl::OkStatus();
}

// Whether the filesystem holding `dir` fills in d_type: a scratch directory
// holding a file and a directory is read back.
absl::StatusOr<bool> SupportsDType(const std::string& dir) {
  absl::StatusOr<std::unique_ptr<ScratchDir>> scratch =
      ScratchDir::Make(dir, "dtype-check-");
  if (!scratch.ok()) return scratch.status();
  const std::string& td = (*scratch)->path();
  const std::string file = absl::StrCat(td, "/file");
  UniqueFd fd(
      ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd.valid()) return ErrnoError(errno, "create", file);
  fd.reset();
  const std::string sub = absl::StrCat(td, "/dir");
  if (::mkdir(sub.c_str(), 0700) != 0) return ErrnoError(errno, "mkdir", sub);
  DIR* d = ::opendir(td.c_str());
  if (d == nullptr) return ErrnoError(errno, "opendir", td);
  absl::Cleanup close_dir = [d] { ::closedir(d); };
  int seen = 0;
  errno = 0;
  while (struct dirent* e = ::readdir(d)) {
    const std::string_view name = e->d_name;
    if (name != "file" && name != "dir") continue;
    if (e->d_type == DT_UNKNOWN) return false;
    ++seen;
  }
  if (errno != 0) return ErrnoError(errno, "readdir", td);
  if (seen != 2) {
    return absl::InternalError(
        absl::StrCat("readdir ", td, ": the entries just made are missing"));
  }
  return true;
}

bool RunningInUserNamespace() {
  absl::StatusOr<std::optional<std::string>> map = fstree::ReadSmallFile(
      AT_FDCWD, "/proc/self/uid_map", "/proc/self/uid_map", 4096);
  if (!map.ok() || !map->has_value()) return false;
  // The initial namespace maps all of 0..2^32-1 onto itself, in one line.
  std::vector<absl::string_view> fields =
      absl::StrSplit(**map, absl::ByAnyChar(" \n"), absl::SkipEmpty());
  return !(fields.size() == 3 && fields[0] == "0" && fields[1] == "0" &&
           fields[2] == "4294967295");
}

// Whether the running kernel is at least `major`.`minor`.
bool KernelAtLeast(int major, int minor) {
  struct utsname u;
  if (::uname(&u) != 0) return false;
  std::vector<absl::string_view> parts =
      absl::StrSplit(absl::string_view(u.release), absl::MaxSplits('.', 2));
  int have_major = 0, have_minor = 0;
  if (parts.size() < 2 || !absl::SimpleAtoi(parts[0], &have_major)) {
    return false;
  }
  absl::string_view minor_text = parts[1];
  size_t digits = 0;
  while (digits < minor_text.size() && minor_text[digits] >= '0' &&
         minor_text[digits] <= '9') {
    ++digits;
  }
  if (!absl::SimpleAtoi(minor_text.substr(0, digits), &have_minor)) {
    return false;
  }
  return have_major > major || (have_major == major && have_minor >= minor);
}

// One object's place in its ancestor chain: its parent's node, shared with
// every sibling, down to an object without a parent.
struct ChainNode {
  uint64_t id = 0;
  std::shared_ptr<const ChainNode> parent;  // null: no parent
};

class OverlayBackend final : public Backend {
 public:
  OverlayBackend(std::unique_ptr<ObjectDir> objects,
                 OverlayBackendOptions options, bool index_off, bool userxattr)
      : objects_(std::move(objects)),
        options_(std::move(options)),
        index_off_(index_off),
        userxattr_(userxattr) {}

  std::string_view Name() const override { return "overlayfs"; }

  absl::Status Create(uint64_t id, uint64_t parent_id,
                      SnapshotKind kind) override {
    if (absl::Status s = objects_->CheckCreate(id, parent_id, kind); !s.ok()) {
      return s;
    }
    std::shared_ptr<const ChainNode> parent;
    struct stat parent_tree;
    if (parent_id != 0) {
      absl::StatusOr<std::shared_ptr<const ChainNode>> chain =
          LoadChain(parent_id);
      if (!chain.ok()) return chain.status();
      parent = *std::move(chain);
      if (kind == SnapshotKind::kActive && parent->parent != nullptr) {
        absl::StatusOr<bool> is_view = IsView(parent_id);
        if (!is_view.ok()) return is_view.status();
        if (*is_view) {
          return absl::FailedPreconditionError(absl::StrCat(
              "parent snapshot object ", parent_id,
              " is a view of another object and is no layer to build on"));
        }
      }
      if (::fstatat(objects_->fd(),
                    absl::StrCat(parent_id, "/", kTreeDir).c_str(),
                    &parent_tree, AT_SYMLINK_NOFOLLOW) != 0) {
        return ErrnoError(errno, "stat", TreePath(parent_id));
      }
    }

    absl::StatusOr<ObjectDir::NewObject> temp = objects_->Begin();
    if (!temp.ok()) return temp.status();
    // Each made with its final mode (a chmod only if the umask took bits
    // away) and, with `sync`, flushed. The upper dir's owner is what the
    // merged root shows: the parent's.
    std::optional<fstree::DirOwner> owner;
    if (parent != nullptr) {
      owner = fstree::DirOwner{parent_tree.st_uid, parent_tree.st_gid};
    }
    if (absl::Status s =
            fstree::MakeDirAt(temp->fd(), kTreeDir, 0755,
                              temp->PathOf(kTreeDir), options_.sync, owner);
        !s.ok()) {
      return s;
    }
    const bool active = kind == SnapshotKind::kActive;
    if (active) {
      if (absl::Status s =
              fstree::MakeDirAt(temp->fd(), kWorkDir, 0711,
                                temp->PathOf(kWorkDir), options_.sync);
          !s.ok()) {
        return s;
      }
    }
    if (absl::Status s = objects_->Place(*std::move(temp), id, parent_id);
        !s.ok()) {
      return s;
    }
    Remember(std::make_shared<const ChainNode>(ChainNode{id, parent}));
    SetUncommitted(id, true);
    return absl::OkStatus();
  }

  absl::StatusOr<Usage> Commit(uint64_t id) override {
    if (absl::Status s = objects_->CheckExists(id); !s.ok()) return s;
    // An object this process made and has not committed has no usage file
    // to look for.
    if (!IsUncommitted(id)) {
      absl::StatusOr<std::optional<Usage>> stored = ReadUsageFile(id);
      if (!stored.ok()) return stored.status();
      if (stored->has_value()) return **stored;  // committed already
    }

    UniqueFd tree(::openat(objects_->fd(),
                           absl::StrCat(id, "/", kTreeDir).c_str(),
                           O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!tree.valid()) return ErrnoError(errno, "open", TreePath(id));
    if (options_.sync && ::syncfs(tree.get()) != 0) {
      return ErrnoError(errno, "syncfs", TreePath(id));
    }
    absl::StatusOr<Usage> usage = fstree::DiskUsage(TreePath(id));
    if (!usage.ok()) return usage.status();
    if (absl::Status s = WriteUsageFile(id, *usage); !s.ok()) return s;
    SetUncommitted(id, false);
    return *usage;
  }

  // Neither a bind mount of the layer nor an overlay stacking it makes the
  // rename or the deletion fail: ObjectDir asks the mount table, with Users.
  absl::Status Remove(uint64_t id) override {
    absl::Status s = objects_->Remove(
        id, [this](const std::vector<MountEntry>& table, const std::string& dir,
                   dev_t dev) { return Users(table, dir, dev); });
    if (s.ok()) {
      Forget(id);
      SetUncommitted(id, false);
    }
    return s;
  }

  absl::StatusOr<std::vector<Mount>> Mounts(uint64_t id, uint64_t parent_id,
                                            SnapshotKind kind) override {
    if (absl::Status s = CheckMountable(id, kind); !s.ok()) return s;
    if (absl::Status s = objects_->CheckExists(id); !s.ok()) return s;
    absl::StatusOr<std::shared_ptr<const ChainNode>> node = LoadChain(id);
    if (!node.ok()) return node.status();
    return MountsOf(**node, parent_id, kind);
  }

  // From the cached chain only: no I/O.
  absl::StatusOr<std::vector<Mount>> MountsOfNew(uint64_t id,
                                                 uint64_t parent_id,
                                                 SnapshotKind kind) override {
    if (absl::Status s = CheckMountable(id, kind); !s.ok()) return s;
    std::shared_ptr<const ChainNode> node = Cached(id);
    if (node == nullptr) {
      std::shared_ptr<const ChainNode> parent;
      if (parent_id != 0) {
        parent = Cached(parent_id);
        if (parent == nullptr) {
          return absl::FailedPreconditionError(absl::StrCat(
              "snapshot object ", id, ": the ancestors of parent ", parent_id,
              " are not known without reading storage; use Mounts"));
        }
      }
      node = std::make_shared<const ChainNode>(ChainNode{id, parent});
    }
    return MountsOf(*node, parent_id, kind);
  }

  absl::StatusOr<Usage> DiskUsage(uint64_t id) override {
    if (absl::Status s = objects_->CheckExists(id); !s.ok()) return s;
    if (!IsUncommitted(id)) {
      absl::StatusOr<std::optional<Usage>> stored = ReadUsageFile(id);
      if (!stored.ok()) return stored.status();
      if (stored->has_value()) return **stored;
    }
    return fstree::DiskUsage(TreePath(id));
  }

  absl::StatusOr<bool> Exists(uint64_t id) override {
    return objects_->Exists(id);
  }

  absl::StatusOr<std::vector<BackendObject>> List() override {
    return objects_->List();
  }
  absl::StatusOr<std::vector<uint64_t>> ListIds() override {
    return objects_->ListIds();
  }

  absl::Status Cleanup() override { return objects_->Cleanup(); }

 private:
  std::string ObjectPath(uint64_t id) const { return objects_->ObjectPath(id); }
  std::string TreePath(uint64_t id) const {
    return objects_->PathIn(id, kTreeDir);
  }
  std::string WorkPath(uint64_t id) const {
    return objects_->PathIn(id, kWorkDir);
  }

  // The mounts of the object at `node`, in containerd 1.6's shapes and
  // option order (see the header).
  absl::StatusOr<std::vector<Mount>> MountsOf(const ChainNode& node,
                                              uint64_t parent_id,
                                              SnapshotKind kind) const {
    const uint64_t stored_parent = node.parent ? node.parent->id : 0;
    if (stored_parent != parent_id) {
      return absl::InvalidArgumentError(
          absl::StrCat("snapshot object ", node.id, " has parent ",
                       stored_parent, ", not ", parent_id));
    }
    const bool view = kind == SnapshotKind::kView;
    std::vector<std::string> lower_dirs;
    for (const ChainNode* p = node.parent.get(); p != nullptr;
         p = p->parent.get()) {
      lower_dirs.push_back(TreePath(p->id));
    }
    Mount mount;
    if (lower_dirs.empty()) {
      mount.type = "bind";
      mount.source = TreePath(node.id);
      mount.options = {view ? "ro" : "rw", "rbind"};
      return std::vector<Mount>{std::move(mount)};
    }
    if (view && lower_dirs.size() == 1) {
      mount.type = "bind";
      mount.source = std::move(lower_dirs.front());
      mount.options = {"ro", "rbind"};
      return std::vector<Mount>{std::move(mount)};
    }
    mount.type = "overlay";
    mount.source = "overlay";
    if (index_off_) mount.options.push_back("index=off");
    if (userxattr_) mount.options.push_back("userxattr");
    if (!view) {
      mount.options.push_back(absl::StrCat("workdir=", WorkPath(node.id)));
      mount.options.push_back(absl::StrCat("upperdir=", TreePath(node.id)));
    }
    mount.options.push_back(
        absl::StrCat("lowerdir=", absl::StrJoin(lower_dirs, ":")));
    mount.options.insert(mount.options.end(), options_.mount_options.begin(),
                         options_.mount_options.end());
    return std::vector<Mount>{std::move(mount)};
  }

  std::shared_ptr<const ChainNode> Cached(uint64_t id) const {
    absl::MutexLock l(&mu_);
    auto it = chains_.find(id);
    return it == chains_.end() ? nullptr : it->second;
  }

  // Caches `node`, unless a node for its id is there already; returns the
  // cached one.
  std::shared_ptr<const ChainNode> Remember(
      std::shared_ptr<const ChainNode> node) {
    absl::MutexLock l(&mu_);
    return chains_.emplace(node->id, std::move(node)).first->second;
  }

  void Forget(uint64_t id) {
    absl::MutexLock l(&mu_);
    chains_.erase(id);
  }

  // Whether object `id` is known to have no usage file: made by this
  // process and not committed since.
  bool IsUncommitted(uint64_t id) const {
    absl::MutexLock l(&mu_);
    return uncommitted_.contains(id);
  }

  void SetUncommitted(uint64_t id, bool uncommitted) {
    absl::MutexLock l(&mu_);
    if (uncommitted) {
      uncommitted_.insert(id);
    } else {
      uncommitted_.erase(id);
    }
  }

  // The chain node of existing object `id`: from the cache, else from the
  // parent files up to the first cached ancestor (caching each node made).
  absl::StatusOr<std::shared_ptr<const ChainNode>> LoadChain(uint64_t id) {
    std::vector<uint64_t> unknown;  // nearest first
    std::unordered_set<uint64_t> seen;
    std::shared_ptr<const ChainNode> known;
    for (uint64_t cur = id; cur != 0;) {
      known = Cached(cur);
      if (known != nullptr) break;
      if (!seen.insert(cur).second) {
        return absl::DataLossError(absl::StrCat("snapshot object ", id,
                                                " is damaged: its ancestor ",
                                                cur, " is its own ancestor"));
      }
      if (cur != id) {
        absl::StatusOr<bool> exists = Exists(cur);
        if (!exists.ok()) return exists.status();
        if (!*exists) {
          return absl::DataLossError(absl::StrCat(
              "snapshot object ", id, ": its ancestor ", cur, " is missing"));
        }
      }
      absl::StatusOr<uint64_t> parent = objects_->ReadParent(cur);
      if (!parent.ok()) return parent.status();
      unknown.push_back(cur);
      cur = *parent;
    }
    for (auto it = unknown.rbegin(); it != unknown.rend(); ++it) {
      known = Remember(
          std::make_shared<const ChainNode>(ChainNode{*it, std::move(known)}));
    }
    return known;
  }

  // Whether existing object `id` was created as a view (it has no work dir).
  absl::StatusOr<bool> IsView(uint64_t id) const {
    struct stat st;
    if (::fstatat(objects_->fd(), absl::StrCat(id, "/", kWorkDir).c_str(), &st,
                  AT_SYMLINK_NOFOLLOW) == 0) {
      return false;
    }
    if (errno == ENOENT) return true;
    return ErrnoError(errno, "stat", WorkPath(id));
  }

  // The mounts using `dir`, in table order: MountsUsing's, then overlays
  // stacking a layer in it.
  std::vector<MountEntry> Users(const std::vector<MountEntry>& table,
                                const std::string& dir, dev_t dev) {
    std::vector<MountEntry> users = MountsUsing(table, dir, dev);
    for (MountEntry& e : OverlayMountsUsing(table, dir, objects_->path(),
                                            [this](const OverlayLayers& l) {
                                              return OwnsRelativeLayers(l);
                                            })) {
      const bool listed = std::any_of(
          users.begin(), users.end(),
          [&](const MountEntry& u) { return u.mount_id == e.mount_id; });
      if (!listed) users.push_back(std::move(e));
    }
    std::stable_sort(users.begin(), users.end(),
                     [&table](const MountEntry& a, const MountEntry& b) {
                       return Position(table, a) < Position(table, b);
                     });
    return users;
  }

  // Whether the relative layers of overlay mount `l` are this backend's
  // objects. containerd's mounter writes lowerdirs relative to their common
  // parent when the option string would be too long, and the kernel shows
  // them as written: the mount table does not say relative to what, and
  // containerd's own overlayfs snapshotter (or another snapledger root)
  // names its layers "<id>/fs" too. So a mount is ours when its upper or
  // work dir (always absolute) lies in snapshots/; without either (a
  // read-only view), when its lowerdirs are exactly the ancestor chain of
  // the first, nearest first down to the base, as we hand them out. Another
  // root's mount would need the same ids linked the same way all the way
  // down.
  bool OwnsRelativeLayers(const OverlayLayers& l) {
    const std::string ours = absl::StrCat(objects_->path(), "/");
    for (const std::string* d : {&l.upper_dir, &l.work_dir}) {
      if (!d->empty() && d->front() == '/') {
        return absl::StartsWith(*d, ours);
      }
    }
    std::vector<uint64_t> ids;
    for (const std::string& lower : l.lower_dirs) {
      if (!lower.empty() && lower.front() == '/') {
        if (absl::StartsWith(lower, ours)) return true;
        continue;
      }
      absl::string_view id_text = lower;
      uint64_t id = 0;
      if (!absl::ConsumeSuffix(&id_text, "/fs") ||
          !absl::SimpleAtoi(id_text, &id) || id == 0) {
        return false;
      }
      ids.push_back(id);
    }
    if (ids.empty()) return false;
    absl::StatusOr<bool> exists = Exists(ids.front());
    if (!exists.ok() || !*exists) return false;
    absl::StatusOr<std::shared_ptr<const ChainNode>> chain =
        LoadChain(ids.front());
    if (!chain.ok()) return false;
    const ChainNode* node = chain->get();
    for (uint64_t id : ids) {
      if (node == nullptr || node->id != id) return false;
      node = node->parent.get();
    }
    return node == nullptr;
  }

  static size_t Position(const std::vector<MountEntry>& table,
                         const MountEntry& e) {
    for (size_t i = 0; i < table.size(); ++i) {
      if (table[i].mount_id == e.mount_id) return i;
    }
    return table.size();
  }

  // The usage stored at Commit; nullopt if not committed.
  absl::StatusOr<std::optional<Usage>> ReadUsageFile(uint64_t id) const {
    const std::string path = absl::StrCat(ObjectPath(id), "/", kUsageFile);
    absl::StatusOr<std::optional<std::string>> text = fstree::ReadSmallFile(
        objects_->fd(), absl::StrCat(id, "/", kUsageFile), path, 64);
    if (!text.ok()) return text.status();
    if (!text->has_value()) return std::optional<Usage>();
    absl::string_view line = **text;
    std::vector<absl::string_view> fields;
    if (absl::ConsumeSuffix(&line, "\n")) fields = absl::StrSplit(line, ' ');
    Usage usage;
    if (fields.size() != 2 || !absl::SimpleAtoi(fields[0], &usage.size_bytes) ||
        !absl::SimpleAtoi(fields[1], &usage.inodes) || usage.size_bytes < 0 ||
        usage.inodes < 0) {
      return absl::DataLossError(absl::StrCat("snapshot object ", id,
                                              " is damaged: malformed ", path));
    }
    return std::optional<Usage>(usage);
  }

  // Writes the usage file whole (a new file renamed over it).
  absl::Status WriteUsageFile(uint64_t id, const Usage& usage) const {
    const std::string temp = absl::StrCat(id, "/", kUsageTempFile);
    const std::string temp_path = absl::StrCat(objects_->path(), "/", temp);
    UniqueFd fd(::openat(objects_->fd(), temp.c_str(),
                         O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
                         0644));
    if (!fd.valid()) return ErrnoError(errno, "create", temp_path);
    if (absl::Status s = fstree::WriteAll(
            fd.get(), absl::StrCat(usage.size_bytes, " ", usage.inodes, "\n"),
            temp_path);
        !s.ok()) {
      return s;
    }
    if (options_.sync && ::fsync(fd.get()) != 0) {
      return ErrnoError(errno, "fsync", temp_path);
    }
    if (::close(fd.release()) != 0) {
      return ErrnoError(errno, "close", temp_path);
    }
    if (::renameat(objects_->fd(), temp.c_str(), objects_->fd(),
                   absl::StrCat(id, "/", kUsageFile).c_str()) != 0) {
      return ErrnoError(errno, absl::StrCat("rename ", temp_path, " to"),
                        absl::StrCat(ObjectPath(id), "/", kUsageFile));
    }
    if (options_.sync) {
      return fstree::FsyncAt(objects_->fd(), absl::StrCat(id).c_str(),
                             ObjectPath(id));
    }
    return absl::OkStatus();
  }

  const std::unique_ptr<ObjectDir> objects_;
  const OverlayBackendOptions options_;
  const bool index_off_;  // decided at start-up, so mounts need no I/O
  const bool userxattr_;
  mutable absl::Mutex mu_;
  // Ancestor chains learnt so far, by object id. Nodes are immutable and
  // shared (a child's node holds its parent's).
  std::unordered_map<uint64_t, std::shared_ptr<const ChainNode>> chains_
      ABSL_GUARDED_BY(mu_);
  // Objects Create made in this process that Commit has not committed yet:
  // Commit and DiskUsage need not look for their usage file. Objects from
  // before a restart are not here, so those calls read it (or find it
  // missing) as before.
  std::unordered_set<uint64_t> uncommitted_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::Status CheckOverlaySupport(const std::string& root) {
  if (root.empty()) {
    return absl::InvalidArgumentError("overlayfs backend: empty root path");
  }
  if (absl::Status s = fstree::MakeDirs(root, 0700); !s.ok()) return s;
  RemoveCheckLeftovers(root, "dtype-check-");
  RemoveCheckLeftovers(root, "overlay-check-");
  absl::StatusOr<bool> dtype = SupportsDType(root);
  if (!dtype.ok()) return dtype.status();
  if (!*dtype) {
    return absl::FailedPreconditionError(absl::StrCat(
        "overlayfs backend: the filesystem of ", root,
        " does not report file types in directory entries (d_type), which "
        "overlayfs needs; if it is xfs, reformat it with ftype=1, or ",
        kUseNative));
  }
  if (absl::Status s = TryOverlayMount(root, ""); !s.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "overlayfs backend: a test overlay mount with two lower dirs under ",
        root, " failed (", s.message(),
        "): this kernel, this filesystem or these privileges cannot serve "
        "overlayfs layers here; ",
        kUseNative));
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> NeedsOverlayUserXattr(const std::string& root) {
  if (!RunningInUserNamespace()) return false;
  struct statfs fs;
  if (::statfs(root.c_str(), &fs) == 0 &&
      static_cast<long>(fs.f_type) == kTmpfsMagic) {
    return false;  // tmpfs refuses user.* xattrs
  }
  if (KernelAtLeast(5, 11)) return true;
  // Older kernels may carry a backport: ask one.
  return TryOverlayMount(root, "userxattr").ok();
}

absl::StatusOr<std::unique_ptr<Backend>> NewOverlayBackend(
    const std::string& root, const OverlayBackendOptions& options) {
  if (!options.skip_support_check) {
    if (absl::Status s = CheckOverlaySupport(root); !s.ok()) return s;
  }
  absl::StatusOr<std::unique_ptr<ObjectDir>> objects =
      ObjectDir::Open(root, "overlayfs", options.sync);
  if (!objects.ok()) return objects.status();
  const std::string& resolved = (*objects)->path();
  // Layer paths are joined into one option string: ',' would end the
  // option, ':' would split a lower dir.
  if (resolved.find_first_of(",:") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("overlayfs backend: ", resolved,
                     " holds ',' or ':', which overlay mount options cannot "
                     "name; choose another root"));
  }
  const bool index_off = ::access(kIndexParameter, F_OK) == 0;
  absl::StatusOr<bool> userxattr = NeedsOverlayUserXattr(resolved);
  if (!userxattr.ok()) return userxattr.status();
  return std::make_unique<OverlayBackend>(*std::move(objects), options,
                                          index_off, *userxattr);
}

}  // namespace snapledger
