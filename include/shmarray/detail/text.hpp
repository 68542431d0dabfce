// shmarray internals: names as bytes. Anyone may put any bytes in a name in
// /dev/shm; these say which bytes are a character and how to print them so
// that no name can forge output (docs/FORMAT.md, "Names").
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace shmarray::detail {

// The length of the strictly valid UTF-8 character at the start of `s`
// (no overlong forms, no encoded surrogates, nothing past U+10FFFF), or 0.
inline std::size_t utf8_char(std::string_view s) noexcept {
  if (s.empty()) return 0;
  const auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned c = b(0);
  if (c < 0x80) return 1;
  std::size_t n = 0;
  unsigned lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (s.size() < n || b(1) < lo || b(1) > hi) return 0;
  for (std::size_t i = 2; i < n; ++i)
    if (b(i) < 0x80 || b(i) > 0xBF) return 0;
  return n;
}

// The code point of a valid character of `n` bytes at the start of `s`.
inline std::uint32_t utf8_code(std::string_view s, std::size_t n) noexcept {
  const auto b = [&](std::size_t i) { return std::uint32_t(static_cast<unsigned char>(s[i])); };
  if (n == 1) return b(0);
  std::uint32_t cp = b(0) & (0x7Fu >> n);
  for (std::size_t i = 1; i < n; ++i)
    cp = cp << 6 | (b(i) & 0x3Fu);
  return cp;
}

// C0, DEL and C1: characters a terminal may act on.
inline bool is_control(std::uint32_t cp) noexcept {
  return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F);
}

// The offset of the first byte of `s` that is not part of a printable
// UTF-8 character (a control character, or not UTF-8), or npos.
inline std::size_t unprintable_at(std::string_view s) noexcept {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_char(s.substr(i));
    if (n == 0 || is_control(utf8_code(s.substr(i), n))) return i;
    i += n;
  }
  return std::string_view::npos;
}

// A name as GNU `ls --quoting-style=escape` prints it in a UTF-8 locale:
// printable characters as they are, but `\\` and `\ `; `\n`, `\t` and
// the other C escapes; every other byte of a control character, and every
// byte that is not part of a UTF-8 character, as `\ooo`.
inline std::string escaped(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_char(s.substr(i));
    const std::uint32_t cp = n ? utf8_code(s.substr(i), n) : 0xFFFFFFFFu;
    if (n && !is_control(cp)) {
      if (cp == '\\' || cp == ' ') out += '\\';
      out.append(s.data() + i, n);
      i += n;
      continue;
    }
    static constexpr char named[] = "\aa\bb\tt\nn\vv\ff\rr";
    const char* esc = nullptr;
    for (std::size_t k = 0; n == 1 && k + 1 < sizeof named; k += 2)
      if (named[k] == s[i]) esc = named + k + 1;
    if (esc) {
      out += '\\';
      out += *esc;
      ++i;
      continue;
    }
    // A control character (all its bytes) or one byte that is not UTF-8.
    for (std::size_t k = 0; k < (n ? n : 1); ++k) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\%03o", unsigned(static_cast<unsigned char>(s[i + k])));
      out += buf;
    }
    i += n ? n : 1;
  }
  return out;
}

// A name as a JSON string, always valid UTF-8: control characters as
// \u00XX, and each byte that is not part of a UTF-8 character as \udcXX, as
// Python's surrogateescape decodes it (json.loads gives os.fsdecode's str).
inline std::string json_quoted(std::string_view s) {
  std::string out = "\"";
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_char(s.substr(i));
    char buf[8];
    if (n == 0) {
      std::snprintf(buf, sizeof buf, "\\udc%02x", unsigned(static_cast<unsigned char>(s[i])));
      out += buf;
      ++i;
      continue;
    }
    const std::uint32_t cp = utf8_code(s.substr(i), n);
    if (cp == '"' || cp == '\\') {
      out += '\\';
      out += char(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\b') {
      out += "\\b";
    } else if (cp == '\f') {
      out += "\\f";
    } else if (is_control(cp)) {
      std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(cp));
      out += buf;
    } else {
      out.append(s.data() + i, n);
    }
    i += n;
  }
  return out + "\"";
}

}  // namespace shmarray::detail
