// Helpers shared by the config tests: parse a text and look for a problem by path and message.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "engine/config/ds_config.h"

namespace ds::test {

inline ConfigParseResult parse(const std::string& text, int world_size = 1) {
  return parse_config_text(text, world_size);
}

// A config with a valid batch setting plus `body` (more top-level members, or "").
inline std::string with_batch(const std::string& body) {
  return "{\"train_batch_size\": 8" + (body.empty() ? std::string() : ", " + body) + "}";
}

inline std::string issues_text(const ConfigParseResult& r) {
  std::string s;
  for (const ConfigIssue& e : r.errors) s += "  error: " + e.format() + "\n";
  for (const ConfigIssue& w : r.warnings) s += "  warning: " + w.format() + "\n";
  return s.empty() ? "  (no issues)\n" : s;
}

inline int count_at(const std::vector<ConfigIssue>& v, const std::string& path, const std::string& part) {
  int n = 0;
  for (const ConfigIssue& i : v) {
    if (i.path == path && i.message.find(part) != std::string::npos) ++n;
  }
  return n;
}

// An error at exactly `path` whose message contains `part`.
inline ::testing::AssertionResult HasError(const ConfigParseResult& r, const std::string& path, const std::string& part) {
  if (count_at(r.errors, path, part) > 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "no error at \"" << path << "\" containing \"" << part << "\"; got:\n"
                                       << issues_text(r);
}

inline ::testing::AssertionResult HasWarning(const ConfigParseResult& r, const std::string& path, const std::string& part) {
  if (count_at(r.warnings, path, part) > 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "no warning at \"" << path << "\" containing \"" << part << "\"; got:\n"
                                       << issues_text(r);
}

// Parses and requires success.
inline DeepSpeedConfig ok(const std::string& text, int world_size = 1) {
  ConfigParseResult r = parse(text, world_size);
  EXPECT_TRUE(r.ok()) << "config:\n" << text << "\nissues:\n" << issues_text(r);
  return r.config;
}

}  // namespace ds::test
