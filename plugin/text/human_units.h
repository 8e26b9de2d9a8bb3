// Sizes and durations for people, shared by the admin service's messages
// (plugin/admin_service.cc) and the CLI's tables (cli/render.cc), so that a
// `check` line and a `dead` table say the same thing the same way.
// Header-only: the CLI's render library does not link the daemon's.
#pragma once

#include <cstdint>
#include <cstdio>
#include <iterator>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace snapledger {

// Binary units with one decimal: "512 B", "4.0 KiB", "12.3 MiB" (negative
// sizes count as 0).
inline std::string HumanBytes(int64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes < 0 ? 0 : bytes, " B");
  static const char* const kUnits[] = {"KiB", "MiB", "GiB",
                                       "TiB", "PiB", "EiB"};
  double value = static_cast<double>(bytes) / 1024;
  size_t unit = 0;
  // Rounds as printed: 1023.96 KiB is "1.0 MiB", not "1024.0 KiB".
  while (value >= 1023.95 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", value, kUnits[unit]);
  return buf;
}

// The two largest units, to the second: "42s", "2m10s", "10m", "5h3m",
// "3d4h" (the magnitude of a negative duration).
inline std::string CompactDuration(absl::Duration d) {
  if (d < absl::ZeroDuration()) d = -d;
  const int64_t s = absl::ToInt64Seconds(d);
  auto two = [](int64_t big, const char* big_unit, int64_t small,
                const char* small_unit) {
    return small == 0 ? absl::StrCat(big, big_unit)
                      : absl::StrCat(big, big_unit, small, small_unit);
  };
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return two(s / 60, "m", s % 60, "s");
  if (s < 86400) return two(s / 3600, "h", s % 3600 / 60, "m");
  return two(s / 86400, "d", s % 86400 / 3600, "h");
}

}  // namespace snapledger
