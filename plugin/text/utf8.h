// UTF-8 validity: containerd's API carries keys, names and labels as
// protobuf strings, which must be UTF-8 (Go's protobuf refuses anything
// else, so a record with other bytes could never be listed to containerd).
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

namespace snapledger {

// The offset of the first byte of `s` that does not begin a well-formed
// UTF-8 sequence (stray continuation bytes, truncated or overlong sequences,
// surrogates, values past U+10FFFF), or nullopt if `s` is valid UTF-8.
inline std::optional<size_t> FirstInvalidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = 0;
    char32_t cp = 0;
    char32_t min = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return i;
    }
    if (i + len > s.size()) return i;
    for (size_t k = 1; k < len; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (d & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::nullopt;
}

}  // namespace snapledger
