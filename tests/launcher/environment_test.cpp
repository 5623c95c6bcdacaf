#include "launcher/environment.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "test_helpers.h"

namespace ds::launcher {
namespace {

TEST(ForwardedEnvironment, DeepSpeedPrefixesSortedByName) {
  EnvList environ = {{"PATH", "/bin"},       {"NCCL_IB_DISABLE", "1"}, {"UCX_TLS", "tcp"}, {"PYTHONPATH", "/x"},
                     {"MV2_USE_CUDA", "1"},  {"HOME", "/root"},        {"NCCL_DEBUG", "INFO"}, {"XNCCL", "no"}};
  EnvList got = forwarded_environment(environ);
  EnvList want = {{"MV2_USE_CUDA", "1"}, {"NCCL_DEBUG", "INFO"}, {"NCCL_IB_DISABLE", "1"}, {"PYTHONPATH", "/x"},
                  {"UCX_TLS", "tcp"}};
  EXPECT_EQ(got, want);
}

TEST(EnvList, SetReplacesInPlace) {
  EnvList env;
  env_set(&env, "A", "1");
  env_set(&env, "B", "2");
  env_set(&env, "A", "3");
  EXPECT_EQ(env, (EnvList{{"A", "3"}, {"B", "2"}}));
  ASSERT_NE(env_get(env, "B"), nullptr);
  EXPECT_EQ(*env_get(env, "B"), "2");
  EXPECT_EQ(env_get(env, "C"), nullptr);
}

TEST(EnvFile, LinesCommentsAndVerbatimValues) {
  std::vector<std::string> warnings;
  EnvList env = parse_env_file(
      "# comment\n\nNCCL_SOCKET_IFNAME=eth0\r\n  PADDED = keeps value spaces \nURL=http://x?a=b\nEMPTY=\nNCCL_SOCKET_IFNAME=ib0",
      "f", &warnings);
  EnvList want = {{"NCCL_SOCKET_IFNAME", "ib0"}, {"PADDED", " keeps value spaces "}, {"URL", "http://x?a=b"}, {"EMPTY", ""}};
  EXPECT_EQ(env, want);
  EXPECT_TRUE(warnings.empty());
}

TEST(EnvFile, BadLinesAndReservedNames) {
  EXPECT_USAGE_ERROR(parse_env_file("A=1\nno equals sign\n", "/home/u/.deepspeed_env", nullptr),
                     "/home/u/.deepspeed_env:2: bad entry 'no equals sign'");
  EXPECT_USAGE_ERROR(parse_env_file("1BAD=x\n", "f", nullptr), "f:1: bad entry '1BAD=x'");
  EXPECT_USAGE_ERROR(parse_env_file("=x\n", "f", nullptr), "f:1: bad entry");
  std::vector<std::string> warnings;
  EnvList env = parse_env_file("RANK=3\nCUDA_VISIBLE_DEVICES=0\nOK=1\n", "f", &warnings);
  EXPECT_EQ(env, (EnvList{{"OK", "1"}}));
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_NE(warnings[0].find("f:1: RANK is set by dsrun"), std::string::npos) << warnings[0];
}

TEST(EnvFilePaths, DeepSpeedLookupAndDsEnvFile) {
  auto paths = env_file_paths(nullptr, "/home/u", "/work");
  ASSERT_EQ(paths.size(), 2u);
  EXPECT_EQ(paths[0].path, "/home/u/.deepspeed_env");
  EXPECT_EQ(paths[1].path, "/work/.deepspeed_env");
  EXPECT_FALSE(paths[0].required);
  paths = env_file_paths("my_env", "/home/u", "/work");
  EXPECT_EQ(paths[1].path, "/work/my_env");
  paths = env_file_paths("/etc/cluster.env", "/home/u", "/work");
  ASSERT_EQ(paths.size(), 1u);
  EXPECT_EQ(paths[0].path, "/etc/cluster.env");
  EXPECT_TRUE(paths[0].required);
  EXPECT_EQ(env_file_paths(nullptr, "/home/u", "/home/u").size(), 1u);
  EXPECT_EQ(env_file_paths("", "", "/work").size(), 1u);
}

TEST(LoadEnvFiles, LaterFilesWinAndARequiredFileMustExist) {
  char dir_template[] = "/tmp/dsrun_env_XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  std::ofstream(dir + "/home") << "A=home\nB=home\n";
  std::ofstream(dir + "/cwd") << "B=cwd\n";
  EnvList env = load_env_files({{dir + "/home", false}, {dir + "/missing", false}, {dir + "/cwd", false}}, nullptr);
  EXPECT_EQ(env, (EnvList{{"A", "home"}, {"B", "cwd"}}));
  EXPECT_USAGE_ERROR(load_env_files({{dir + "/missing", true}}, nullptr), "DS_ENV_FILE=" + dir + "/missing: no such file");
  std::remove((dir + "/home").c_str());
  std::remove((dir + "/cwd").c_str());
  ::rmdir(dir.c_str());
}

}  // namespace
}  // namespace ds::launcher
