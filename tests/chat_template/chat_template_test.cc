#include "engine/chat_template/chat_template.h"

#include <pthread.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace arbor::engine {
namespace {

using Json = nlohmann::ordered_json;

Json Conversation() {
  return Json::parse(R"({
    "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>"})");
}

absl::StatusOr<std::string> RenderSource(const std::string& source, const Json& context,
                                         const ChatTemplateLimits& limits = {}) {
  auto tmpl = ChatTemplate::Parse(source, "t.jinja");
  if (!tmpl.ok()) return tmpl.status();
  return tmpl->Render(context, limits);
}

std::string Rendered(const std::string& source, const Json& context = Conversation()) {
  auto out = RenderSource(source, context);
  INFO(source << " -> " << out.status());
  REQUIRE(out.ok());
  return *out;
}

TEST_CASE("a simple chat template renders", "[chat_template]") {
  CHECK(Rendered("{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m['content'] }}"
                 "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}") ==
        "<s><user>hi<assistant>yo<assistant>");
}

TEST_CASE("parse errors name the template, line and column", "[chat_template][errors]") {
  struct Bad {
    std::string source;
    std::string prefix;  // name:line:col
    std::string mentions;
  };
  const std::vector<Bad> cases = {
      {"hello\n{{ x ", "t.jinja:2:1:", "not closed"},
      {"{% foo %}", "t.jinja:1:4:", "unknown tag 'foo'"},
      {"ok\n  {{ x | nofilter }}", "t.jinja:2:10:", "no filter named 'nofilter'"},
      {"{{ x is notatest }}", "t.jinja:1:9:", "no test named 'notatest'"},
      {"{{ 1 + }}", "t.jinja:1:8:", "unexpected end of print statement"},
      {"{{ (1, 2 }}", "t.jinja:1:10:", "unexpected '}'"},
      {"{% for x in y %}\nabc", "t.jinja:2:4:", "'for' block opened at line 1:4 is not closed"},
      {"{% if x %}{% endfor %}", "t.jinja:1:14:", "unknown tag 'endfor'"},
      {"{% include 'other.jinja' %}", "t.jinja:1:4:", "tag 'include' is not supported"},
      {"{% extends 'base' %}", "t.jinja:1:4:", "tag 'extends' is not supported"},
      {"{% import 'm' as m %}", "t.jinja:1:4:", "tag 'import' is not supported"},
      {"{% call foo() %}{% endcall %}", "t.jinja:1:4:", "tag 'call' is not supported"},
      {"{{ 'abc }}", "t.jinja:1:4:", "unterminated string"},
      {"a\nb\n    {{ $x }}", "t.jinja:3:8:", "unexpected character '$'"},
      {"{% break %}", "t.jinja:1:4:", "'break' outside of a loop"},
      {"x {# never closed", "t.jinja:1:3:", "Missing end of comment tag"},
      {"{% for x in y recursive %}{% endfor %}", "t.jinja:1:15:", "recursive loops"},
      {"{% set 1 = 2 %}", "t.jinja:1:8:", "can't assign"},
      {"{{ f(a=1, 2) }}", "t.jinja:1:5:", "invalid syntax for function call"},
      {"{{ f(*args) }}", "t.jinja:1:6:", "*args and **kwargs"},
      {"{% macro m(a=1, b) %}{% endmacro %}", "t.jinja:1:17:", "non-default argument"},
      {"{{ x is defined is defined }}", "t.jinja:1:17:", "cannot chain multiple tests"},
      {"{% raw %} never ended", "t.jinja:1:10:", "Missing end of raw directive"},
      {"{{ 99999999999999999999 }}", "t.jinja:1:4:", "integer literal too large"},
      {"{{ '\\x4' }}", "t.jinja:1:5:", "truncated \\x escape"},
  };
  for (const Bad& b : cases) {
    auto tmpl = ChatTemplate::Parse(b.source, "t.jinja");
    INFO(b.source << " -> " << tmpl.status());
    REQUIRE_FALSE(tmpl.ok());
    CHECK(tmpl.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(tmpl.status().message()), Catch::StartsWith(b.prefix));
    CHECK_THAT(std::string(tmpl.status().message()), Catch::Contains(b.mentions));
  }
}

TEST_CASE("a template that is not UTF-8 is refused at parse", "[chat_template][errors]") {
  auto tmpl = ChatTemplate::Parse("ok \xff\xfe", "t.jinja");
  REQUIRE_FALSE(tmpl.ok());
  CHECK_THAT(std::string(tmpl.status().message()), Catch::Contains("not valid UTF-8 (byte 3)"));
}

