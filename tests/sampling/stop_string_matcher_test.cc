#include "engine/sampling/stop_string_matcher.h"

#include <catch2/catch.hpp>
#include <random>
#include <string>
#include <vector>

namespace arbor::engine {
namespace {

// Feeds `deltas` and returns everything emitted (plus Flush when no stop), and the last result.
struct Run {
  std::vector<std::string> emits;
  std::string text;  // concatenated emits (and the flush)
  bool stopped = false;
  std::string matched;
};

Run FeedAll(const std::vector<std::string>& stops, const std::vector<std::string>& deltas) {
  StopStringMatcher m(stops);
  Run run;
  for (const auto& d : deltas) {
    auto r = m.Feed(d);
    run.emits.push_back(r.emit);
    run.text += r.emit;
    if (r.stopped) {
      run.stopped = true;
      run.matched = r.matched;
      break;
    }
  }
  if (!run.stopped) run.text += m.Flush();
  return run;
}

// Valid UTF-8 as the detokenizer produces it: whole characters only.
bool IsValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    const size_t len = b < 0x80           ? 1
                       : (b >> 5) == 0x6  ? 2
                       : (b >> 4) == 0xE  ? 3
                       : (b >> 3) == 0x1E ? 4
                                          : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

TEST_CASE("a stop string split across deltas is never emitted", "[sampling][stop]") {
  StopStringMatcher m({"###"});
  auto r = m.Feed("Hello #");
  CHECK(r.emit == "Hello ");
  CHECK_FALSE(r.stopped);
  r = m.Feed("#");
  CHECK(r.emit == "");
  CHECK_FALSE(r.stopped);
  r = m.Feed("# world");
  CHECK(r.emit == "");
  CHECK(r.stopped);
  CHECK(r.matched == "###");
  // Done: later text is dropped, the stop is reported again.
  r = m.Feed("more");
  CHECK(r.emit == "");
  CHECK(r.stopped);
  CHECK(r.matched == "###");
  CHECK(m.stopped());
  CHECK(m.Flush() == "");
}

TEST_CASE("a held prefix that stops matching is released", "[sampling][stop]") {
  StopStringMatcher m({"###"});
  auto r = m.Feed("ab#");
  CHECK(r.emit == "ab");
  r = m.Feed("#x");
  CHECK(r.emit == "##x");
  CHECK_FALSE(r.stopped);
  r = m.Feed("y##");
  CHECK(r.emit == "y");
  CHECK(m.Flush() == "##");
  CHECK(m.Flush() == "");
}

TEST_CASE("a self-overlapping stop string", "[sampling][stop]") {
  // "aab" in "aaab": the held "aa" slides by one.
  auto run = FeedAll({"aab"}, {"a", "a", "a", "b", "c"});
  CHECK(run.emits == std::vector<std::string>{"", "", "a", ""});
  CHECK(run.text == "a");
  CHECK(run.stopped);
}

TEST_CASE("with several stop strings the first to complete wins", "[sampling][stop]") {
  for (const auto& stops :
       {std::vector<std::string>{"world", "lo"}, std::vector<std::string>{"lo", "world"}}) {
    auto run = FeedAll(stops, {"hello world"});
    CHECK(run.text == "hel");
    CHECK(run.matched == "lo");
    run = FeedAll(stops, {"hel", "l", "o wor", "ld"});
    CHECK(run.text == "hel");
    CHECK(run.matched == "lo");
  }
  // "bc" is complete before "abcd" is, however the text arrives.
  CHECK(FeedAll({"abcd", "bc"}, {"abcd"}).matched == "bc");
  CHECK(FeedAll({"abcd", "bc"}, {"abcd"}).text == "a");
  CHECK(FeedAll({"abcd", "bc"}, {"a", "b", "c", "d"}).text == "a");
  // Both complete at the same byte: the longer one (it starts earlier) wins.
  CHECK(FeedAll({"c", "abc"}, {"xabc"}).matched == "abc");
  CHECK(FeedAll({"c", "abc"}, {"xabc"}).text == "x");
}

TEST_CASE("a stop at the very start emits nothing", "[sampling][stop]") {
  auto run = FeedAll({"<|end|>"}, {"<|end|>rest"});
  CHECK(run.stopped);
  CHECK(run.text == "");
  run = FeedAll({"<|end|>"}, {"<|", "end", "|>"});
  CHECK(run.stopped);
  CHECK(run.emits == std::vector<std::string>{"", "", ""});
}

TEST_CASE("multi-byte UTF-8 stop strings", "[sampling][stop]") {
  const std::string nihon = "\xe6\x97\xa5\xe6\x9c\xac";  // 日本
  StopStringMatcher m({nihon});
  auto r = m.Feed("\xe4\xbb\x8a\xe6\x97\xa5\xe3\x81\xaf\xe6\x97\xa5");  // 今日は日
  CHECK(r.emit == "\xe4\xbb\x8a\xe6\x97\xa5\xe3\x81\xaf");  // 今日は: the last 日 held
  r = m.Feed("\xe6\x9c\xac\xe8\xaa\x9e");                   // 本語
  CHECK(r.stopped);
  CHECK(r.emit == "");
  CHECK(r.matched == nihon);

  // Character by character, every emitted piece is whole characters.
  const std::string euro = "\xe2\x82\xac";  // €
  const std::vector<std::string> chars = {"5", euro, " ",  "a", "n", "d", " ",
                                          "1", "0",  euro, "u", "r", "o", "!"};
  auto run = FeedAll({euro + "uro"}, chars);
  CHECK(run.stopped);
  CHECK(run.text == "5" + euro + " and 10");
  for (const auto& e : run.emits) CHECK(IsValidUtf8(e));

  // Same first byte, different character: nothing is held for long.
  StopStringMatcher e_acute({"\xc3\xa9"});             // é
  CHECK(e_acute.Feed("\xc3\xaa").emit == "\xc3\xaa");  // ê
}

TEST_CASE("Flush releases the held text; no stops emits everything", "[sampling][stop]") {
  StopStringMatcher m({"STOP"});
  auto r = m.Feed("abc ST");
  CHECK(r.emit == "abc ");
  CHECK(m.Flush() == "ST");

  StopStringMatcher none({});
  CHECK(none.Feed("anything").emit == "anything");
  CHECK(none.Flush() == "");

  StopStringMatcher empty_ignored({"", "x"});
  CHECK(empty_ignored.Feed("ab").emit == "ab");
  CHECK(empty_ignored.Feed("cxd").emit == "c");
}

TEST_CASE("the result does not depend on how the text is cut", "[sampling][stop]") {
  std::mt19937 gen(13);
  const std::vector<std::string> stops = {"abca", "bb", "cab", "aaac"};
  for (int trial = 0; trial < 500; ++trial) {
    std::string text;
    const int len = 1 + static_cast<int>(gen() % 40);
    for (int i = 0; i < len; ++i) text += static_cast<char>('a' + gen() % 3);
    const Run whole = FeedAll(stops, {text});
    std::vector<std::string> bytes;
    for (char c : text) bytes.push_back(std::string(1, c));
    std::vector<std::string> chunks;
    for (size_t i = 0; i < text.size();) {
      const size_t n = 1 + gen() % 5;
      chunks.push_back(text.substr(i, n));
      i += n;
    }
    for (const auto& cut : {bytes, chunks}) {
      INFO(text);
      const Run run = FeedAll(stops, cut);
      CHECK(run.text == whole.text);
      CHECK(run.stopped == whole.stopped);
      CHECK(run.matched == whole.matched);
    }
    // Nothing emitted may contain a stop string, and without a stop all text comes out.
    for (const auto& s : stops) CHECK(whole.text.find(s) == std::string::npos);
    if (!whole.stopped) CHECK(whole.text == text);
    if (whole.stopped)
      CHECK(text.compare(whole.text.size(), whole.matched.size(), whole.matched) == 0);
  }
}

}  // namespace
}  // namespace arbor::engine
