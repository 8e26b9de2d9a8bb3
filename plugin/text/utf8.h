// UTF-8 validity: containerd's API carries keys, names and labels as
// protobuf strings, which must be UTF-8 (Go's protobuf refuses anything
// else, so a record with other bytes could never be listed to containerd).
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

namespace snapledger {

// Decodes the UTF-8 sequence at s[i] (i < s.size()) into `*cp`; returns
// its length in bytes, or 0 when s[i] does not begin a well-formed sequence
// (a stray continuation byte, a truncated or overlong sequence, a surrogate,
// a value past U+10FFFF).
inline size_t DecodeUtf8(std::string_view s, size_t i, char32_t* cp) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  size_t len = 0;
  char32_t value = 0;
  char32_t min = 0;
  if (c < 0x80) {
    *cp = c;
    return 1;
  } else if ((c & 0xE0) == 0xC0) {
    len = 2, value = c & 0x1F, min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    len = 3, value = c & 0x0F, min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    len = 4, value = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    const unsigned char d = static_cast<unsigned char>(s[i + k]);
    if ((d & 0xC0) != 0x80) return 0;
    value = (value << 6) | (d & 0x3F);
  }
  if (value < min || value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) {
    return 0;
  }
  *cp = value;
  return len;
}

// The offset of the first byte of `s` that does not begin a well-formed
// UTF-8 sequence, or nullopt if `s` is valid UTF-8.
inline std::optional<size_t> FirstInvalidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    char32_t cp = 0;
    const size_t len = DecodeUtf8(s, i, &cp);
    if (len == 0) return i;
    i += len;
  }
  return std::nullopt;
}

}  // namespace snapledger
