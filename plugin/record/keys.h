// The key grammar: how records are named in the ledger.
//
// Client keys are containerd's, opaque to snapledger except for one parse:
// containerd sends "<namespace>/<sequence>/<key>" (ParseProxyKey). snapledger
// names its own records under the reserved prefix "snapledger.": a queued
// removal under RemovedKey(id), an adopted object under AdoptedKey(id). Ids
// are backend object ids, allocated by the ledger and never reused, so a
// reserved key never names two objects over time.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "store/ledger.h"

namespace snapledger {

// The ledger key an adopted backend object is recorded under.
std::string AdoptedKey(uint64_t backend_id);
// The ledger key a pending (or stuck) removal is recorded under: derived from
// the never-reused backend id, so the client's key is free at once and the
// record of a parent is found from a child's parent_backend_id.
std::string RemovedKey(uint64_t backend_id);
// RemovedKey(parent_id), or "" when there is no parent (id 0): the key a
// removal locks, shared, beside the parent's client key.
std::string RemovedKeyOfParent(uint64_t parent_id);
// Keys snapledger names its own records with ("snapledger." prefix, and
// not of containerd's "<namespace>/<seq>/<key>" form); clients may not
// create snapshots under them.
bool IsReservedKey(std::string_view key);

// The key the client knows a record by: removed_key for a queued removal
// (stored under RemovedKey()), else the record's own key.
inline const std::string& ClientKey(const Record& record) {
  return record.removed_key().empty() ? record.key() : record.removed_key();
}

// A key as containerd sends it to a proxy snapshotter:
// "<namespace>/<sequence>/<key>", where the containerd-level key may itself
// contain '/'.
struct ProxyKey {
  std::string ns;
  std::string key;
  bool operator==(const ProxyKey&) const = default;
};

// nullopt unless `backend_key` has a non-empty namespace (no '/'), a decimal
// sequence number and a non-empty key. snapledger's reserved keys
// ("snapledger.removed/<id>", ...) do not parse.
std::optional<ProxyKey> ParseProxyKey(std::string_view backend_key);

// Sets the namespace and containerd-level key that `record`'s key carries
// (cleared for keys of another form), and clears owner and leases: those
// are the containerd watcher's to fill.
void SetIdentity(Record* record);

}  // namespace snapledger
