#include "launcher/hostfile.h"

#include "test_helpers.h"

namespace ds::launcher {
namespace {

TEST(Hostfile, HostsInOrderWithCommentsBlankLinesAndExtras) {
  ResourcePool pool = parse_hostfile(
      "# cluster\n"
      "\n"
      "worker-1 slots=4\n"
      "   worker-0\tslots=8   \r\n"
      "worker-2 slots=2 max_slots=2\n"
      "worker-3 slots=16# trailing comment\n"
      "  # indented comment\n"
      "worker-4 slots=0");
  ASSERT_EQ(pool.size(), 5u);
  EXPECT_EQ(pool[0].host, "worker-1");
  EXPECT_EQ(pool[0].slots, 4);
  EXPECT_EQ(pool[1].host, "worker-0");
  EXPECT_EQ(pool[1].slots, 8);
  EXPECT_EQ(pool[2].slots, 2);
  EXPECT_EQ(pool[3].slots, 16);
  EXPECT_EQ(pool[4].host, "worker-4");
  EXPECT_EQ(pool[4].slots, 0);
}

TEST(Hostfile, BadEntriesNameTheLine) {
  for (const char* line : {"worker-0", "worker-0 slots=", "worker-0 slots=4x", "worker-0 slot=4", "slots=4",
                           "worker-0 slots=-1", "worker-0 slots=99999999999"}) {
    SCOPED_TRACE(line);
    EXPECT_USAGE_ERROR(parse_hostfile(std::string("ok slots=1\n") + line + "\n"),
                       std::string("Hostfile contains a bad entry: ") + line + ", unable to proceed with launching (line 2");
  }
}

TEST(Hostfile, DuplicateHost) {
  EXPECT_USAGE_ERROR(parse_hostfile("a slots=1\nb slots=2\na slots=3\n"),
                     "Hostfile contains multiple entries for a, unable to proceed with launching (line 3");
}

TEST(Hostfile, EmptyOrOnlyComments) {
  for (const char* text : {"", "\n\n", "# a\n   # b\n"}) {
    EXPECT_USAGE_ERROR(parse_hostfile(text), "Hostfile is empty or not formatted correctly, unable to proceed with launching.");
  }
}

TEST(Hostfile, UnreadableFileNamesThePath) {
  EXPECT_USAGE_ERROR(read_hostfile("/nonexistent/dsrun/hostfile"), "Unable to read hostfile /nonexistent/dsrun/hostfile");
}

}  // namespace
}  // namespace ds::launcher
