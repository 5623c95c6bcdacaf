#include "launcher/shell.h"

#include "test_helpers.h"

namespace ds::launcher {
namespace {

using Words = std::vector<std::string>;

// Expected values are Python's shlex.split on the same strings.
TEST(ShlexSplit, MatchesPythonShlex) {
  EXPECT_EQ(shlex_split("--mca btl tcp,self  -x FOO"), (Words{"--mca", "btl", "tcp,self", "-x", "FOO"}));
  EXPECT_EQ(shlex_split("a\"b c\"d"), (Words{"ab cd"}));
  EXPECT_EQ(shlex_split("'it'\\''s'"), (Words{"it's"}));
  EXPECT_EQ(shlex_split("\"a \\\" b \\$x \\\\\""), (Words{"a \" b \\$x \\"}));
  EXPECT_EQ(shlex_split("x \"\" y ''"), (Words{"x", "", "y", ""}));
  EXPECT_EQ(shlex_split("a\\ b"), (Words{"a b"}));
  EXPECT_EQ(shlex_split("  \t\n "), Words{});
  EXPECT_EQ(shlex_split(""), Words{});
}

TEST(ShlexSplit, Errors) {
  EXPECT_USAGE_ERROR(shlex_split("\"unterminated"), "No closing quotation");
  EXPECT_USAGE_ERROR(shlex_split("'unterminated"), "No closing quotation");
  EXPECT_USAGE_ERROR(shlex_split("end\\"), "No escaped character");
}

TEST(ShellQuote, SafeWordsStayAndOthersRoundTrip) {
  EXPECT_EQ(shell_quote("--deepspeed_config=ds.json"), "--deepspeed_config=ds.json");
  EXPECT_EQ(shell_quote("/a/b:c,d@e%f+g"), "/a/b:c,d@e%f+g");
  EXPECT_EQ(shell_quote(""), "''");
  EXPECT_EQ(shell_quote("a b"), "'a b'");
  EXPECT_EQ(shell_quote("it's"), "'it'\"'\"'s'");
  const Words words = {"", "a b", "it's", "\"q\"", "$HOME", "*", "back\\slash", "new\nline", "tab\there", "^openib"};
  EXPECT_EQ(shlex_split(shell_join(words)), words);
}

}  // namespace
}  // namespace ds::launcher
