// containerd's filter language, as accepted by the Snapshots List RPC.
//
// A filter expression is a comma-separated list of selectors, all of which
// must match (AND): `<fieldpath>[<op><value>]`, where a fieldpath is
// dot-separated fields (identifiers or double-quoted strings, e.g.
// labels."containerd.io/gc.root"), op is `==`, `!=` or `~=` (a regular
// expression, RE2 syntax, found anywhere in the value), and a value is a
// quoted string or a run of characters other than space and comma. A
// selector without an operator tests that the field is present. Several
// expressions combine with OR; no expressions match everything.
//
// Thread-safety: a parsed Filter is immutable and may be shared.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"

namespace snapledger::filter {

// Looks a field path up on the object being matched: the value, or nullopt
// when the object has no such field.
using FieldLookup = absl::FunctionRef<std::optional<std::string>(
    const std::vector<std::string>& fieldpath)>;

class Filter {
 public:
  // Parses every expression; an empty list (or an empty expression) matches
  // everything. InvalidArgument names the expression and the position of the
  // first error.
  [[nodiscard]] static absl::StatusOr<Filter> ParseAll(
      const std::vector<std::string>& exprs);

  bool Match(FieldLookup lookup) const;

  // True when the filter matches everything: no expressions, or an empty
  // one (containerd treats "" as "match all").
  bool MatchesAll() const;

  Filter(Filter&&) noexcept;
  Filter& operator=(Filter&&) noexcept;
  ~Filter();

 private:
  struct Impl;
  explicit Filter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace snapledger::filter