TEST_CASE("raise_exception gives exactly its message", "[chat_template][errors]") {
  auto out = RenderSource(
      "{% if messages[0].role != 'system' %}"
      "{{ raise_exception('Conversation must start with a system message, got ' ~ "
      "messages[0].role) }}{% endif %}",
      Conversation());
  REQUIRE_FALSE(out.ok());
  CHECK(out.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(IsChatTemplateRaise(out.status()));
  CHECK(out.status().message() == "Conversation must start with a system message, got user");
}

TEST_CASE("render errors carry the template position", "[chat_template][errors]") {
  struct Bad {
    std::string source;
    std::string prefix;
    std::string mentions;
  };
  const std::vector<Bad> cases = {
      {"{{ nothere.attr }}", "t.jinja:1:", "'nothere' is undefined"},
      {"line\n{{ messages[0].content.nope.deeper }}", "t.jinja:2:", "has no attribute 'nope'"},
      {"{{ 'a' + 1 }}", "t.jinja:1:", "can only concatenate str"},
      {"{{ 1 / 0 }}", "t.jinja:1:", "division by zero"},
      {"{{ messages | length + none }}", "t.jinja:1:", "unsupported operand"},
      {"{{ undefined_fn() }}", "t.jinja:1:", "'undefined_fn' is undefined"},
      {"{% for x in none %}{% endfor %}", "t.jinja:1:", "not iterable"},
      {"{% set a, b = [1] %}", "t.jinja:1:", "not enough values to unpack"},
      {"{{ messages | selectattr('role') | length }}", "t.jinja:1:", "has no len()"},
      {"{{ ''.__class__.__mro__ }}", "t.jinja:1:", "has no attribute '__class__'"},
      {"{{ messages.append(1) }}", "t.jinja:1:", "has no attribute 'append'"},
      {"{{ lipsum() }}", "t.jinja:1:", "'lipsum' is undefined"},
      {"{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", "t.jinja:1:", "takes not more than 1"},
      {"{{ 2 ** 64 }}", "t.jinja:1:", "integer overflow"},
      {"{{ x | tojson }}", "t.jinja:1:", "Undefined is not JSON serializable"},
  };
  for (const Bad& b : cases) {
    auto out = RenderSource(b.source, Conversation());
    INFO(b.source << " -> " << out.status());
    REQUIRE_FALSE(out.ok());
    CHECK(out.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_FALSE(IsChatTemplateRaise(out.status()));
    CHECK_THAT(std::string(out.status().message()), Catch::StartsWith(b.prefix));
    CHECK_THAT(std::string(out.status().message()), Catch::Contains(b.mentions));
  }
}

TEST_CASE("undefined follows Jinja: prints empty, tests false, reaching into it fails",
          "[chat_template]") {
  CHECK(Rendered("[{{ nothere }}][{{ nothere is defined }}][{{ nothere | default('d') }}]"
                 "[{{ nothere | length }}][{% for x in nothere %}x{% endfor %}]"
                 "[{{ messages[0].nope is defined }}][{{ messages[9] is defined }}]") ==
        "[][False][d][0][][False][False]");
}

TEST_CASE("newlines are normalised and one trailing newline dropped, as Jinja does",
          "[chat_template][whitespace]") {
  CHECK(Rendered("a\r\n{% if true %}\r\nb\r\n{% endif %}\r\nc\r\n") == "a\nb\nc");
  CHECK(Rendered("x\r{{ 'y' }}\r\rz\n") == "x\ny\n\nz");
  CHECK(Rendered("  {% if true %}\n  x\n  {% endif %}\n") == "  x\n");
}

TEST_CASE("scoping: loop bodies and macros are scopes, if is not", "[chat_template]") {
  CHECK(Rendered("{% for a in [1] %}{% set y = 2 %}{% endfor %}[{{ y }}]") == "[]");
  CHECK(Rendered("{% if true %}{% set y = 2 %}{% endif %}[{{ y }}]") == "[2]");
  CHECK(Rendered("{% set x = 5 %}{% for i in [1, 2] %}{{ x }}{% set x = i %}{{ x }}"
                 "{% endfor %}[{{ x }}]") == "5152[5]");
  CHECK(Rendered("{% set x = 5 %}{% macro m() %}{{ x }}{% endmacro %}{{ m() }}") == "5");
  CHECK(Rendered("{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}"
                 "{% endfor %}{{ ns.n }}") == "6");
}

TEST_CASE("context key order reaches tojson", "[chat_template]") {
  const std::string source = "{{ tool | tojson }}";
  Json ordered = Json::object();
  ordered["tool"] = Json::parse(R"({"name": "f", "description": "d", "args": {"z": 1, "a": 2}})");
  CHECK(Rendered(source, ordered) ==
        R"({"name": "f", "description": "d", "args": {"z": 1, "a": 2}})");
  // A plain nlohmann::json has sorted its keys before the template sees them.
  nlohmann::json sorted = nlohmann::json::object();
  sorted["tool"] = nlohmann::json::parse(R"({"name": "f", "args": {"z": 1, "a": 2}})");
  auto tmpl = ChatTemplate::Parse(source, "t.jinja");
  REQUIRE(tmpl.ok());
  auto out = tmpl->Render(sorted);
  REQUIRE(out.ok());
  CHECK(*out == R"({"args": {"a": 2, "z": 1}, "name": "f"})");
}

TEST_CASE("the context must be an object of JSON values", "[chat_template][errors]") {
  auto tmpl = ChatTemplate::Parse("x", "t.jinja");
  REQUIRE(tmpl.ok());
  CHECK_FALSE(tmpl->Render(Json::array()).ok());
  Json deep = Json::array();
  for (int i = 0; i < 300; ++i) deep = Json::array({deep});
  Json ctx = Json::object();
  ctx["deep"] = deep;
  auto out = tmpl->Render(ctx);
  REQUIRE_FALSE(out.ok());
  CHECK_THAT(std::string(out.status().message()), Catch::Contains("nests deeper"));
}

// ---- bounds (robustness case 11) ----

struct Bounded {
  std::string name;
  std::string source;
  absl::StatusCode code;
  std::string mentions;
};

TEST_CASE("templates that would run long, grow big or recurse deep fail fast and cleanly",
          "[chat_template][bounds]") {
  std::string deep_parens = "{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}";
  std::string deep_blocks;
  for (int i = 0; i < 500; ++i) deep_blocks += "{% if true %}";
  std::string long_chain = "{{ messages";
  for (int i = 0; i < 5000; ++i) long_chain += ".a";
  long_chain += " }}";
  std::string many_nots = "{{ " + std::string(20000, ' ');
  for (int i = 0; i < 3000; ++i) many_nots += "not ";
  many_nots += "1 }}";
  std::string long_sum = "{{ 1";
  for (int i = 0; i < 3000; ++i) long_sum += " + 1";
  long_sum += " }}";
  const auto kResource = absl::StatusCode::kResourceExhausted;
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  const std::vector<Bounded> cases = {
      {"nested loops",
       "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
       "{% endfor %}",
       kResource, "steps"},
      {"loop with break in the inner one never reached",
       "{% for i in range(100000) %}{% for j in range(100000) %}{% if j < 0 %}{% break %}"
       "{% endif %}{% endfor %}{% endfor %}",
       kResource, "steps"},
      {"range over the sandbox bound", "{{ range(1000000000) | length }}", kResource,
       "Range too big"},
      {"huge output", "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", kResource,
       "output exceeds"},
      {"string doubling",
       "{% set ns = namespace(s='x') %}{% for i in range(64) %}"
       "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
       kResource, "string"},
      {"string repetition", "{{ 'abc' * 9000000000000 }}", kResource, "string"},
      {"list repetition", "{{ ([1] * 1000000000) | length }}", kResource, "list"},
      {"replace blow-up", "{% set s = 'x' * 100000 %}{{ s | replace('', s) | length }}", kResource,
       "string"},
      {"macro recursion", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", kResource,
       "macro calls nested"},
      {"list nesting",
       "{% set ns = namespace(x=[]) %}{% for i in range(1000) %}"
       "{% set ns.x = [ns.x] %}{% endfor %}",
       kResource, "nested deeper"},
      {"namespace cycle", "{% set ns = namespace() %}{% set ns.me = ns %}", kInvalid,
       "namespace cannot hold another namespace"},
      {"quadratic concatenation",
       "{% set ns = namespace(s='') %}{% for i in range(100000) %}"
       "{% set ns.s = ns.s ~ 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' %}"
       "{% endfor %}",
       kResource, "budget"},
      {"deep parentheses", deep_parens, kInvalid, "nested too deeply"},
      {"deep blocks", deep_blocks, kInvalid, "nested deeper than"},
      {"long attribute chain", long_chain, kInvalid, "nested deeper than"},
      {"many nots", many_nots, kInvalid, "nested too deeply"},
      {"long sum", long_sum, kInvalid, "nested deeper than"},
  };
  for (const Bounded& b : cases) {
    INFO(b.name);
    const auto start = std::chrono::steady_clock::now();
    auto out = RenderSource(b.source, Conversation());
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    INFO(out.status() << " after " << seconds << " s");
    REQUIRE_FALSE(out.ok());
    CHECK(out.status().code() == b.code);
    CHECK_THAT(std::string(out.status().message()), Catch::Contains(b.mentions));
    CHECK(seconds < 3.0);
  }
}

// Runs `fn` on a thread with a `stack_bytes` stack.
void RunWithStack(size_t stack_bytes, std::function<void()> fn) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, stack_bytes);
  pthread_t thread;
  auto trampoline = [](void* arg) -> void* {
    (*static_cast<std::function<void()>*>(arg))();
    return nullptr;
  };
  REQUIRE(pthread_create(&thread, &attr, trampoline, &fn) == 0);
  pthread_join(thread, nullptr);
  pthread_attr_destroy(&attr);
}

