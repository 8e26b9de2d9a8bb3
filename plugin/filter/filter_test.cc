#include "plugin/filter/filter.h"

#include <map>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace snapledger::filter {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::IsEmpty;

// A snapshot as the List RPC sees it.
struct Snapshot {
  std::string name;
  std::string parent;
  std::string kind;
  std::map<std::string, std::string> labels;
};

// Mirrors containerd's snapshot adaptor: name, parent and kind are always
// present; a label is looked up by the remaining components joined with '.'.
std::optional<std::string> Lookup(const Snapshot& s,
                                  const std::vector<std::string>& path) {
  if (path.empty()) return std::nullopt;
  if (path[0] == "name") return s.name;
  if (path[0] == "parent") return s.parent;
  if (path[0] == "kind") return s.kind;
  if (path[0] == "labels") {
    std::string key;
    for (size_t i = 1; i < path.size(); ++i) {
      if (i > 1) key += '.';
      key += path[i];
    }
    auto it = s.labels.find(key);
    if (it == s.labels.end()) return std::nullopt;
    return it->second;
  }
  return std::nullopt;
}

const std::vector<Snapshot>& Corpus() {
  static const auto* const kCorpus = new std::vector<Snapshot>{
      {"layer1",
       "",
       "committed",
       {{"containerd.io/gc.root", "2024-01-01"},
        {"containerd.io/snapshot.ref", "sha256:abc"}}},
      {"layer2",
       "layer1",
       "committed",
       {{"containerd.io/snapshot.ref", "sha256:def"}, {"env", "prod"}}},
      {"ctr/rw",
       "layer2",
       "active",
       {{"env", "dev"}, {"note", "too complex, yo"}, {"ctl", "a\tb\nc"}}},
      {"ctr.view", "layer2", "view", {}},
      {"café",
       "layer1",
       "active",
       {{"lang", "été"}, {"with \\ and \"", "present"}}},
      {"dotted",
       "",
       "committed",
       {{"a.b", "joined"},
        {"owner", "omg_asdf.asdf-qwer"},
        {"eq", "a==b"},
        {"q", "say\"hi\""}}},
  };
  return *kCorpus;
}

// Names of the corpus snapshots that any of `exprs` selects, in corpus order.
std::vector<std::string> SelectAny(const std::vector<std::string>& exprs) {
  absl::StatusOr<Filter> filter = Filter::ParseAll(exprs);
  EXPECT_TRUE(filter.ok()) << filter.status();
  if (!filter.ok()) return {"<parse error>"};
  std::vector<std::string> names;
  for (const Snapshot& s : Corpus()) {
    if (filter->Match([&](const std::vector<std::string>& path) {
          return Lookup(s, path);
        })) {
      names.push_back(s.name);
    }
  }
  return names;
}

std::vector<std::string> Select(const std::string& expr) {
  return SelectAny({expr});
}

std::vector<std::string> AllNames() {
  std::vector<std::string> names;
  for (const Snapshot& s : Corpus()) names.push_back(s.name);
  return names;
}

// Whether `expr` matches an object whose every field reads `value`.
bool MatchesValue(const std::string& expr, const std::string& value) {
  absl::StatusOr<Filter> filter = Filter::ParseAll({expr});
  EXPECT_TRUE(filter.ok()) << filter.status();
  return filter.ok() && filter->Match([&](const std::vector<std::string>&) {
    return std::optional<std::string>(value);
  });
}

