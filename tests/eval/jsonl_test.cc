// eval/jsonl.h and the readers over it: records with their line numbers, and every kind of bad
// input refused with the file, the line and the field named.
#include "eval/jsonl.h"

#include <catch2/catch.hpp>
#include <string>

#include "eval/reasoning.h"
#include "tests/eval/reference.h"

namespace arbor::eval {
namespace {

using testing::WriteTempFile;

std::string Message(const absl::Status& s) { return std::string(s.message()); }

TEST_CASE("records keep their line numbers; blank lines are skipped; limit") {
  const std::string path = WriteTempFile(
      "ok.jsonl", "{\"text\": \"a\"}\n\n  \n{\"text\": \"b\", \"x\": 1}\r\n{\"text\": \"c\"}");
  auto all = ReadJsonl(path);
  REQUIRE(all.ok());
  REQUIRE(all->size() == 3);
  CHECK((*all)[0].line == 1);
  CHECK((*all)[1].line == 4);
  CHECK((*all)[2].line == 5);
  CHECK((*all)[1].Where() == path + ":4");
  CHECK(*(*all)[1].String("text") == "b");
  CHECK(*(*all)[1].Integer("x") == 1);
  auto two = ReadJsonl(path, 2);
  REQUIRE(two.ok());
  CHECK(two->size() == 2);
}

TEST_CASE("bad files are refused, naming the file and the line") {
  SECTION("missing") {
    auto r = ReadJsonl("/nonexistent/dir/x.jsonl");
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == absl::StatusCode::kNotFound);
    CHECK_THAT(Message(r.status()), Catch::StartsWith("/nonexistent/dir/x.jsonl: cannot read"));
  }
  SECTION("empty") {
    const std::string path = WriteTempFile("empty.jsonl", "");
    auto r = ReadJsonl(path);
    REQUIRE_FALSE(r.ok());
    CHECK(Message(r.status()) == path + ": no records (the file is empty)");
  }
  SECTION("only blank lines") {
    CHECK_FALSE(ReadJsonl(WriteTempFile("blank.jsonl", "\n \n\t\n")).ok());
  }
  SECTION("not JSON") {
    const std::string path = WriteTempFile("bad.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\"\n");
    auto r = ReadJsonl(path);
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(Message(r.status()), Catch::StartsWith(path + ":2: not valid JSON"));
  }
  SECTION("not an object") {
    const std::string path = WriteTempFile("array.jsonl", "[1, 2]\n");
    auto r = ReadJsonl(path);
    REQUIRE_FALSE(r.ok());
    CHECK(Message(r.status()) == path + ":1: expected a JSON object, got array");
  }
  SECTION("a key twice") {
    const std::string path = WriteTempFile("dup.jsonl", "{\"text\": \"a\", \"text\": \"b\"}\n");
    auto r = ReadJsonl(path);
    REQUIRE_FALSE(r.ok());
    CHECK(Message(r.status()) == path + ":1: field \"text\" appears twice");
  }
}

TEST_CASE("fields: missing or of the wrong type") {
  const std::string path = WriteTempFile("fields.jsonl", "{\"text\": 5, \"answer\": \"12\"}\n");
  auto r = ReadJsonl(path);
  REQUIRE(r.ok());
  const JsonlRecord& rec = (*r)[0];
  CHECK(Message(rec.String("prompt").status()) == path + ":1: missing field \"prompt\"");
  CHECK(Message(rec.String("text").status()) ==
        path + ":1: field \"text\" must be a string, got number");
  CHECK(Message(rec.Integer("answer").status()) ==
        path + ":1: field \"answer\" must be an integer, got \"12\"");
}

TEST_CASE("arithmetic problems: prompt and answer checked") {
  const std::string ok = WriteTempFile(
      "arith.jsonl",
      "{\"problem\": \"Start with 7. Add 5.\", \"prompt\": \"Problem: Start with 7. Add 5.\\n"
      "Solution:\\n\", \"answer\": 12, \"start\": 7, \"ops\": [[\"+\", 5]]}\n"
      "{\"prompt\": \"p\", \"answer\": -4}\n");
  auto problems = ReadArithProblems(ok);
  REQUIRE(problems.ok());
  REQUIRE(problems->size() == 2);
  CHECK((*problems)[0].answer == 12);
  CHECK((*problems)[0].prompt == "Problem: Start with 7. Add 5.\nSolution:\n");
  CHECK((*problems)[1].answer == -4);
  CHECK((*problems)[1].where == ok + ":2");
  CHECK(ReadArithProblems(ok, 1)->size() == 1);

  const std::string no_answer = WriteTempFile("noanswer.jsonl", "{\"prompt\": \"p\"}\n");
  CHECK(Message(ReadArithProblems(no_answer).status()) ==
        no_answer + ":1: missing field \"answer\"");
  const std::string real = WriteTempFile("real.jsonl", "{\"prompt\": \"p\", \"answer\": 1.5}\n");
  CHECK(Message(ReadArithProblems(real).status()) ==
        real + ":1: field \"answer\" must be an integer, got 1.5");
  const std::string empty =
      WriteTempFile("emptyprompt.jsonl", "{\"prompt\": \"\", \"answer\": 1}\n");
  CHECK(Message(ReadArithProblems(empty).status()) == empty + ":1: field \"prompt\" is empty");
}

}  // namespace
}  // namespace arbor::eval