TEST_CASE("the deepest templates parse and render on a 1 MiB stack", "[chat_template][bounds]") {
  std::string nested_lists = "{{ ";
  for (int i = 0; i < 70; ++i) nested_lists += "[";
  nested_lists += "1";
  for (int i = 0; i < 70; ++i) nested_lists += "]";
  nested_lists += " | length }}";
  std::string long_sum = "{{ 1";
  for (int i = 0; i < 150; ++i) long_sum += " + 1";
  long_sum += " }}";
  std::string deep_blocks;
  for (int i = 0; i < 31; ++i) deep_blocks += "{% for i in [1] %}{% if true %}";
  deep_blocks += "x";
  for (int i = 0; i < 31; ++i) deep_blocks += "{% endif %}{% endfor %}";
  struct Deep {
    std::string source;
    int call_depth;
    bool ok;
  };
  const std::vector<Deep> cases = {
      {nested_lists, 32, true},
      {long_sum, 32, true},
      {deep_blocks, 32, true},
      {"{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}", 32, false},
      // Recursion up to the native bound, with the macro-depth limit out of the way.
      {"{% macro f(n) %}{% for i in [1] %}{% if n > 0 %}{% set y = f(n - 1) %}{{ y }}"
       "{% endif %}{% endfor %}{% endmacro %}{{ f(100000) }}",
       1000000, false},
      {"{% macro f(n) %}{{ f(n - 1) | upper | trim | replace('a', 'b') }}{% endmacro %}"
       "{{ f(100000) }}",
       1000000, false},
  };
  for (const Deep& d : cases) {
    INFO(d.source.substr(0, 120));
    absl::Status status;
    RunWithStack(size_t{1} << 20, [&] {
      ChatTemplateLimits limits;
      limits.max_call_depth = d.call_depth;
      auto out = RenderSource(d.source, Conversation(), limits);
      status = out.status();
    });
    INFO(status);
    CHECK(status.ok() == d.ok);
  }
}