// The full error text ParseAll gives for `expr`; "" if it parsed.
std::string ParseError(const std::string& expr) {
  absl::StatusOr<Filter> filter = Filter::ParseAll({expr});
  if (filter.ok()) return "";
  EXPECT_EQ(filter.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(filter.status().message());
}

TEST(FilterTest, NoExpressionsMatchEverything) {
  absl::StatusOr<Filter> filter = Filter::ParseAll({});
  ASSERT_TRUE(filter.ok());
  EXPECT_TRUE(filter->MatchesAll());
  EXPECT_THAT(SelectAny({}), ElementsAreArray(AllNames()));
}

TEST(FilterTest, EmptyExpressionMatchesEverything) {
  absl::StatusOr<Filter> filter = Filter::ParseAll({""});
  ASSERT_TRUE(filter.ok());
  EXPECT_TRUE(filter->MatchesAll());
  EXPECT_THAT(Select(""), ElementsAreArray(AllNames()));
  // OR with an always-true alternative.
  EXPECT_THAT(SelectAny({"name==nothing", ""}), ElementsAreArray(AllNames()));
  EXPECT_FALSE(Filter::ParseAll({"name==nothing"})->MatchesAll());
}

TEST(FilterTest, EmptyExpressionDoesNotHideErrorsElsewhere) {
  absl::StatusOr<Filter> filter = Filter::ParseAll({"", "name=="});
  EXPECT_EQ(filter.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(FilterTest, Presence) {
  EXPECT_THAT(Select("name"), ElementsAreArray(AllNames()));
  EXPECT_THAT(Select("labels.env"), ElementsAre("layer2", "ctr/rw"));
  EXPECT_THAT(Select("labels.missing"), IsEmpty());
  EXPECT_THAT(Select("nosuchfield"), IsEmpty());
}

TEST(FilterTest, Equality) {
  EXPECT_THAT(Select("name==layer1"), ElementsAre("layer1"));
  EXPECT_THAT(Select("kind==committed"),
              ElementsAre("layer1", "layer2", "dotted"));
  EXPECT_THAT(Select("labels.env==dev"), ElementsAre("ctr/rw"));
  // Equality needs the field present, even against "".
  EXPECT_THAT(Select(R"(labels.env=="")"), IsEmpty());
  EXPECT_THAT(Select(R"(parent=="")"), ElementsAre("layer1", "dotted"));
}

TEST(FilterTest, ValuesMayHoldDotsSlashesAndPunctuation) {
  EXPECT_THAT(Select("name==ctr/rw"), ElementsAre("ctr/rw"));
  EXPECT_THAT(Select("name==ctr.view"), ElementsAre("ctr.view"));
  EXPECT_THAT(Select("labels.owner==omg_asdf.asdf-qwer"),
              ElementsAre("dotted"));
  // After the operator everything up to a space or ',' is the value.
  EXPECT_THAT(Select("labels.eq==a==b"), ElementsAre("dotted"));
  EXPECT_THAT(Select(R"(labels.q==say"hi")"), ElementsAre("dotted"));
}

TEST(FilterTest, InequalityReadsAbsentFieldsAsEmpty) {
  EXPECT_THAT(Select("name!=layer1"),
              ElementsAre("layer2", "ctr/rw", "ctr.view", "café", "dotted"));
  EXPECT_THAT(Select("labels.env!=prod"),
              ElementsAre("layer1", "ctr/rw", "ctr.view", "café", "dotted"));
  EXPECT_THAT(Select(R"(labels.env!="")"), ElementsAre("layer2", "ctr/rw"));
  EXPECT_THAT(Select(R"(parent!="")"),
              ElementsAre("layer2", "ctr/rw", "ctr.view", "café"));
}

TEST(FilterTest, CommaIsAnd) {
  EXPECT_THAT(Select("labels.env,name"), ElementsAre("layer2", "ctr/rw"));
  EXPECT_THAT(Select("kind==active,labels.env"), ElementsAre("ctr/rw"));
  EXPECT_THAT(Select("kind==active,labels.env==prod"), IsEmpty());
  EXPECT_THAT(Select("kind==committed,parent==layer1,labels.env==prod"),
              ElementsAre("layer2"));
}

TEST(FilterTest, ExpressionsAreOr) {
  EXPECT_THAT(SelectAny({"name==layer1", "kind==view"}),
              ElementsAre("layer1", "ctr.view"));
  EXPECT_THAT(SelectAny({"kind==active,labels.env", "name==dotted"}),
              ElementsAre("ctr/rw", "dotted"));
  EXPECT_THAT(SelectAny({"name==x", "name==y"}), IsEmpty());
}

TEST(FilterTest, QuotedValues) {
  EXPECT_THAT(Select(R"(labels.note=="too complex, yo")"),
              ElementsAre("ctr/rw"));
  EXPECT_THAT(Select(R"(labels.ctl=="a\tb\nc")"), ElementsAre("ctr/rw"));
  EXPECT_THAT(Select(R"(labels.q=="say\"hi\"")"), ElementsAre("dotted"));
}

TEST(FilterTest, QuotedFieldPaths) {
  EXPECT_THAT(Select(R"(labels."containerd.io/gc.root")"),
              ElementsAre("layer1"));
  EXPECT_THAT(Select(R"(labels."containerd.io/snapshot.ref"==sha256:def)"),
              ElementsAre("layer2"));
  EXPECT_THAT(Select(R"(labels."with \\ and \""==present)"),
              ElementsAre("café"));
  // Components are joined with '.', quoted or not.
  EXPECT_THAT(Select("labels.a.b==joined"), ElementsAre("dotted"));
  EXPECT_THAT(Select(R"(labels."a".b==joined)"), ElementsAre("dotted"));
  EXPECT_THAT(Select(R"(labels."a.b"==joined)"), ElementsAre("dotted"));
  EXPECT_THAT(Select(R"("name"==dotted)"), ElementsAre("dotted"));
  // Fields may start with a digit or underscore.
  EXPECT_THAT(Select("_x,9y"), IsEmpty());
}

TEST(FilterTest, RegexFindsAnywhere) {
  EXPECT_THAT(Select("name~=ayer"), ElementsAre("layer1", "layer2"));
  EXPECT_THAT(Select("name~=^layer[0-9]$"), ElementsAre("layer1", "layer2"));
  EXPECT_THAT(Select(R"(name~=[a-z]\.view)"), ElementsAre("ctr.view"));
  EXPECT_THAT(Select("name~=^layer1$,kind~=commit"), ElementsAre("layer1"));
}

TEST(FilterTest, RegexQuoteStyles) {
  EXPECT_THAT(Select(R"(name~="^ctr[/.]")"), ElementsAre("ctr/rw", "ctr.view"));
  EXPECT_THAT(Select(R"(name~=/^ctr[.]/)"), ElementsAre("ctr.view"));
  EXPECT_THAT(Select(R"(name~=/^ctr\/rw$/)"), ElementsAre("ctr/rw"));
  EXPECT_THAT(Select(R"(name~=|^ctr/rw$|)"), ElementsAre("ctr/rw"));
}

TEST(FilterTest, RegexAltQuoteEscapesItsOwnQuote) {
  // In |...| the escaped '|' is a literal '|' in the pattern text, which RE2
  // reads as alternation: "^layer1$|^dotted$".
  EXPECT_THAT(Select(R"(name~=|^layer1$\|^dotted$|)"),
              ElementsAre("layer1", "dotted"));
  // A quoted pattern may hold ',' and spaces.
  EXPECT_THAT(Select(R"(labels.note~=/x, y/)"), ElementsAre("ctr/rw"));
  EXPECT_THAT(Select(R"(labels.note~=|complex, yo$|,kind==active)"),
              ElementsAre("ctr/rw"));
}

TEST(FilterTest, RegexReadsAbsentFieldsAsEmpty) {
  EXPECT_THAT(Select("labels.env~=^$"),
              ElementsAre("layer1", "ctr.view", "café", "dotted"));
}

TEST(FilterTest, BadRegexParsesButMatchesNothing) {
  EXPECT_THAT(Select("name~=[abc"), IsEmpty());
  EXPECT_THAT(Select("name~=("), IsEmpty());
  EXPECT_THAT(Select(R"(name~=/x{2,1}/)"), IsEmpty());
  // Invalid UTF-8 in the pattern is rejected by RE2, as by Go.
  EXPECT_THAT(Select(R"(name~="\xff")"), IsEmpty());
  EXPECT_THAT(SelectAny({"name~=(", "name==layer1"}), ElementsAre("layer1"));
  // Valid syntax that just never matches.
  EXPECT_THAT(Select(R"(name~=/[abc]{0,1}"\//,name!=foo)"), IsEmpty());
}

TEST(FilterTest, UnicodeValues) {
  EXPECT_THAT(Select("name==café"), ElementsAre("café"));
  EXPECT_THAT(Select(R"(name=="caf\u00e9")"), ElementsAre("café"));
  EXPECT_THAT(Select(R"(name=="caf\U000000E9")"), ElementsAre("café"));
  EXPECT_THAT(Select(R"(name=="caf\xc3\xa9")"), ElementsAre("café"));
  EXPECT_THAT(Select(R"(name=="caf\303\251")"), ElementsAre("café"));
  EXPECT_THAT(Select("labels.lang==été"), ElementsAre("café"));
  EXPECT_THAT(Select("name~=é$"), ElementsAre("café"));
  EXPECT_THAT(Select("labels.lang~=|^é|"), ElementsAre("café"));
  EXPECT_THAT(Select("name~=牛"), IsEmpty());
  EXPECT_TRUE(MatchesValue("x~=|牛|", "cow 牛"));
  EXPECT_TRUE(MatchesValue("x==\U0001F600", "\U0001F600"));
}

TEST(FilterTest, Escapes) {
  EXPECT_TRUE(MatchesValue(R"(x=="\a\b\f\n\r\t\v\\")", "\a\b\f\n\r\t\v\\"));
  EXPECT_TRUE(MatchesValue(R"(x=="\x41\101\u0041")", "AAA"));
  EXPECT_TRUE(MatchesValue(R"(x=="\U0001F600")", "\U0001F600"));
  EXPECT_TRUE(MatchesValue(R"(x=="\377")", "\xff"));  // a raw byte
  EXPECT_TRUE(MatchesValue(R"(x~=/a\/b/)", "a/b"));
}

TEST(FilterTest, ContainerdUnquoteQuirks) {
  // Surrogates are not rejected; they come out as U+FFFD.
  EXPECT_TRUE(MatchesValue(R"(x=="\ud800")", "\xEF\xBF\xBD"));
  // \U beyond 0x7FFFFFFF wraps negative and lands as its low byte.
  EXPECT_TRUE(MatchesValue(R"(x=="\U80000041")", "A"));
  EXPECT_EQ(ParseError(R"(x=="\U00110000")"),
            "filters: parse error: [x== >|\"|< \\U00110000\"]: "
            "unquoting failed: quote syntax error: invalid argument");
}

TEST(FilterTest, WhitespaceBetweenTokens) {
  EXPECT_THAT(Select("  name  ==  layer1"), ElementsAre("layer1"));
  EXPECT_THAT(Select("name==layer2,\t labels.env"), ElementsAre("layer2"));
  EXPECT_THAT(Select("labels.env\n!=\u3000prod"),
              ElementsAre("layer1", "ctr/rw", "ctr.view", "café", "dotted"));
}

TEST(FilterTest, WhitespaceBeforeCommaOrEndIsAnError) {
  // containerd peeks at the raw next rune after a value.
  EXPECT_EQ(ParseError("name==layer1 "),
            "filters: parse error: [name==layer1 >| |< ]: "
            "unexpected input:  : invalid argument");
  EXPECT_EQ(ParseError("name==layer1 ,kind"),
            "filters: parse error: [name==layer1 >| |< ,kind]: "
            "unexpected input:  : invalid argument");
  // After a bare field the scanner wants an operator.
  EXPECT_EQ(ParseError("name "),
            "filters: parse error: [name ]: "
            R"(expected an operator ("=="|"!="|"~="): invalid argument)");
  EXPECT_EQ(ParseError("name ,kind"),
            "filters: parse error: [name  >|,|< kind]: "
            R"(expected an operator ("=="|"!="|"~="): invalid argument)");
  EXPECT_EQ(ParseError("  "),
            "filters: parse error: [  ]: expected field or quoted: "
            "invalid argument");
}

TEST(FilterTest, ValueTakesAnyFirstRune) {
  // The first rune after an operator starts a value whatever it is; only
  // the rest must be graphic.
  EXPECT_TRUE(MatchesValue("x==\x01y", "\x01y"));
  EXPECT_EQ(ParseError("x==y\x01"),
            "filters: parse error: [x==y >|\x01|< ]: unexpected input: \x01: "
            "invalid argument");
}

struct ErrorCase {
  std::string input;
  std::string message;  // without the "filters: parse error: " prefix
};

class FilterParseErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(FilterParseErrorTest, IsInvalidArgumentNamingInputAndPosition) {
  const ErrorCase& c = GetParam();
  absl::StatusOr<Filter> filter = Filter::ParseAll({c.input});
  ASSERT_FALSE(filter.ok());
  EXPECT_EQ(filter.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(filter.status().message(),
            "filters: parse error: " + c.message + ": invalid argument");
}

INSTANTIATE_TEST_SUITE_P(
    Garbage, FilterParseErrorTest,
    ::testing::Values(
        ErrorCase{"labels.|foo|==x",
                  "[labels. >|||< foo|==x]: invalid quote encountered"},
        ErrorCase{"name==/x/", "[name== >|/|< x/]: invalid quote encountered"},
        ErrorCase{"name!=|x|", "[name!= >|||< x|]: invalid quote encountered"},
        ErrorCase{R"(labels.?"a"==b)",
                  R"([labels. >|?|< "a"==b]: expected field or quoted)"},
        ErrorCase{"name==foo,", "[name==foo,]: expected field or quoted"},
        ErrorCase{"labels.", "[labels.]: expected field or quoted"},
        ErrorCase{",name", "[ >|,|< name]: expected field or quoted"},
        ErrorCase{"image~=,id?=?fbaq",
                  "[image~= >|,|< id?=?fbaq]: expected value or quoted"},
        ErrorCase{"name==", "[name==]: expected value or quoted"},
        ErrorCase{"name==.x", "[name== >|.|< x]: expected value or quoted"},
        ErrorCase{"name?=x",
                  "[name >|?|< =x]: expected an operator "
                  R"(("=="|"!="|"~="))"},
        ErrorCase{"name=x", R"([name >|=|< x]: unsupported operator "=")"},
        ErrorCase{"name===x",
                  R"([name >|=|< ==x]: unsupported operator "===")"},
        ErrorCase{"name==!x",
                  R"([name >|=|< =!x]: unsupported operator "==!")"},
        ErrorCase{"labels.ns/key==value",
                  "[labels.ns >|/|< key==value]: quoted literal not "
                  "terminated"},
        ErrorCase{"labels.containerd.io/gc.root",
                  "[labels.containerd.io >|/|< gc.root]: quoted literal not "
                  "terminated"},
        ErrorCase{"labels.key==/value",
                  "[labels.key== >|/|< value]: quoted literal not terminated"},
        ErrorCase{"labels.\"a\nb\"==c",
                  "[labels. >|\"|< a\nb\"==c]: quoted literal not terminated"},
        ErrorCase{R"(labels."\g")",
                  R"([labels. >|"|< \g"]: illegal escape sequence)"},
        ErrorCase{R"(name=="\/")",
                  R"([name== >|"|< \/"]: illegal escape sequence)"},
        ErrorCase{R"(name~=/a\|b/)",
                  R"([name~= >|/|< a\|b/]: illegal escape sequence)"},
        ErrorCase{R"(labels."\xaz")",
                  R"([labels. >|"|< \xaz"]: illegal numeric escape sequence)"},
        ErrorCase{R"(labels."\400")",
                  R"([labels. >|"|< \400"]: unquoting failed: quote syntax )"
                  "error"},
        ErrorCase{std::string("foo\0bar", 7),
                  std::string("[foo >|\0|< bar]: unexpected null", 32)},
        ErrorCase{std::string("x==\"a\0\"", 7),
                  std::string("[x== >|\"|< a\0\"]: unexpected null", 32)},
        ErrorCase{"\xffname", "[ >|\xff|< name]: rune error"},
        // A well-formed U+FFFD is refused too.
        ErrorCase{"x==\xEF\xBF\xBD", "[x== >|\xEF|< \xBF\xBD]: rune error"},
        // After a value, an illegal rune is "unexpected input: U+FFFD".
        ErrorCase{"x==ab\xff",
                  "[x==ab >|\xff|< ]: unexpected input: \xEF\xBF\xBD"},
        // The fence is around one byte, even inside a multi-byte rune.
        ErrorCase{"牛==x",
                  "[ >|\xE7|< \x89\x9B==x]: expected field or quoted"}));

TEST(FilterTest, ErrorNamesTheFailingExpression) {
  absl::StatusOr<Filter> filter =
      Filter::ParseAll({"name==layer1", "kind==view", "labels."});
  ASSERT_FALSE(filter.ok());
  EXPECT_EQ(filter.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(filter.status().message(),
            "filters: parse error: [labels.]: expected field or quoted: "
            "invalid argument");
}

TEST(FilterTest, MovedFilterKeepsMatching) {
  absl::StatusOr<Filter> parsed = Filter::ParseAll({"x~=^a+$"});
  ASSERT_TRUE(parsed.ok());
  Filter filter = *std::move(parsed);
  Filter other = std::move(filter);
  filter = std::move(other);
  EXPECT_TRUE(filter.Match([](const std::vector<std::string>&) {
    return std::optional<std::string>("aaa");
  }));
}

TEST(FilterTest, SharedAcrossThreads) {
  absl::StatusOr<Filter> filter =
      Filter::ParseAll({"kind==active,name~=^ctr", "labels.env==prod"});
  ASSERT_TRUE(filter.ok());
  std::vector<std::thread> threads;
  std::vector<int> hits(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) {
        for (const Snapshot& s : Corpus()) {
          if (filter->Match([&](const std::vector<std::string>& path) {
                return Lookup(s, path);
              })) {
            ++hits[t];
          }
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int h : hits) EXPECT_EQ(h, 2 * 500);  // ctr/rw and layer2
}

}  // namespace
}  // namespace snapledger::filter
