#include "plugin/record/keys.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace snapledger {

std::string AdoptedKey(uint64_t backend_id) {
  return absl::StrCat("snapledger.adopted/", backend_id);
}

std::string RemovedKey(uint64_t backend_id) {
  return absl::StrCat("snapledger.removed/", backend_id);
}

std::string RemovedKeyOfParent(uint64_t parent_id) {
  return parent_id != 0 ? RemovedKey(parent_id) : std::string();
}

bool IsReservedKey(std::string_view key) {
  // A containerd key in a namespace that happens to begin with
  // "snapledger." ("snapledger.ci/4/x") is the client's, not ours: our own
  // keys never have containerd's three-part form.
  return key.starts_with("snapledger.") && !ParseProxyKey(key).has_value();
}

std::optional<ProxyKey> ParseProxyKey(std::string_view backend_key) {
  const size_t ns_end = backend_key.find('/');
  if (ns_end == std::string_view::npos || ns_end == 0) return std::nullopt;
  const size_t seq_end = backend_key.find('/', ns_end + 1);
  if (seq_end == std::string_view::npos) return std::nullopt;
  const std::string_view seq =
      backend_key.substr(ns_end + 1, seq_end - ns_end - 1);
  if (seq.empty() ||
      !std::all_of(seq.begin(), seq.end(), absl::ascii_isdigit)) {
    return std::nullopt;
  }
  const std::string_view key = backend_key.substr(seq_end + 1);
  if (key.empty()) return std::nullopt;
  return ProxyKey{std::string(backend_key.substr(0, ns_end)), std::string(key)};
}

void SetIdentity(Record* record) {
  record->clear_owner();
  record->clear_leases();
  if (std::optional<ProxyKey> parsed = ParseProxyKey(record->key())) {
    record->set_namespace_(parsed->ns);
    record->set_containerd_key(parsed->key);
  } else {
    record->clear_namespace_();
    record->clear_containerd_key();
  }
}

}  // namespace snapledger