TEST_CASE("limits are the caller's to set", "[chat_template][bounds]") {
  ChatTemplateLimits small;
  small.max_output_bytes = 10;
  auto out = RenderSource("{{ 'x' * 11 }}", Conversation(), small);
  REQUIRE_FALSE(out.ok());
  CHECK(out.status().code() == absl::StatusCode::kResourceExhausted);
  small.max_output_bytes = 11;
  out = RenderSource("{{ 'x' * 11 }}", Conversation(), small);
  REQUIRE(out.ok());
  CHECK(*out == "xxxxxxxxxxx");

  ChatTemplateLimits few_steps;
  few_steps.max_steps = 50;
  out = RenderSource("{% for i in range(100) %}{{ i }}{% endfor %}", Conversation(), few_steps);
  REQUIRE_FALSE(out.ok());
  CHECK_THAT(std::string(out.status().message()), Catch::Contains("50 steps"));

  ChatTemplateLimits no_recursion;
  no_recursion.max_call_depth = 1;
  out =
      RenderSource("{% macro f() %}a{% endmacro %}{% macro g() %}{{ f() }}{% endmacro %}{{ g() }}",
                   Conversation(), no_recursion);
  REQUIRE_FALSE(out.ok());
}

TEST_CASE("a parsed template renders from many threads at once", "[chat_template]") {
  auto tmpl = ChatTemplate::Parse(
      "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
      "{{ m.role }}:{{ m.content | upper }};{% endfor %}{{ ns.n }}",
      "t.jinja");
  REQUIRE(tmpl.ok());
  const Json context = Conversation();
  std::vector<std::string> results(8);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < results.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        auto out = tmpl->Render(context);
        results[t] = out.ok() ? *out : std::string(out.status().message());
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& r : results) CHECK(r == "user:HI;assistant:YO;2");
}

}  // namespace
}  // namespace arbor::engine
