// The ds_config command: exit status, stdout (the resolved JSON) and the stderr lines, on the
// shipped configs and on the deliberately broken files in tests/config/data/.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

struct CliRun {
  int status = -1;
  std::string out, err;
  std::vector<std::string> err_lines() const {
    std::vector<std::string> lines;
    std::istringstream in(err);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    return lines;
  }
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

CliRun run_ds_config(const std::string& args) {
  const fs::path dir = fs::path(testing::TempDir());
  const fs::path out = dir / "ds_config_cli.out", err = dir / "ds_config_cli.err";
  const std::string cmd = std::string("'") + DS_CONFIG_BIN + "' " + args + " >'" + out.string() + "' 2>'" + err.string() + "'";
  int raw = std::system(cmd.c_str());
  CliRun r;
  r.status = (raw != -1 && WIFEXITED(raw)) ? WEXITSTATUS(raw) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

std::string src(const std::string& rel) { return std::string("'") + DS_SOURCE_DIR + "/" + rel + "'"; }

bool has_line(const CliRun& r, const std::string& line) {
  for (const std::string& l : r.err_lines()) {
    if (l == line) return true;
  }
  return false;
}

// Every stderr line is "error: <path>: <message>" or "warning: <path>: <message>".
void expect_problem_lines(const CliRun& r) {
  for (const std::string& l : r.err_lines()) {
    EXPECT_TRUE(l.rfind("error: ", 0) == 0 || l.rfind("warning: ", 0) == 0) << l;
  }
}

TEST(ConfigCli, ShippedConfigsAreValid) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(std::string(DS_SOURCE_DIR) + "/configs")) {
    const std::string name = e.path().filename().string();
    if (e.path().extension() != ".json" || name.rfind("ds_", 0) != 0) continue;
    for (const char* world : {"", " --world-size 8", " --world-size=16"}) {
      CliRun r = run_ds_config("'" + e.path().string() + "'" + world);
      EXPECT_EQ(r.status, 0) << name << world << "\n" << r.err;
      EXPECT_EQ(r.err, "") << name << world;
      nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
      ASSERT_FALSE(j.is_discarded()) << r.out;
      EXPECT_TRUE(j.contains("gradient_accumulation_steps")) << name;
    }
    ++n;
  }
  EXPECT_GE(n, 5);
}

TEST(ConfigCli, ResolvesTheBatchAgainstTheWorldSize) {
  CliRun r = run_ds_config(src("configs/ds_bert_seq128_lamb.json") + " --world-size 8");
  ASSERT_EQ(r.status, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["gradient_accumulation_steps"], 128);  // 65536 / (64 x 8)
  EXPECT_EQ(j["optimizer"]["params"]["max_coeff"], 0.3);
  EXPECT_EQ(j["optimizer"]["params"]["betas"], nlohmann::json({0.9, 0.999}));

  r = run_ds_config(src("configs/ds_bert_seq128_lamb.json") + " --world-size 3");
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.out, "");
  EXPECT_TRUE(has_line(r, "error: train_batch_size: train_batch_size 65536 != micro 64 x accumulation 341 x world 3 = 65472 "
                          "(gradient_accumulation_steps = 65536 // 64 // 3 = 341); train_batch_size must be a multiple of "
                          "micro x world = 192"))
      << r.err;
}

TEST(ConfigCli, SparseAttentionWithKernelIsRefused) {
  CliRun r = run_ds_config(src("tests/config/data/both_sparse_and_kernel.json"));
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.out, "");
  EXPECT_TRUE(has_line(r, "error: transformer_kernel: \"sparse_attention\" and an enabled \"transformer_kernel\" cannot be "
                          "used together: the transformer kernel computes dense attention. Disable one: remove "
                          "\"sparse_attention\", or set \"transformer_kernel\": {\"enabled\": false}"))
      << r.err;
  expect_problem_lines(r);
}

TEST(ConfigCli, TypoGetsTheSuggestion) {
  CliRun r = run_ds_config(src("tests/config/data/typo_gradient_acumulation_steps.json"));
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(has_line(r, "error: gradient_acumulation_steps: unknown key \"gradient_acumulation_steps\"; did you mean "
                          "\"gradient_accumulation_steps\"?"))
      << r.err;
  EXPECT_EQ(r.err_lines().size(), 1u) << r.err;
}

TEST(ConfigCli, DuplicateKeys) {
  CliRun r = run_ds_config(src("tests/config/data/duplicate_key.json"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("error: optimizer.params.lr: duplicate key \"lr\""), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("error: train_batch_size: duplicate key \"train_batch_size\""), std::string::npos) << r.err;
  expect_problem_lines(r);
}

TEST(ConfigCli, InvalidJsonNamesTheFileLineAndColumn) {
  CliRun r = run_ds_config(src("tests/config/data/bad_json.json"));
  EXPECT_EQ(r.status, 2);
  ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
  const std::string line = r.err_lines()[0];
  EXPECT_EQ(line.rfind("error: " + std::string(DS_SOURCE_DIR) + "/tests/config/data/bad_json.json: invalid JSON at line 4, column 19: ", 0), 0u)
      << line;
}

TEST(ConfigCli, ReportsEveryProblem) {
  CliRun r = run_ds_config(src("tests/config/data/many_errors.json") + " --world-size 8");
  EXPECT_EQ(r.status, 2);
  int errors = 0, warnings = 0;
  for (const std::string& l : r.err_lines()) {
    errors += l.rfind("error: ", 0) == 0;
    warnings += l.rfind("warning: ", 0) == 0;
  }
  EXPECT_EQ(errors, 10) << r.err;
  EXPECT_EQ(warnings, 1) << r.err;
  EXPECT_TRUE(has_line(r, "warning: amp: \"amp\" is a DeepSpeed feature this engine does not implement (NVIDIA Apex AMP; "
                          "use \"fp16\" or \"bf16\" instead); the key is ignored"))
      << r.err;
  expect_problem_lines(r);
}

TEST(ConfigCli, MissingFileAndBadArguments) {
  CliRun r = run_ds_config("/nonexistent/x.json");
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(has_line(r, "error: /nonexistent/x.json: cannot read config file \"/nonexistent/x.json\": No such file or directory"))
      << r.err;
  EXPECT_EQ(run_ds_config("").status, 2);
  EXPECT_EQ(run_ds_config(src("configs/ds_bert_seq128_lamb.json") + " --world-size 0").status, 2);
  EXPECT_EQ(run_ds_config(src("configs/ds_bert_seq128_lamb.json") + " --world-size").status, 2);
  EXPECT_EQ(run_ds_config(src("configs/ds_bert_seq128_lamb.json") + " --bogus").status, 2);
  EXPECT_EQ(run_ds_config(src("configs/ds_bert_seq128_lamb.json") + " " + src("configs/ds_bert_seq512_lamb.json")).status, 2);
  r = run_ds_config("--help");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("usage: ds_config FILE [--world-size N]"), std::string::npos);
}

TEST(ConfigCli, WarningsDoNotFailTheCheck) {
  CliRun r = run_ds_config("- < " + src("tests/config/data/warnings_only.json"));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(has_line(r, "warning: flops_profiler: \"flops_profiler\" is a DeepSpeed feature this engine does not implement "
                          "(the FLOPs profiler); the key is ignored"))
      << r.err;
  EXPECT_FALSE(r.out.empty());
}

}  // namespace
