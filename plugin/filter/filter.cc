// Implementation notes. The behaviour, including its odd corners, follows
// containerd 1.6's filters package so that a client sees the same answers and
// the same error text from snapledger as from containerd:
//
//  * The scanner works on runes. A NUL, a malformed UTF-8 sequence and even a
//    well-formed U+FFFD are illegal ("unexpected null" / "rune error").
//  * Whitespace is skipped before a token, but the parser peeks at the raw
//    next rune after a value or a field path, so "name==a ,b" and "name==a "
//    are errors ("unexpected input:  ").
//  * After an operator the scanner is in value mode: the first rune of the
//    value may be anything that does not start another token, and the run
//    continues over graphic runes other than ',' (so '.', '/', '=' and '"'
//    belong to the value).
//  * Quotes are '"', '/' and '|'; only `~=` values may use the last two.
//  * The first scanner error is the one reported.
//  * `!=` and `~=` read an absent field as "".
//  * A `~=` pattern that RE2 rejects parses fine and matches nothing.

#include "plugin/filter/filter.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "re2/re2.h"

namespace snapledger::filter {
namespace {

// Pseudo-runes handed out by the scanner next to real code points.
constexpr int32_t kEofRune = -1;
constexpr int32_t kIllegalRune = -2;

constexpr int32_t kReplacementChar = 0xFFFD;
constexpr int32_t kMaxRune = 0x10FFFF;

struct DecodedRune {
  int32_t rune;
  size_t width;
};

// Decodes the first rune of non-empty `s`. Anything that is not well-formed
// UTF-8 (stray continuation, overlong form, surrogate, beyond U+10FFFF,
// truncated) decodes as U+FFFD of width 1, as Go does.
DecodedRune DecodeRune(std::string_view s) {
  const auto lead = static_cast<unsigned char>(s[0]);
  if (lead < 0x80) return {lead, 1};
  size_t width;
  int32_t rune;
  unsigned char second_lo = 0x80;
  unsigned char second_hi = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    width = 2;
    rune = lead & 0x1F;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    width = 3;
    rune = lead & 0x0F;
    if (lead == 0xE0) second_lo = 0xA0;  // overlong
    if (lead == 0xED) second_hi = 0x9F;  // surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    width = 4;
    rune = lead & 0x07;
    if (lead == 0xF0) second_lo = 0x90;  // overlong
    if (lead == 0xF4) second_hi = 0x8F;  // beyond U+10FFFF
  } else {
    return {kReplacementChar, 1};
  }
  if (s.size() < width) return {kReplacementChar, 1};
  for (size_t i = 1; i < width; ++i) {
    const auto b = static_cast<unsigned char>(s[i]);
    const unsigned char lo = i == 1 ? second_lo : 0x80;
    const unsigned char hi = i == 1 ? second_hi : 0xBF;
    if (b < lo || b > hi) return {kReplacementChar, 1};
    rune = (rune << 6) | (b & 0x3F);
  }
  return {rune, width};
}

// Appends `r` as UTF-8; values that are not valid code points (negative,
// surrogates, beyond U+10FFFF) come out as U+FFFD.
void AppendRune(int32_t r, std::string* out) {
  if (r < 0 || r > kMaxRune || (r >= 0xD800 && r <= 0xDFFF)) {
    r = kReplacementChar;
  }
  const auto u = static_cast<uint32_t>(r);
  if (u < 0x80) {
    out->push_back(static_cast<char>(u));
  } else if (u < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (u >> 6)));
    out->push_back(static_cast<char>(0x80 | (u & 0x3F)));
  } else if (u < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (u >> 12)));
    out->push_back(static_cast<char>(0x80 | ((u >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (u & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (u >> 18)));
    out->push_back(static_cast<char>(0x80 | ((u >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((u >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (u & 0x3F)));
  }
}

// Unicode White_Space, the set Go's unicode.IsSpace tests.
bool IsSpace(int32_t r) {
  switch (r) {
    case '\t':
    case '\n':
    case '\v':
    case '\f':
    case '\r':
    case ' ':
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return r >= 0x2000 && r <= 0x200A;
  }
}

bool IsFieldRune(int32_t r) {
  return (r >= 'A' && r <= 'Z') || (r >= 'a' && r <= 'z') ||
         (r >= '0' && r <= '9') || r == '_';
}

bool IsOperatorRune(int32_t r) { return r == '=' || r == '!' || r == '~'; }

bool IsQuoteRune(int32_t r) { return r == '"' || r == '/' || r == '|'; }

bool IsSeparatorRune(int32_t r) { return r == ',' || r == '.'; }

// A rune that may continue an unquoted value: a graphic rune (letter, mark,
// number, punctuation, symbol) that is neither a space nor ','.
bool IsValueRune(int32_t r) {
  if (r < 0 || r == ',') return false;
  if (r < 0x80) return r > ' ' && r < 0x7F;
  if (IsSpace(r)) return false;
  // RE2 carries the Unicode category tables; this runs only for non-ASCII.
  static const RE2* const kGraphic = new RE2(R"([\p{L}\p{M}\p{N}\p{P}\p{S}])");
  std::string encoded;
  AppendRune(r, &encoded);
  return RE2::FullMatch(encoded, *kGraphic);
}

int DigitValue(int32_t r) {
  if (r >= '0' && r <= '9') return r - '0';
  if (r >= 'a' && r <= 'f') return r - 'a' + 10;
  if (r >= 'A' && r <= 'F') return r - 'A' + 10;
  return 16;  // larger than any base in use
}

enum class TokenKind {
  kEof,
  kIllegal,
  kQuoted,
  kValue,
  kField,
  kSeparator,
  kOperator,
  kOther,  // a rune that starts no token, e.g. '?'
};

struct Token {
  TokenKind kind;
  size_t pos;             // byte offset of the token's first rune
  std::string_view text;  // empty for kEof, kIllegal and kOther
};

// Splits one expression into tokens. Remembers the first error it meets
// (also while peeking); the parser reports that one for illegal tokens.
class Scanner {
 public:
  explicit Scanner(std::string_view input) : input_(input) {}

  // The rune after the last one read, without consuming it or skipping
  // whitespace.
  int32_t Peek() {
    const size_t start = start_;
    const size_t end = end_;
    const int32_t r = Next();
    start_ = start;
    end_ = end;
    return r;
  }

  Token Scan() {
    int32_t r = Next();
    while (r >= 0 && IsSpace(r)) r = Next();
    const size_t pos = start_;
    if (r == kEofRune) return {TokenKind::kEof, pos, {}};
    if (r == kIllegalRune) return {TokenKind::kIllegal, pos, {}};
    if (IsQuoteRune(r)) {
      const bool ok = ScanQuoted(r);
      return {ok ? TokenKind::kQuoted : TokenKind::kIllegal, pos,
              input_.substr(pos, end_ - pos)};
    }
    if (IsSeparatorRune(r)) {
      in_value_ = false;
      return {TokenKind::kSeparator, pos, input_.substr(pos, end_ - pos)};
    }
    if (IsOperatorRune(r)) {
      while (IsOperatorRune(Peek())) Next();
      in_value_ = true;
      return {TokenKind::kOperator, pos, input_.substr(pos, end_ - pos)};
    }
    if (in_value_) {
      // The first rune is taken whatever it is; only the rest must be
      // value runes.
      while (IsValueRune(Peek())) Next();
      in_value_ = false;
      return {TokenKind::kValue, pos, input_.substr(pos, end_ - pos)};
    }
    if (IsFieldRune(r)) {
      while (IsFieldRune(Peek())) Next();
      return {TokenKind::kField, pos, input_.substr(pos, end_ - pos)};
    }
    return {TokenKind::kOther, pos, {}};
  }

  // Byte offset just past the last rune read: where Peek() looks.
  size_t offset() const { return end_; }

  std::string_view error() const { return error_; }

 private:
  int32_t Next() {
    start_ = end_;
    if (end_ >= input_.size()) return kEofRune;
    const DecodedRune d = DecodeRune(input_.substr(end_));
    end_ += d.width;
    if (d.rune == kReplacementChar) {
      SetError("rune error");
      return kIllegalRune;
    }
    if (d.rune == 0) {
      SetError("unexpected null");
      return kIllegalRune;
    }
    return d.rune;
  }

  // Consumes the rest of a literal whose opening `quote` was just read.
  // Returns false if it is unterminated or holds a bad escape.
  bool ScanQuoted(int32_t quote) {
    bool ok = true;
    int32_t r = Next();
    while (r != quote) {
      if (r == '\n' || r < 0) {
        SetError("quoted literal not terminated");
        return false;
      }
      r = r == '\\' ? ScanEscape(quote, &ok) : Next();
    }
    return ok;
  }

  // Consumes an escape whose backslash was just read; returns the rune
  // after it. Only the enclosing quote character may be escaped.
  int32_t ScanEscape(int32_t quote, bool* ok) {
    const int32_t r = Next();
    switch (r) {
      case 'a':
      case 'b':
      case 'f':
      case 'n':
      case 'r':
      case 't':
      case 'v':
      case '\\':
        return Next();
      case '0':
      case '1':
      case '2':
      case '3':
      case '4':
      case '5':
      case '6':
      case '7':
        return ScanDigits(r, 8, 3, ok);
      case 'x':
        return ScanDigits(Next(), 16, 2, ok);
      case 'u':
        return ScanDigits(Next(), 16, 4, ok);
      case 'U':
        return ScanDigits(Next(), 16, 8, ok);
      default:
        if (r == quote) return Next();
        SetError("illegal escape sequence");
        *ok = false;
        return r;  // already consumed; the caller looks at it next
    }
  }

  // `r` is the first digit, already read. Reads `count` digits in all.
  int32_t ScanDigits(int32_t r, int base, int count, bool* ok) {
    while (count > 0 && DigitValue(r) < base) {
      r = Next();
      --count;
    }
    if (count > 0) {
      SetError("illegal numeric escape sequence");
      *ok = false;
    }
    return r;
  }

  void SetError(std::string_view message) {
    if (error_.empty()) error_ = message;
  }

  const std::string_view input_;
  size_t start_ = 0;  // offset of the last rune read
  size_t end_ = 0;    // offset just past it
  bool in_value_ = false;
  std::string_view error_;  // always a string literal
};

int HexValue(char c) {
  const int v = DigitValue(static_cast<unsigned char>(c));
  return v < 16 ? v : -1;
}

// The byte a one-letter escape (\n, \t, ...) stands for; nullopt for any
// other letter.
std::optional<char> SimpleEscape(char escape) {
  switch (escape) {
    case 'a':
      return '\a';
    case 'b':
      return '\b';
    case 'f':
      return '\f';
    case 'n':
      return '\n';
    case 'r':
      return '\r';
    case 't':
      return '\t';
    case 'v':
      return '\v';
    case '\\':
      return '\\';
    default:
      return std::nullopt;
  }
}

// Decodes \xHH, \uHHHH or \UHHHHHHHH (`escape` is 'x', 'u' or 'U'; `body`
// starts at the digits and is advanced past them) onto `out`. False when
// malformed.
bool AppendHexEscape(char escape, std::string_view* body, std::string* out) {
  const size_t digits = escape == 'x' ? 2 : escape == 'u' ? 4 : 8;
  if (body->size() < digits) return false;
  uint32_t bits = 0;
  for (size_t i = 0; i < digits; ++i) {
    const int v = HexValue((*body)[i]);
    if (v < 0) return false;
    bits = (bits << 4) | static_cast<uint32_t>(v);
  }
  body->remove_prefix(digits);
  if (escape == 'x') {
    out->push_back(static_cast<char>(bits));  // a byte, maybe not UTF-8
    return true;
  }
  // containerd accumulates into a signed 32-bit rune: \U80000000 and
  // up wrap negative, pass the range check, and land as their low
  // byte. Surrogates pass too and are encoded as U+FFFD.
  const auto rune = static_cast<int32_t>(bits);
  if (rune > kMaxRune) return false;
  if (rune < 0) {
    out->push_back(static_cast<char>(bits & 0xFF));
  } else {
    AppendRune(rune, out);
  }
  return true;
}

// Decodes \OOO (`first` is the first octal digit; `body` starts at the
// other two and is advanced past them) onto `out`. False when malformed or
// over 255.
bool AppendOctalEscape(char first, std::string_view* body, std::string* out) {
  if (body->size() < 2) return false;
  int value = first - '0';
  for (int i = 0; i < 2; ++i) {
    const int v = (*body)[i] - '0';
    if (v < 0 || v > 7) return false;
    value = (value << 3) | v;
  }
  body->remove_prefix(2);
  if (value > 255) return false;
  out->push_back(static_cast<char>(value));
  return true;
}

// Decodes the escape `escape` (the character after a backslash; `body`
// starts after it and is advanced past what it uses) onto `out`, in a
// literal quoted by `quote`. False when Go would refuse it.
bool AppendEscape(char escape, char quote, std::string_view* body,
                  std::string* out) {
  if (std::optional<char> c = SimpleEscape(escape); c.has_value()) {
    out->push_back(*c);
    return true;
  }
  switch (escape) {
    case 'x':
    case 'u':
    case 'U':
      return AppendHexEscape(escape, body, out);
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
      return AppendOctalEscape(escape, body, out);
    case '"':
    case '/':
    case '|':
    case '\'':
      // A quote character escapes only itself.
      if (escape != quote) return false;
      out->push_back(escape);
      return true;
    default:
      return false;
  }
}

// Decodes a literal the scanner accepted as quoted, quotes included, with
// Go's escapes; '/' and '|' quote like '"', each escaping only itself.
// nullopt when Go's strconv-style unquoting would fail.
std::optional<std::string> UnquoteLiteral(std::string_view literal) {
  if (literal.size() < 2 || literal.front() != literal.back()) {
    return std::nullopt;
  }
  const char quote = literal.front();
  if (!IsQuoteRune(quote)) return std::nullopt;
  std::string_view body = literal.substr(1, literal.size() - 2);
  if (body.find('\n') != std::string_view::npos) return std::nullopt;

  std::string out;
  out.reserve(body.size());
  while (!body.empty()) {
    const char c = body.front();
    if (c == quote) return std::nullopt;
    if (c != '\\') {
      // Multi-byte runes are copied as they are: the scanner has already
      // rejected malformed UTF-8.
      out.push_back(c);
      body.remove_prefix(1);
      continue;
    }
    if (body.size() < 2) return std::nullopt;
    const char escape = body[1];
    body.remove_prefix(2);
    if (!AppendEscape(escape, quote, &body, &out)) return std::nullopt;
  }
  return out;
}

enum class Op { kPresent, kEqual, kNotEqual, kMatches };

struct Selector {
  std::vector<std::string> fieldpath;
  Op op = Op::kPresent;
  std::string value;
  // kMatches only; null when RE2 rejected the pattern (matches nothing).
  std::unique_ptr<const RE2> regex;

  bool Match(FieldLookup lookup) const {
    const std::optional<std::string> field = lookup(fieldpath);
    switch (op) {
      case Op::kPresent:
        return field.has_value();
      case Op::kEqual:
        return field.has_value() && *field == value;
      case Op::kNotEqual:
        return field.value_or("") != value;
      case Op::kMatches:
        return regex != nullptr &&
               RE2::PartialMatch(field.value_or(""), *regex);
    }
    return false;
  }
};

// All selectors must match.
using Conjunction = std::vector<Selector>;

// Recursive descent over one non-empty expression.
class Parser {
 public:
  explicit Parser(std::string_view input) : input_(input), scanner_(input) {}

  absl::StatusOr<Conjunction> Parse() {
    Conjunction selectors;
    while (true) {
      absl::StatusOr<Selector> selector = ParseSelector();
      if (!selector.ok()) return selector.status();
      selectors.push_back(*std::move(selector));
      const int32_t next = scanner_.Peek();
      if (next == kEofRune) return selectors;
      if (next != ',') {
        std::string rune;
        AppendRune(next, &rune);  // kIllegalRune prints as U+FFFD
        return Error(scanner_.offset(), "unexpected input: " + rune);
      }
      scanner_.Scan();  // the ','
    }
  }

 private:
  absl::StatusOr<Selector> ParseSelector() {
    Selector selector;
    absl::StatusOr<std::string> field = ParseField();
    if (!field.ok()) return field.status();
    selector.fieldpath.push_back(*std::move(field));
    while (scanner_.Peek() == '.') {
      scanner_.Scan();
      field = ParseField();
      if (!field.ok()) return field.status();
      selector.fieldpath.push_back(*std::move(field));
    }

    const int32_t next = scanner_.Peek();
    if (next == ',' || next == kEofRune) return selector;  // presence test

    absl::StatusOr<Op> op = ParseOperator();
    if (!op.ok()) return op.status();
    selector.op = *op;
    absl::StatusOr<std::string> value =
        ParseValue(/*allow_alt_quotes=*/selector.op == Op::kMatches);
    if (!value.ok()) return value.status();
    selector.value = *std::move(value);

    if (selector.op == Op::kMatches) {
      RE2::Options options;
      options.set_log_errors(false);
      auto regex = std::make_unique<const RE2>(selector.value, options);
      if (regex->ok()) selector.regex = std::move(regex);
    }
    return selector;
  }

  absl::StatusOr<std::string> ParseField() {
    const Token token = scanner_.Scan();
    switch (token.kind) {
      case TokenKind::kField:
        return std::string(token.text);
      case TokenKind::kQuoted:
        return Unquote(token, /*allow_alt_quotes=*/false);
      case TokenKind::kIllegal:
        return Error(token.pos, scanner_.error());
      default:
        return Error(token.pos, "expected field or quoted");
    }
  }

  absl::StatusOr<Op> ParseOperator() {
    const Token token = scanner_.Scan();
    switch (token.kind) {
      case TokenKind::kOperator:
        if (token.text == "==") return Op::kEqual;
        if (token.text == "!=") return Op::kNotEqual;
        if (token.text == "~=") return Op::kMatches;
        return Error(token.pos, "unsupported operator \"" +
                                    std::string(token.text) + "\"");
      case TokenKind::kIllegal:
        return Error(token.pos, scanner_.error());
      default:
        return Error(token.pos, R"(expected an operator ("=="|"!="|"~="))");
    }
  }

  absl::StatusOr<std::string> ParseValue(bool allow_alt_quotes) {
    const Token token = scanner_.Scan();
    switch (token.kind) {
      case TokenKind::kValue:
      case TokenKind::kField:
        return std::string(token.text);
      case TokenKind::kQuoted:
        return Unquote(token, allow_alt_quotes);
      case TokenKind::kIllegal:
        return Error(token.pos, scanner_.error());
      default:
        return Error(token.pos, "expected value or quoted");
    }
  }

  absl::StatusOr<std::string> Unquote(const Token& token,
                                      bool allow_alt_quotes) {
    if (!allow_alt_quotes && token.text.front() != '"') {
      return Error(token.pos, "invalid quote encountered");
    }
    std::optional<std::string> text = UnquoteLiteral(token.text);
    if (!text.has_value()) {
      return Error(token.pos, "unquoting failed: quote syntax error");
    }
    return *std::move(text);
  }

  // containerd's format: the byte at `pos` is fenced with >| |<.
  absl::Status Error(size_t pos, std::string_view message) const {
    std::string text = "filters: parse error: [";
    if (pos < input_.size()) {
      text.append(input_.substr(0, pos))
          .append(" >|")
          .append(input_.substr(pos, 1))
          .append("|< ")
          .append(input_.substr(pos + 1));
    } else {
      text.append(input_);
    }
    text.append("]: ").append(message).append(": invalid argument");
    return absl::InvalidArgumentError(text);
  }

  const std::string_view input_;
  Scanner scanner_;
};

}  // namespace

struct Filter::Impl {
  // Set when there are no expressions or one of them is empty.
  bool matches_all = false;
  // Any one must match; unused when matches_all.
  std::vector<Conjunction> alternatives;
};

absl::StatusOr<Filter> Filter::ParseAll(const std::vector<std::string>& exprs) {
  auto impl = std::make_unique<Impl>();
  impl->matches_all = exprs.empty();
  for (const std::string& expr : exprs) {
    // Every expression is parsed, even after an empty one: an error anywhere
    // fails the whole filter.
    if (expr.empty()) {
      impl->matches_all = true;
      continue;
    }
    absl::StatusOr<Conjunction> conjunction = Parser(expr).Parse();
    if (!conjunction.ok()) return conjunction.status();
    impl->alternatives.push_back(*std::move(conjunction));
  }
  if (impl->matches_all) impl->alternatives.clear();
  return Filter(std::move(impl));
}

bool Filter::Match(FieldLookup lookup) const {
  if (impl_->matches_all) return true;
  for (const Conjunction& conjunction : impl_->alternatives) {
    bool all = true;
    for (const Selector& selector : conjunction) {
      if (!selector.Match(lookup)) {
        all = false;
        break;
      }
    }
    if (all) return true;
  }
  return false;
}

bool Filter::MatchesAll() const { return impl_->matches_all; }

Filter::Filter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Filter::Filter(Filter&&) noexcept = default;
Filter& Filter::operator=(Filter&&) noexcept = default;
Filter::~Filter() = default;

}  // namespace snapledger::filter
