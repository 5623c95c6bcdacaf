// The shard reader on shards written by other tools (other integer types, [N, 1] labels) and on
// broken ones: each error names the file and the field.
#include <H5Cpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "examples/bing_bert/data/shard_io.h"
#include "ops/common/fs_util.h"

namespace fs = std::filesystem;
using namespace ds::bert;

namespace {

struct Field {
  H5::PredType type;
  std::vector<hsize_t> dims;
  std::vector<int64_t> values;  // converted by HDF5 to `type` on write
};
using Fields = std::map<std::string, Field>;

fs::path temp_dir() {
  fs::path p = fs::temp_directory_path() / ("bert_shard_test_" + std::to_string(::getpid()) + "_" +
                                            ::testing::UnitTest::GetInstance()->current_test_info()->name());
  ds::remove_tree(p);
  fs::create_directories(p);
  return p;
}

void write_h5(const fs::path& path, const Fields& fields) {
  H5::H5File f(path.string(), H5F_ACC_TRUNC);
  for (const auto& [name, fd] : fields) {
    H5::DataSpace space(static_cast<int>(fd.dims.size()), fd.dims.data());
    H5::DataSet ds = f.createDataSet(name, fd.type, space);
    if (!fd.values.empty()) ds.write(fd.values.data(), H5::PredType::NATIVE_INT64);
  }
}

// Two instances, seq 6, 3 predictions, as an NVIDIA/h5py tool might store them.
Fields good_fields(H5::PredType t = H5::PredType::STD_I64LE, bool nsp_2d = true) {
  Fields f{
      {"input_ids", {t, {2, 6}, {4, 10, 6, 5, 11, 5, 4, 12, 5, 13, 6, 5}}},
      {"input_mask", {t, {2, 6}, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}}},
      {"segment_ids", {t, {2, 6}, {0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1}}},
      {"masked_lm_positions", {t, {2, 3}, {2, 0, 0, 1, 4, 0}}},
      {"masked_lm_ids", {t, {2, 3}, {20, 0, 0, 21, 22, 0}}},
      {"next_sentence_labels", {t, nsp_2d ? std::vector<hsize_t>{2, 1} : std::vector<hsize_t>{2}, {1, 0}}},
  };
  return f;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no exception>";
}

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "message: " << (haystack)

}  // namespace

TEST(ShardReader, ForeignIntegerTypesAndLabelShapes) {
  const fs::path dir = temp_dir();
  for (auto [type, nsp_2d] : {std::pair{H5::PredType::STD_I64LE, true}, std::pair{H5::PredType::STD_I8LE, false},
                              std::pair{H5::PredType::STD_U16BE, true}}) {
    const fs::path p = dir / "x_training.hdf5";
    write_h5(p, good_fields(type, nsp_2d));
    const PretrainingShard s = read_pretraining_shard(p.string(), {30, 6, 3});
    ASSERT_EQ(s.num_instances, 2);
    EXPECT_EQ(s.seq_length, 6);
    EXPECT_EQ(s.max_predictions, 3);
    EXPECT_EQ(s.next_sentence_labels, (std::vector<int32_t>{1, 0}));
    EXPECT_EQ(s.num_masked(0), 1);
    EXPECT_EQ(s.num_masked(1), 2);
    // labels: -1 except at the masked positions (k = index of the first 0 in positions).
    EXPECT_EQ(s.masked_lm_labels, (std::vector<int32_t>{-1, -1, 20, -1, -1, -1, -1, 21, -1, -1, 22, -1}));
  }
  ds::remove_tree(dir);
}

TEST(ShardReader, MissingOrUnreadableFile) {
  const fs::path dir = temp_dir();
  EXPECT_CONTAINS(error_of([&] { read_pretraining_shard((dir / "none.hdf5").string()); }), "none.hdf5' not found");
  std::ofstream(dir / "text.hdf5") << "this is not HDF5\n";
  const std::string e = error_of([&] { read_pretraining_shard((dir / "text.hdf5").string()); });
  EXPECT_CONTAINS(e, "text.hdf5");
  EXPECT_CONTAINS(e, "HDF5");
  EXPECT_CONTAINS(error_of([&] { read_pretraining_shard(dir.string()); }), "not a regular file");
  ds::remove_tree(dir);
}

TEST(ShardReader, MissingKey) {
  const fs::path dir = temp_dir();
  for (const char* key : kShardFields) {
    Fields f = good_fields();
    f.erase(key);
    write_h5(dir / "s.hdf5", f);
    const std::string e = error_of([&] { read_pretraining_shard((dir / "s.hdf5").string()); });
    EXPECT_CONTAINS(e, "s.hdf5");
    EXPECT_CONTAINS(e, std::string("no dataset '") + key + "'");
  }
  ds::remove_tree(dir);
}

TEST(ShardReader, MismatchedShapes) {
  const fs::path dir = temp_dir();
  const std::string p = (dir / "s.hdf5").string();
  auto error_with = [&](const std::string& key, std::vector<hsize_t> dims) {
    Fields f = good_fields();
    hsize_t count = 1;
    for (auto d : dims) count *= d;
    f.at(key).dims = dims;
    f.at(key).values.assign(count, 0);
    write_h5(p, f);
    return error_of([&] { read_pretraining_shard(p); });
  };
  std::string e = error_with("input_mask", {3, 6});
  EXPECT_CONTAINS(e, "field 'input_mask'");
  EXPECT_CONTAINS(e, "[3, 6]");
  e = error_with("segment_ids", {2, 5});
  EXPECT_CONTAINS(e, "field 'segment_ids'");
  e = error_with("masked_lm_ids", {2, 4});
  EXPECT_CONTAINS(e, "field 'masked_lm_ids'");
  EXPECT_CONTAINS(e, "masked_lm_positions [2, 3]");
  e = error_with("next_sentence_labels", {2, 2});
  EXPECT_CONTAINS(e, "field 'next_sentence_labels'");
  e = error_with("input_ids", {12});
  EXPECT_CONTAINS(e, "field 'input_ids'");
  EXPECT_CONTAINS(e, "[N, seq_length]");
  e = error_with("masked_lm_positions", {2, 3, 1});
  EXPECT_CONTAINS(e, "field 'masked_lm_positions'");
  ds::remove_tree(dir);
}

