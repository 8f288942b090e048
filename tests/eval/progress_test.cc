// eval/progress.h: the line it draws, in place on a terminal, and nothing before its period in a
// log.
#include "eval/progress.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <sstream>
#include <string>

namespace arbor::eval {
namespace {

TEST_CASE("progress lines") {
  std::ostringstream out;
  Progress tty(out, /*tty=*/true, "documents", 40);
  CHECK(tty.Line(10, 500, absl::Seconds(5)) ==
        "[#######-----------------------] 10/40 documents  100 tok/s  0:15 left");
  CHECK(tty.Line(40, 500, absl::Seconds(65)) ==
        "[##############################] 40/40 documents  8 tok/s  1:05");
  Progress log(out, /*tty=*/false, "problems", 3);
  CHECK(log.Line(1, 0, absl::Seconds(2)) == "1/3 problems  0 tok/s  0:04 left");
  CHECK(log.Line(0, 0, absl::ZeroDuration()) == "0/3 problems  0:00");
}

TEST_CASE("a terminal gets the bar at once and in place; a log one line at the end") {
  std::ostringstream tty_out;
  Progress tty(tty_out, true, "documents", 2);
  tty.Update(1, 10);
  CHECK(tty_out.str().rfind("\r[", 0) == 0);
  tty.Finish();
  CHECK(tty_out.str().back() == '\n');

  std::ostringstream log_out;
  Progress log(log_out, false, "documents", 2);
  log.Update(1, 10);
  log.Update(2, 20);
  CHECK(log_out.str().empty());  // the first line comes after 10 s
  log.Finish();
  log.Finish();  // once
  const std::string text = log_out.str();
  CHECK(text.rfind("2/2 documents", 0) == 0);
  CHECK(text.find('\r') == std::string::npos);
  CHECK(std::count(text.begin(), text.end(), '\n') == 1);
}

}  // namespace
}  // namespace arbor::eval
