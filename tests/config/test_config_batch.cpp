// The batch triple resolved against the world size exactly as DeepSpeed's
// _set_batch_related_parameters / _batch_assertion (reference §3.2): all six cases and the errors.
#include "tests/config/config_test_util.h"

namespace ds::test {
namespace {

struct Triple {
  int64_t tbs, micro, gas;
};

Triple resolve(const std::string& members, int world) {
  DeepSpeedConfig c = ok("{" + members + "}", world);
  return {c.train_batch_size, c.train_micro_batch_size_per_gpu, c.gradient_accumulation_steps};
}

void expect_triple(const std::string& members, int world, Triple want) {
  Triple got = resolve(members, world);
  EXPECT_EQ(got.tbs, want.tbs) << members << " world " << world;
  EXPECT_EQ(got.micro, want.micro) << members << " world " << world;
  EXPECT_EQ(got.gas, want.gas) << members << " world " << world;
}

TEST(ConfigBatch, AllThreeGivenAreKept) {
  expect_triple(R"("train_batch_size": 32, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2)", 4,
                {32, 4, 2});
}

TEST(ConfigBatch, TrainBatchAndMicroDeriveAccumulation) {
  expect_triple(R"("train_batch_size": 65536, "train_micro_batch_size_per_gpu": 64)", 8, {65536, 64, 128});
  expect_triple(R"("train_batch_size": 65536, "train_micro_batch_size_per_gpu": 64)", 1, {65536, 64, 1024});
}

TEST(ConfigBatch, TrainBatchAndAccumulationDeriveMicro) {
  expect_triple(R"("train_batch_size": 64, "gradient_accumulation_steps": 2)", 4, {64, 8, 2});
}

TEST(ConfigBatch, MicroAndAccumulationDeriveTrainBatch) {
  expect_triple(R"("train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2)", 8, {64, 4, 2});
}

TEST(ConfigBatch, OnlyTrainBatchGivesOneStepOfAccumulation) {
  expect_triple(R"("train_batch_size": 64)", 8, {64, 8, 1});
}

TEST(ConfigBatch, OnlyMicroGivesOneStepOfAccumulation) {
  expect_triple(R"("train_micro_batch_size_per_gpu": 16)", 4, {64, 16, 1});
}

TEST(ConfigBatch, NullMeansNotGiven) {
  expect_triple(R"("train_batch_size": null, "train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": null)", 2,
                {16, 8, 1});
}

TEST(ConfigBatch, IntegralFloatsAreIntegers) {
  expect_triple(R"("train_batch_size": 64.0, "train_micro_batch_size_per_gpu": 8e0)", 1, {64, 8, 8});
}

TEST(ConfigBatch, InconsistentTripleShowsAllFourNumbers) {
  ConfigParseResult r = parse(
      R"({"train_batch_size": 96, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 4})", 8);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(HasError(r, "train_batch_size", "train_batch_size 96 != micro 4 x accumulation 4 x world 8 = 128"));
  EXPECT_EQ(r.errors.size(), 1u) << issues_text(r);
}

TEST(ConfigBatch, FloorDivisionMismatchIsAnError) {
  // 65536 // 64 // 3 = 341 and 64 * 341 * 3 = 65472 (DeepSpeed fails the same assertion).
  ConfigParseResult r = parse(R"({"train_batch_size": 65536, "train_micro_batch_size_per_gpu": 64})", 3);
  EXPECT_TRUE(HasError(r, "train_batch_size", "train_batch_size 65536 != micro 64 x accumulation 341 x world 3 = 65472"));
  EXPECT_TRUE(HasError(r, "train_batch_size", "gradient_accumulation_steps = 65536 // 64 // 3 = 341"));
  EXPECT_TRUE(HasError(r, "train_batch_size", "multiple of micro x world = 192"));

  r = parse(R"({"train_batch_size": 100, "gradient_accumulation_steps": 3})", 4);
  EXPECT_TRUE(HasError(r, "train_batch_size", "train_batch_size 100 != micro 8 x accumulation 3 x world 4 = 96"));

  r = parse(R"({"train_batch_size": 65})", 8);
  EXPECT_TRUE(HasError(r, "train_batch_size", "train_batch_size 65 != micro 8 x accumulation 1 x world 8 = 64"));
}

TEST(ConfigBatch, DerivedZeroIsAnError) {
  ConfigParseResult r = parse(R"({"train_batch_size": 4, "train_micro_batch_size_per_gpu": 8})", 1);
  EXPECT_TRUE(HasError(r, "gradient_accumulation_steps", "gradient_accumulation_steps = 4 // 8 // 1 = 0"));
  r = parse(R"({"train_batch_size": 4})", 8);
  EXPECT_TRUE(HasError(r, "train_micro_batch_size_per_gpu", "too small for world size 8"));
}

TEST(ConfigBatch, NeitherTrainBatchNorMicroIsDeepSpeedsError) {
  const char* msg = "Either train_batch_size or train_micro_batch_size_per_gpu needs to be provided";
  EXPECT_TRUE(HasError(parse("{}"), "train_batch_size", msg));
  EXPECT_TRUE(HasError(parse(R"({"gradient_accumulation_steps": 4})"), "train_batch_size", msg));
}

TEST(ConfigBatch, NonPositiveAndWrongTypesAreErrors) {
  ConfigParseResult r = parse(R"({"train_batch_size": 0, "train_micro_batch_size_per_gpu": -2, "gradient_accumulation_steps": 1.5})");
  EXPECT_TRUE(HasError(r, "train_batch_size", "got 0, expected a positive integer"));
  EXPECT_TRUE(HasError(r, "train_micro_batch_size_per_gpu", "got -2, expected a positive integer"));
  EXPECT_TRUE(HasError(r, "gradient_accumulation_steps", "got 1.5, expected a positive integer"));
  EXPECT_EQ(r.errors.size(), 3u) << "no follow-up resolution errors expected\n" << issues_text(r);

  r = parse(R"({"train_batch_size": "auto"})");
  EXPECT_TRUE(HasError(r, "train_batch_size", "HuggingFace"));
}

TEST(ConfigBatch, ProductOverflowIsReportedNotWrapped) {
  ConfigParseResult r = parse(R"({"train_micro_batch_size_per_gpu": 4611686018427387904, "gradient_accumulation_steps": 4})");
  EXPECT_TRUE(HasError(r, "train_micro_batch_size_per_gpu", "does not fit in a 64-bit integer"));
}

TEST(ConfigBatch, WorldSizeMustBePositive) {
  ConfigParseResult r = parse(R"({"train_batch_size": 8})", 0);
  EXPECT_TRUE(HasError(r, "", "world size 0 must be at least 1"));
}

TEST(ConfigBatch, WorldSizeIsRecorded) {
  EXPECT_EQ(ok(R"({"train_batch_size": 64})", 8).world_size, 8);
}

}  // namespace
}  // namespace ds::test
