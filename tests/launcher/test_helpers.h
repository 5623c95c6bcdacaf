// Shared by the launcher unit tests: expect a UsageError whose message holds a given text.
#pragma once

#include <gtest/gtest.h>

#include "launcher/errors.h"

#define EXPECT_USAGE_ERROR(statement, text)                                                      \
  do {                                                                                           \
    try {                                                                                        \
      statement;                                                                                 \
      ADD_FAILURE() << "no UsageError from " #statement;                                         \
    } catch (const ::ds::launcher::UsageError& e) {                                              \
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << "message: " << e.what(); \
    }                                                                                            \
  } while (0)
