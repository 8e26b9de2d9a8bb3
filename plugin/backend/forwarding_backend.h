// ForwardingBackend<D>: the forwarding of a Backend decorator, written once
// (TimedBackend, FaultyBackend). Every Backend call but Name and
// MountsOfNew goes through the decorator's
//
//   template <typename T, typename Fn> T Run(const BackendCall& call, Fn fn);
//
// where `fn(Backend&)` makes the call on the backend it is given and returns
// its result (a T: absl::Status or absl::StatusOr<...>). D decides when,
// where and whether `fn` runs on inner() — on a worker within a time limit,
// after a drawn fault. `fn` holds copies of the call's arguments, so it may
// outlive the caller. Name and MountsOfNew (no I/O, see backend.h) go
// straight to the inner backend.
//
// D makes ForwardingBackend<D> a friend (Run may stay private), declares
// `extern template class ForwardingBackend<D>;` after itself and defines
// `template class ForwardingBackend<D>;` in its .cc where Run is defined:
// the forwarding is compiled once, beside Run.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "plugin/backend/backend.h"
#include "plugin/backend/backend_call.h"

namespace snapledger {

template <typename D>
class ForwardingBackend : public Backend {
 public:
  std::string_view Name() const override;
  [[nodiscard]] absl::Status Create(uint64_t id, uint64_t parent_id,
                                    SnapshotKind kind) override;
  // Counted as a create.
  [[nodiscard]] absl::Status CreateWithLabels(
      uint64_t id, uint64_t parent_id, SnapshotKind kind,
      const BackendLabels& labels) override;
  [[nodiscard]] absl::StatusOr<Usage> Commit(uint64_t id) override;
  // Counted as a commit.
  [[nodiscard]] absl::StatusOr<Usage> CommitWithLabels(
      uint64_t id, const BackendLabels& labels) override;
  [[nodiscard]] absl::Status Remove(uint64_t id) override;
  [[nodiscard]] absl::StatusOr<std::vector<Mount>> Mounts(
      uint64_t id, uint64_t parent_id, SnapshotKind kind) override;
  // Straight to the inner backend, on the caller's thread.
  [[nodiscard]] absl::StatusOr<std::vector<Mount>> MountsOfNew(
      uint64_t id, uint64_t parent_id, SnapshotKind kind) override;
  [[nodiscard]] absl::StatusOr<Usage> DiskUsage(uint64_t id) override;
  [[nodiscard]] absl::StatusOr<bool> Exists(uint64_t id) override;
  [[nodiscard]] absl::StatusOr<bool> IsCommitted(uint64_t id) override;
  [[nodiscard]] absl::StatusOr<std::vector<BackendObject>> List() override;
  // Counted as a list.
  [[nodiscard]] absl::StatusOr<std::vector<uint64_t>> ListIds() override;
  [[nodiscard]] absl::Status Cleanup() override;

 protected:
  // `inner` must not be null.
  explicit ForwardingBackend(std::shared_ptr<Backend> inner)
      : inner_(std::move(inner)) {}

  const std::shared_ptr<Backend>& inner() const { return inner_; }

 private:
  D& self() { return static_cast<D&>(*this); }

  const std::shared_ptr<Backend> inner_;
};

// Defined out of the class, so not inline: `extern template` then keeps
// every other translation unit from instantiating them (D::Run is defined in
// D's .cc only).

template <typename D>
std::string_view ForwardingBackend<D>::Name() const {
  return inner_->Name();
}

template <typename D>
absl::Status ForwardingBackend<D>::Create(uint64_t id, uint64_t parent_id,
                                          SnapshotKind kind) {
  return self().template Run<absl::Status>(
      {BackendOp::kCreate, id, parent_id}, [id, parent_id, kind](Backend& b) {
        return b.Create(id, parent_id, kind);
      });
}

template <typename D>
absl::Status ForwardingBackend<D>::CreateWithLabels(
    uint64_t id, uint64_t parent_id, SnapshotKind kind,
    const BackendLabels& labels) {
  return self().template Run<absl::Status>(
      {BackendOp::kCreate, id, parent_id},
      [id, parent_id, kind, labels](Backend& b) {
        return b.CreateWithLabels(id, parent_id, kind, labels);
      });
}

template <typename D>
absl::StatusOr<Usage> ForwardingBackend<D>::Commit(uint64_t id) {
  return self().template Run<absl::StatusOr<Usage>>(
      {BackendOp::kCommit, id}, [id](Backend& b) { return b.Commit(id); });
}

template <typename D>
absl::StatusOr<Usage> ForwardingBackend<D>::CommitWithLabels(
    uint64_t id, const BackendLabels& labels) {
  return self().template Run<absl::StatusOr<Usage>>(
      {BackendOp::kCommit, id},
      [id, labels](Backend& b) { return b.CommitWithLabels(id, labels); });
}

template <typename D>
absl::Status ForwardingBackend<D>::Remove(uint64_t id) {
  return self().template Run<absl::Status>(
      {BackendOp::kRemove, id}, [id](Backend& b) { return b.Remove(id); });
}

template <typename D>
absl::StatusOr<std::vector<Mount>> ForwardingBackend<D>::Mounts(
    uint64_t id, uint64_t parent_id, SnapshotKind kind) {
  return self().template Run<absl::StatusOr<std::vector<Mount>>>(
      {BackendOp::kMounts, id}, [id, parent_id, kind](Backend& b) {
        return b.Mounts(id, parent_id, kind);
      });
}

template <typename D>
absl::StatusOr<std::vector<Mount>> ForwardingBackend<D>::MountsOfNew(
    uint64_t id, uint64_t parent_id, SnapshotKind kind) {
  return inner_->MountsOfNew(id, parent_id, kind);
}

template <typename D>
absl::StatusOr<Usage> ForwardingBackend<D>::DiskUsage(uint64_t id) {
  return self().template Run<absl::StatusOr<Usage>>(
      {BackendOp::kDiskUsage, id},
      [id](Backend& b) { return b.DiskUsage(id); });
}

template <typename D>
absl::StatusOr<bool> ForwardingBackend<D>::Exists(uint64_t id) {
  return self().template Run<absl::StatusOr<bool>>(
      {BackendOp::kExists, id}, [id](Backend& b) { return b.Exists(id); });
}

template <typename D>
absl::StatusOr<bool> ForwardingBackend<D>::IsCommitted(uint64_t id) {
  return self().template Run<absl::StatusOr<bool>>(
      {BackendOp::kIsCommitted, id},
      [id](Backend& b) { return b.IsCommitted(id); });
}

template <typename D>
absl::StatusOr<std::vector<BackendObject>> ForwardingBackend<D>::List() {
  return self().template Run<absl::StatusOr<std::vector<BackendObject>>>(
      {BackendOp::kList}, [](Backend& b) { return b.List(); });
}

template <typename D>
absl::StatusOr<std::vector<uint64_t>> ForwardingBackend<D>::ListIds() {
  return self().template Run<absl::StatusOr<std::vector<uint64_t>>>(
      {BackendOp::kList}, [](Backend& b) { return b.ListIds(); });
}

template <typename D>
absl::Status ForwardingBackend<D>::Cleanup() {
  return self().template Run<absl::Status>(
      {BackendOp::kCleanup}, [](Backend& b) { return b.Cleanup(); });
}

}  // namespace snapledger
