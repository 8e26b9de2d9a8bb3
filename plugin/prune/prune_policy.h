// The prune's policy (docs/prune.md): what `[prune]` says, and which of the
// candidates a pass finds should go. Pure: no I/O, no clock of its own, so
// that the selection is tested with a fake clock and fake disk figures
// (prune_policy_test.cc); the Pruner (pruner.h) gathers the candidates from
// containerd's view and acts.
//
// Policies, each optional:
//   - min_free: the filesystem holding the root keeps at least this much
//     free (a percentage of its size, or bytes);
//   - max_used: snapledger's snapshots hold at most this many bytes;
//   - keep_duration: nothing matching stays unused for longer than this.
// The first two are pressure: candidates go, oldest-unused first, dead
// containers before expired leases, until the estimated bytes cover the
// deficit (then, opt-in, images no container uses). The third is a TTL: every
// candidate unused for longer goes, whatever the disk says.
//
// Thread-safety: pure functions and plain values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace snapledger {

// A `min_free` value: a percentage of the filesystem, or bytes.
struct FreeTarget {
  bool percent = false;
  // 0 < value <= 100 for a percentage; bytes otherwise.
  double value = 0;

  // The free bytes wanted on a filesystem of `total` bytes.
  int64_t BytesOn(int64_t total) const;
  // "30%" or "20.0 GiB", for people.
  std::string ToString() const;
};

// "512", "512B", "64KiB", "1.5GiB", "2G" (powers of 1024 either way; case
// does not matter). InvalidArgument naming the text otherwise, and for
// negative or overflowing values.
[[nodiscard]] absl::StatusOr<int64_t> ParseByteSize(const std::string& text);
// "30%" (0 < p <= 100) or a byte size as above.
[[nodiscard]] absl::StatusOr<FreeTarget> ParseFreeTarget(
    const std::string& text);

struct PrunePolicy {
  // Evaluated every `interval` while the daemon runs; on demand always
  // (`snapledger prune`).
  bool enabled = false;
  absl::Duration interval = absl::Minutes(5);
  std::optional<FreeTarget> min_free;
  std::optional<int64_t> max_used;
  // Zero: no TTL.
  absl::Duration keep_duration = absl::ZeroDuration();
  // Only say what would go.
  bool dry_run = false;
  // A container is dead after this long without a live task
  // ([containers] dead_after); under pressure already after
  // `pressure_dead_after` ([prune] dead_after).
  absl::Duration dead_after = absl::Minutes(10);
  absl::Duration pressure_dead_after = absl::Minutes(1);
  // Shell globs on container ids (any namespace) the prune may delete.
  std::vector<std::string> containers = {"*"};
  // Shell globs on lease ids the prune may delete once expired. Empty: no
  // lease is ever deleted.
  std::vector<std::string> leases;
  // Shell globs on image names ("docker.io/library/busybox:*") the prune
  // may delete once no container uses them. Empty: no image is ever
  // deleted.
  std::vector<std::string> images;

  bool has_pressure_policy() const {
    return min_free.has_value() || max_used.has_value();
  }
};

// Checks a policy; InvalidArgument names the `prune.` setting.
[[nodiscard]] absl::Status ValidatePrunePolicy(const PrunePolicy& policy);

// "min_free 15%, max_used 100.0 GiB, keep_duration 3d", or "no policy".
std::string DescribePrunePolicy(const PrunePolicy& policy);

// Whether `id` matches one of the shell globs.
bool MatchesAny(const std::vector<std::string>& globs, const std::string& id);

enum class PruneKind { kContainer, kLease, kImage };
// "container", "lease", "image"
std::string_view PruneKindName(PruneKind kind);

// Something the prune could delete through containerd.
struct PruneCandidate {
  PruneKind kind = PruneKind::kContainer;
  std::string ns;
  std::string id;
  // Since when it has been unused: a container's idle_since (no live task),
  // a lease's creation, an image's updated_at (its last pull or tag).
  absl::Time unused_since = absl::InfiniteFuture();
  // Leases: containerd's own `containerd.io/gc.expire` has passed.
  bool expired_by_label = false;
  // Images: some container in the namespace uses it (never chosen).
  bool in_use = false;
  // What deleting it would free, as far as the ledger tells (the snapshots
  // only it holds); an estimate.
  int64_t estimated_bytes = 0;
};

enum class PruneReason { kTtl, kPressure };
std::string_view PruneReasonName(PruneReason reason);  // "ttl", "pressure"

struct PruneChoice {
  PruneCandidate candidate;
  PruneReason reason = PruneReason::kTtl;
};

// The disk as a pass sees it. used_bytes: held by snapledger's snapshots;
// negative when not measured (no max_used).
struct DiskFigures {
  int64_t total_bytes = 0;
  int64_t free_bytes = 0;
  int64_t used_bytes = -1;
};

// Bytes to free for the pressure policies to hold (0: they hold, or none is
// set): the larger of min_free's deficit and max_used's excess.
int64_t BytesNeeded(const PrunePolicy& policy, const DiskFigures& disk);

// The candidates to delete, in the order to delete them: first every TTL
// choice (unused longer than keep_duration; containers also dead), oldest
// first; then, while BytesNeeded is not covered by the estimates of the
// choices so far, pressure choices: dead containers (idle for at least
// min(pressure_dead_after, dead_after)), oldest first, then expired leases
// (their gc.expire passed), oldest first, then images no container uses,
// oldest first. Candidates whose id (an image's name) no glob matches,
// containers not idle long enough and images in use are never chosen.
std::vector<PruneChoice> SelectPrune(const PrunePolicy& policy, absl::Time now,
                                     const DiskFigures& disk,
                                     std::vector<PruneCandidate> candidates);

}  // namespace snapledger
