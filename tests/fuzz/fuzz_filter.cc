// libFuzzer target: containerd's List filter language (plugin/filter).
// Input: up to 8 expressions, one per line. Whatever parses is matched
// against a snapshot whose fields come from the input too, so the matcher
// (regexes included) runs on hostile patterns and hostile values.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "plugin/filter/filter.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> lines = absl::StrSplit(input, '\n');
  // The last line is the value every field has; the others are expressions.
  const std::string value = lines.back();
  lines.pop_back();
  if (lines.size() > 8) lines.resize(8);
  absl::StatusOr<snapledger::filter::Filter> filter =
      snapledger::filter::Filter::ParseAll(lines);
  if (!filter.ok()) {
    // A refusal must say something: the client sees it as InvalidArgument.
    if (filter.status().message().empty()) __builtin_trap();
    return 0;
  }
  auto lookup =
      [&](const std::vector<std::string>& path) -> std::optional<std::string> {
    if (path.empty()) return std::nullopt;
    if (path[0] == "kind" || path[0] == "name" || path[0] == "parent") {
      return value;
    }
    if (path[0] == "labels" && path.size() == 2) return value;
    return std::nullopt;
  };
  const bool matched = filter->Match(lookup);
  if (filter->MatchesAll() && !matched) __builtin_trap();
  return 0;
}
