// libFuzzer target for the config parser (built with -DDS_FUZZ=ON and clang). Arbitrary bytes go
// to parse_config_text and to both one-section parsers. Invariants checked on every input:
//  - no exception escapes parse_config_text; the section parsers throw nothing but ConfigError;
//  - a rejected input has at least one error, and every error and warning has a message;
//  - an accepted config round-trips: to_json_text parses back without errors to the same text.
// Any violation aborts with the offending detail on stderr, which libFuzzer reports as a crash.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>

#include "engine/config/ds_config.h"

namespace {

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "ds_config_fuzz invariant violated: %s\n%s\n", what, detail.c_str());
  std::abort();
}

void check_issues(const ds::ConfigParseResult& r) {
  for (const ds::ConfigIssue& e : r.errors) {
    if (e.message.empty()) fail("an error without a message", e.path);
  }
  for (const ds::ConfigIssue& w : r.warnings) {
    if (w.message.empty()) fail("a warning without a message", w.path);
  }
}

void check_config(std::string_view text, int world_size) {
  ds::ConfigParseResult r;
  try {
    r = ds::parse_config_text(text, world_size);
  } catch (const std::exception& e) {
    fail("parse_config_text threw", e.what());
  }
  check_issues(r);
  if (!r.ok()) return;
  const std::string once = ds::to_json_text(r.config);
  ds::ConfigParseResult again = ds::parse_config_text(once, world_size);
  check_issues(again);
  if (!again.ok()) fail("the resolved config does not parse back", once + "\nfirst error: " + again.errors[0].format());
  const std::string twice = ds::to_json_text(again.config);
  if (twice != once) fail("the resolved config does not round-trip", once + "\n---\n" + twice);
}

template <typename F>
void check_section(F parse, std::string_view text) {
  try {
    parse(text);
  } catch (const ds::ConfigError& e) {
    if (e.issues().empty()) fail("ConfigError without issues", e.what());
    for (const ds::ConfigIssue& i : e.issues()) {
      if (i.message.empty()) fail("a section error without a message", i.path);
    }
  } catch (const std::exception& e) {
    fail("a section parser threw something other than ConfigError", e.what());
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // The section parsers print their warnings to std::cerr; mute that stream (not stderr itself, which
  // libFuzzer and fail() write to) so the fuzzer's output stays readable.
  std::cerr.rdbuf(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  check_config(text, 1);
  check_config(text, 8);  // the batch triple resolves differently with more ranks
  check_section(ds::parse_sparse_attention_section, text);
  check_section(ds::parse_transformer_kernel_section, text);
  return 0;
}
