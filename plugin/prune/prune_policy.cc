#include "plugin/prune/prune_policy.h"

#include <fnmatch.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "plugin/text/human_units.h"

namespace snapledger {

int64_t FreeTarget::BytesOn(int64_t total) const {
  if (!percent) return static_cast<int64_t>(value);
  return static_cast<int64_t>(std::ceil(
      static_cast<double>(std::max<int64_t>(total, 0)) * value / 100));
}

std::string FreeTarget::ToString() const {
  if (!percent) return HumanBytes(static_cast<int64_t>(value));
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g%%", value);
  return buf;
}

absl::StatusOr<int64_t> ParseByteSize(const std::string& text) {
  auto bad = [&](const char* why) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\" is not a size (", why,
                     "; e.g. \"512MiB\", \"20G\", \"1073741824\")"));
  };
  absl::string_view s = absl::StripAsciiWhitespace(text);
  size_t digits = 0;
  while (digits < s.size() &&
         (std::isdigit(static_cast<unsigned char>(s[digits])) ||
          s[digits] == '.')) {
    ++digits;
  }
  if (digits == 0) return bad("no number");
  double number = 0;
  if (!absl::SimpleAtod(s.substr(0, digits), &number)) return bad("no number");
  std::string unit =
      absl::AsciiStrToLower(absl::StripAsciiWhitespace(s.substr(digits)));
  if (!unit.empty() && unit.back() == 'b') unit.pop_back();     // "GiB", "GB"
  if (unit.size() == 2 && unit.back() == 'i') unit.pop_back();  // "Gi"
  static constexpr absl::string_view kUnits = "kmgtp";
  double scale = 1;
  if (!unit.empty()) {
    const size_t power = kUnits.find(unit);
    if (unit.size() != 1 || power == absl::string_view::npos) {
      return bad("unknown unit");
    }
    scale = std::pow(1024.0, static_cast<double>(power + 1));
  }
  const double bytes = number * scale;
  if (!(bytes >= 0) ||
      bytes >= static_cast<double>(std::numeric_limits<int64_t>::max())) {
    return bad("out of range");
  }
  return static_cast<int64_t>(bytes);
}

absl::StatusOr<FreeTarget> ParseFreeTarget(const std::string& text) {
  absl::string_view s = absl::StripAsciiWhitespace(text);
  FreeTarget target;
  if (!s.empty() && s.back() == '%') {
    double p = 0;
    if (!absl::SimpleAtod(absl::StripAsciiWhitespace(s.substr(0, s.size() - 1)),
                          &p) ||
        !(p > 0 && p <= 100)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "\"", text, "\" is not a percentage between 0 (excluded) and 100"));
    }
    target.percent = true;
    target.value = p;
    return target;
  }
  absl::StatusOr<int64_t> bytes = ParseByteSize(std::string(s));
  if (!bytes.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", text,
        "\" is neither a percentage (\"30%\") nor a size (\"20GiB\")"));
  }
  target.value = static_cast<double>(*bytes);
  return target;
}

absl::Status ValidatePrunePolicy(const PrunePolicy& policy) {
  if (policy.interval < absl::Seconds(1) || policy.interval > absl::Hours(24)) {
    return absl::InvalidArgumentError(
        "prune.interval must be between 1s and 24h");
  }
  if (policy.keep_duration < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "prune.keep_duration must not be negative (\"0s\": no TTL)");
  }
  if (policy.pressure_dead_after <= absl::ZeroDuration() ||
      policy.pressure_dead_after > absl::Hours(24 * 30)) {
    return absl::InvalidArgumentError(
        "prune.dead_after must be between 0s (excluded: a container just "
        "created by `ctr run` has no task yet) and 720h");
  }
  if (policy.max_used.has_value() && *policy.max_used <= 0) {
    return absl::InvalidArgumentError("prune.max_used must be more than 0");
  }
  if (policy.min_free.has_value() && !policy.min_free->percent &&
      policy.min_free->value <= 0) {
    return absl::InvalidArgumentError("prune.min_free must be more than 0");
  }
  if (policy.enabled && !policy.has_pressure_policy() &&
      policy.keep_duration == absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "prune.enabled needs a policy: min_free, max_used or keep_duration");
  }
  for (const auto* globs :
       {&policy.containers, &policy.leases, &policy.images}) {
    for (const std::string& glob : *globs) {
      if (glob.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(globs == &policy.containers ? "prune.containers"
                         : globs == &policy.leases   ? "prune.leases"
                                                     : "prune.images",
                         ": an empty pattern matches nothing"));
      }
    }
  }
  return absl::OkStatus();
}