TEST(ShardReader, BadValuesAndExpectations) {
  const fs::path dir = temp_dir();
  const std::string p = (dir / "s.hdf5").string();
  auto error_with = [&](const std::string& key, size_t index, int64_t value, ShardReadOptions opt = {}) {
    Fields f = good_fields();
    f.at(key).values[index] = value;
    write_h5(p, f);
    return error_of([&] { read_pretraining_shard(p, opt); });
  };
  std::string e = error_with("input_ids", 7, 30, {30, 0, 0});
  EXPECT_CONTAINS(e, "field 'input_ids' has value 30 at row 1, column 1");
  EXPECT_CONTAINS(e, "vocabulary has 30 tokens");
  EXPECT_CONTAINS(error_with("masked_lm_ids", 0, -1, {30, 0, 0}), "field 'masked_lm_ids' has value -1");
  EXPECT_CONTAINS(error_with("masked_lm_positions", 0, 6), "field 'masked_lm_positions' has value 6");
  EXPECT_CONTAINS(error_with("segment_ids", 3, 2), "field 'segment_ids' has value 2");
  EXPECT_CONTAINS(error_with("input_mask", 3, 7), "field 'input_mask' has value 7");
  EXPECT_CONTAINS(error_with("next_sentence_labels", 1, 2), "field 'next_sentence_labels' has value 2");
  EXPECT_CONTAINS(error_with("input_ids", 0, int64_t{1} << 40), "does not fit in int32");
  // Without a vocabulary size, ids are not range-checked; expectations on the shape are.
  write_h5(p, good_fields());
  EXPECT_CONTAINS(error_of([&] { read_pretraining_shard(p, {0, 128, 0}); }), "sequence length 6");
  EXPECT_CONTAINS(error_of([&] { read_pretraining_shard(p, {0, 0, 20}); }), "holds 3 predictions");

  // A float dataset is not token ids.
  H5::H5File f(p, H5F_ACC_RDWR);
  f.unlink("input_mask");
  hsize_t dims[2] = {2, 6};
  f.createDataSet("input_mask", H5::PredType::IEEE_F32LE, H5::DataSpace(2, dims));
  f.close();
  EXPECT_CONTAINS(error_of([&] { read_pretraining_shard(p); }), "field 'input_mask' is not an integer dataset");
  ds::remove_tree(dir);
}

TEST(ShardFiles, ListingAndNvidiaFileIndex) {
  const fs::path dir = temp_dir();
  for (const char* n : {"b_training_shard_1.hdf5", "b_training_shard_0.hdf5", "b_validation_shard_0.hdf5",
                        ".b_training_shard_2.hdf5.tmp1"}) {
    std::ofstream(dir / n) << "x";
  }
  const auto files = list_shard_files(dir.string());
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(fs::path(files[0]).filename(), "b_training_shard_0.hdf5");
  EXPECT_EQ(list_shard_files(dir.string(), "validation").size(), 1u);
  EXPECT_CONTAINS(error_of([&] { list_shard_files(dir.string(), "nothing"); }), "no file whose name contains");
  EXPECT_CONTAINS(error_of([&] { list_shard_files((dir / "absent").string()); }), "not found");
  ds::remove_tree(dir);

  // DeepSpeed's formula: epoch 1, world 2, 8 files -> ranks read files 2 and 3.
  EXPECT_EQ(nvidia_shard_index(1, 2, 0, 8), 2);
  EXPECT_EQ(nvidia_shard_index(1, 2, 1, 8), 3);
  EXPECT_EQ(nvidia_shard_index(4, 2, 1, 8), 1);
  // More ranks than files: (epoch * world + rank + (world % files) * epoch) % files.
  EXPECT_EQ(nvidia_shard_index(1, 5, 4, 3), (5 + 4 + 2) % 3);
  EXPECT_THROW(nvidia_shard_index(0, 2, 2, 8), std::invalid_argument);
}

TEST(ShardWriter, RejectsInconsistentSizes) {
  const fs::path dir = temp_dir();
  PretrainingShard s;
  s.num_instances = 1;
  s.seq_length = 4;
  s.max_predictions = 2;
  s.input_ids = {1, 2, 3, 4};
  s.input_mask = {1, 1, 1, 1};
  s.segment_ids = {0, 0, 1};  // one short
  s.masked_lm_positions = {1, 0};
  s.masked_lm_ids = {2, 0};
  s.next_sentence_labels = {0};
  const std::string e = error_of([&] { write_pretraining_shard((dir / "w.hdf5").string(), s); });
  EXPECT_CONTAINS(e, "field 'segment_ids' has 3 values, expected 4");
  EXPECT_FALSE(fs::exists(dir / "w.hdf5"));
  s.segment_ids.push_back(1);
  write_pretraining_shard((dir / "w.hdf5").string(), s);
  EXPECT_EQ(read_pretraining_shard((dir / "w.hdf5").string()).segment_ids, s.segment_ids);
  size_t leftovers = 0;
  for (const auto& e2 : fs::directory_iterator(dir)) leftovers += e2.path().filename().string()[0] == '.';
  EXPECT_EQ(leftovers, 0u) << "temporary file left behind";
  ds::remove_tree(dir);
}
