// libFuzzer target: the keys containerd sends ("<namespace>/<seq>/<key>")
// and snapledger's reserved key space (plugin/record/keys.h).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "plugin/record/keys.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string key(reinterpret_cast<const char*>(data), size);
  const std::optional<snapledger::ProxyKey> parsed =
      snapledger::ParseProxyKey(key);
  if (parsed.has_value()) {
    // What ParseProxyKey promises.
    if (parsed->ns.empty() || parsed->key.empty()) __builtin_trap();
    if (parsed->ns.find('/') != std::string::npos) __builtin_trap();
    if (snapledger::IsReservedKey(key)) __builtin_trap();
    if (key.size() <= parsed->ns.size() + parsed->key.size()) __builtin_trap();
  }
  snapledger::Record record;
  record.set_key(key);
  record.set_owner("stale");
  snapledger::SetIdentity(&record);
  if (!record.owner().empty()) __builtin_trap();
  if (parsed.has_value() && (record.namespace_() != parsed->ns ||
                             record.containerd_key() != parsed->key)) {
    __builtin_trap();
  }
  return 0;
}
