// Errors of the launcher.
//
// UsageError: something the user asked for is wrong or impossible (a flag, the hostfile,
// --include/--exclude, an env file, a missing program or backend). dsrun prints its message and
// exits 2, the status argparse (and so DeepSpeed's `deepspeed` command) uses for usage errors.
// Messages keep DeepSpeed's wording where DeepSpeed has one, then say how to fix it.
#pragma once

#include <stdexcept>
#include <string>

namespace ds::launcher {

class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The exit status dsrun uses for every UsageError.
inline constexpr int kUsageExitCode = 2;

}  // namespace ds::launcher