bool MatchesAny(const std::vector<std::string>& globs, const std::string& id) {
  for (const std::string& glob : globs) {
    if (::fnmatch(glob.c_str(), id.c_str(), 0) == 0) return true;
  }
  return false;
}

std::string_view PruneKindName(PruneKind kind) {
  switch (kind) {
    case PruneKind::kContainer:
      return "container";
    case PruneKind::kLease:
      return "lease";
    case PruneKind::kImage:
      return "image";
  }
  return "unknown";
}

std::string_view PruneReasonName(PruneReason reason) {
  switch (reason) {
    case PruneReason::kTtl:
      return "ttl";
    case PruneReason::kPressure:
      return "pressure";
  }
  return "unknown";
}

std::string DescribePrunePolicy(const PrunePolicy& p) {
  std::vector<std::string> parts;
  if (p.min_free.has_value()) {
    parts.push_back(absl::StrCat("min_free ", p.min_free->ToString()));
  }
  if (p.max_used.has_value()) {
    parts.push_back(absl::StrCat("max_used ", HumanBytes(*p.max_used)));
  }
  if (p.keep_duration > absl::ZeroDuration()) {
    parts.push_back(
        absl::StrCat("keep_duration ", CompactDuration(p.keep_duration)));
  }
  if (parts.empty()) return "no policy";
  return absl::StrJoin(parts, ", ");
}

int64_t BytesNeeded(const PrunePolicy& policy, const DiskFigures& disk) {
  int64_t need = 0;
  if (policy.min_free.has_value()) {
    need = std::max(
        need, policy.min_free->BytesOn(disk.total_bytes) - disk.free_bytes);
  }
  if (policy.max_used.has_value() && disk.used_bytes >= 0) {
    need = std::max(need, disk.used_bytes - *policy.max_used);
  }
  return need;
}

std::vector<PruneChoice> SelectPrune(const PrunePolicy& policy, absl::Time now,
                                     const DiskFigures& disk,
                                     std::vector<PruneCandidate> candidates) {
  // Oldest-unused first; ties by identity so that a pass is reproducible.
  std::sort(candidates.begin(), candidates.end(),
            [](const PruneCandidate& a, const PruneCandidate& b) {
              return std::tie(a.unused_since, a.ns, a.id) <
                     std::tie(b.unused_since, b.ns, b.id);
            });
  std::vector<PruneChoice> chosen;
  std::vector<bool> taken(candidates.size(), false);
  auto idle = [&](const PruneCandidate& c) { return now - c.unused_since; };
  auto allowed = [&](const PruneCandidate& c) {
    switch (c.kind) {
      case PruneKind::kContainer:
        return MatchesAny(policy.containers, c.id);
      case PruneKind::kLease:
        return MatchesAny(policy.leases, c.id);
      case PruneKind::kImage:
        return !c.in_use && MatchesAny(policy.images, c.id);
    }
    return false;
  };

  if (policy.keep_duration > absl::ZeroDuration()) {
    for (size_t i = 0; i < candidates.size(); ++i) {
      const PruneCandidate& c = candidates[i];
      if (!allowed(c) || idle(c) < policy.keep_duration) continue;
      if (c.kind == PruneKind::kContainer && idle(c) < policy.dead_after) {
        continue;
      }
      chosen.push_back({c, PruneReason::kTtl});
      taken[i] = true;
    }
  }

  int64_t need = BytesNeeded(policy, disk);
  for (const PruneChoice& c : chosen) need -= c.candidate.estimated_bytes;
  const absl::Duration pressure_dead =
      std::min(policy.pressure_dead_after, policy.dead_after);
  for (PruneKind kind :
       {PruneKind::kContainer, PruneKind::kLease, PruneKind::kImage}) {
    for (size_t i = 0; i < candidates.size() && need > 0; ++i) {
      const PruneCandidate& c = candidates[i];
      if (taken[i] || c.kind != kind || !allowed(c)) continue;
      if (kind == PruneKind::kContainer && idle(c) < pressure_dead) continue;
      if (kind == PruneKind::kLease && !c.expired_by_label) continue;
      chosen.push_back({c, PruneReason::kPressure});
      taken[i] = true;
      need -= c.estimated_bytes;
    }
  }
  return chosen;
}

}  // namespace snapledger
