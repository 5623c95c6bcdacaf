// Shell words in and out: --launcher_args is split like Python's shlex.split (DeepSpeed splits it
// that way), and --dry-run prints commands quoted so that they can be pasted into a POSIX shell.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ds::launcher {

// POSIX shlex.split: whitespace separates words; '...' is literal; "..." keeps \" and \\ escapes;
// a backslash outside quotes escapes the next character; '' and "" give empty words.
// Throws UsageError("No closing quotation") / ("No escaped character") like shlex.
std::vector<std::string> shlex_split(std::string_view s);

// One word for a POSIX shell: unchanged when it has only safe characters, else single-quoted.
std::string shell_quote(std::string_view word);

// Words quoted and joined with spaces.
std::string shell_join(const std::vector<std::string>& words);

}  // namespace ds::launcher
