#include "launcher/cli.h"

#include "test_helpers.h"

namespace ds::launcher {
namespace {

using Words = std::vector<std::string>;

TEST(CommandLine, DeepSpeedHabitAndProgramArgsUntouched) {
  CliOptions o = parse_command_line({"--num_gpus", "8", "./train", "--deepspeed_config", "ds.json", "--num_gpus", "1",
                                     "-H", "x", "a b"});
  EXPECT_EQ(o.num_gpus, 8);
  EXPECT_FALSE(o.hostfile_given);
  EXPECT_EQ(o.hostfile, "/job/hostfile");
  EXPECT_EQ(o.backend, Backend::openmpi);
  EXPECT_EQ(o.master_port, 29500);
  EXPECT_EQ(o.program, (Words{"./train", "--deepspeed_config", "ds.json", "--num_gpus", "1", "-H", "x", "a b"}));
}

TEST(CommandLine, AllFlags) {
  CliOptions o = parse_command_line({"-H", "hf", "-i", "w0@w1:0,2", "--num_nodes=2", "--num_accelerators", "4",
                                     "--num_procs", "3", "--master_addr", "10.0.0.1", "--master_port", "1234",
                                     "--launcher", "SLURM", "--launcher_args", "--mpi=pmix", "--dry-run", "--no_python",
                                     "--", "-weird-program", "x"});
  EXPECT_TRUE(o.hostfile_given);
  EXPECT_EQ(o.hostfile, "hf");
  EXPECT_EQ(o.include, "w0@w1:0,2");
  EXPECT_EQ(o.num_nodes, 2);
  EXPECT_EQ(o.num_gpus, 4);
  EXPECT_EQ(o.num_procs, 3);
  EXPECT_EQ(o.master_addr, "10.0.0.1");
  EXPECT_EQ(o.master_port, 1234);
  EXPECT_EQ(o.backend, Backend::slurm);
  EXPECT_EQ(o.launcher_args, "--mpi=pmix");
  EXPECT_TRUE(o.dry_run);
  EXPECT_EQ(o.program, (Words{"-weird-program", "x"}));
  EXPECT_EQ(parse_command_line({"-e", "w1", "p"}).exclude, "w1");
  EXPECT_EQ(parse_command_line({"--launcher_args", "--mca btl tcp", "p"}).launcher_args, "--mca btl tcp");
}

TEST(CommandLine, Errors) {
  EXPECT_USAGE_ERROR(parse_command_line({"--num_gpu", "2", "p"}), "unrecognized arguments: --num_gpu");
  EXPECT_USAGE_ERROR(parse_command_line({"--num_gpus", "2"}), "the following arguments are required: PROGRAM");
  EXPECT_USAGE_ERROR(parse_command_line({}), "the following arguments are required: PROGRAM");
  EXPECT_USAGE_ERROR(parse_command_line({"--launcher", "pdsh", "p"}), "Unknown launcher pdsh");
  EXPECT_USAGE_ERROR(parse_command_line({"--master_port", "0", "p"}), "--master_port");
  EXPECT_USAGE_ERROR(parse_command_line({"--num_gpus", "two", "p"}), "--num_gpus");
}

TEST(CommandLine, Help) {
  CliOptions o = parse_command_line({"--help"});
  EXPECT_TRUE(o.help);
  EXPECT_NE(o.help_text.find("--include"), std::string::npos);
}

}  // namespace
}  // namespace ds::launcher
