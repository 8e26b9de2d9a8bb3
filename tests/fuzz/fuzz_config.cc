// libFuzzer target: config.toml loading and validation
// (plugin/server/config.h). Every input is either a configuration or an
// error that says what is wrong.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "plugin/server/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<snapledger::Config> config =
      snapledger::LoadConfigText(text, "fuzz.toml", snapledger::Config{});
  if (!config.ok()) {
    if (config.status().message().empty()) __builtin_trap();
    return 0;
  }
  absl::Status valid = snapledger::ValidateConfig(*config);
  if (!valid.ok() && valid.message().empty()) __builtin_trap();
  return 0;
}
