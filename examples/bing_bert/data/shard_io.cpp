#include "examples/bing_bert/data/shard_io.h"

#include <H5Cpp.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <mutex>
#include <stdexcept>

namespace ds::bert {
namespace fs = std::filesystem;

const char* const kShardFields[6] = {"input_ids",           "input_mask",    "segment_ids",
                                     "masked_lm_positions", "masked_lm_ids", "next_sentence_labels"};

namespace {

std::mutex& hdf5_mutex() {
  static std::mutex m;
  return m;
}

std::string where(const std::string& path, const std::string& field) {
  return "shard '" + path + "': field '" + field + "'";
}

// Rows of 256 KiB chunks at seq 128: large enough for gzip, small enough for random row access.
constexpr hsize_t kChunkBytes = 256 * 1024;

void write_dataset(H5::H5File& file, const std::string& name, const std::vector<int32_t>& data, int64_t rows,
                   int64_t cols, int gzip_level) {
  const int rank = cols > 0 ? 2 : 1;
  hsize_t dims[2] = {static_cast<hsize_t>(rows), static_cast<hsize_t>(cols)};
  H5::DataSpace space(rank, dims);
  H5::DSetCreatPropList plist;
  if (gzip_level > 0 && rows > 0) {
    const hsize_t row_bytes = sizeof(int32_t) * static_cast<hsize_t>(std::max<int64_t>(cols, 1));
    hsize_t chunk[2] = {std::clamp<hsize_t>(kChunkBytes / row_bytes, 1, dims[0]), dims[1]};
    plist.setChunk(rank, chunk);
    plist.setDeflate(static_cast<unsigned>(gzip_level));
  }
  H5::DataSet ds = file.createDataSet(name, H5::PredType::STD_I32LE, space, plist);
  if (!data.empty()) ds.write(data.data(), H5::PredType::NATIVE_INT32);
}

// Opens an integer dataset of rank 1 or 2 and returns it with its shape.
H5::DataSet open_dataset(H5::H5File& file, const std::string& path, const std::string& name,
                         std::vector<hsize_t>& dims) {
  if (H5Lexists(file.getId(), name.c_str(), H5P_DEFAULT) <= 0) {
    throw std::runtime_error("shard '" + path + "' has no dataset '" + name +
                             "'; an NVIDIA-format shard needs input_ids, input_mask, segment_ids, "
                             "masked_lm_positions, masked_lm_ids and next_sentence_labels");
  }
  H5::DataSet ds = file.openDataSet(name);
  if (ds.getTypeClass() != H5T_INTEGER) {
    throw std::runtime_error(where(path, name) + " is not an integer dataset (HDF5 type class " +
                             std::to_string(static_cast<int>(ds.getTypeClass())) + ")");
  }
  H5::DataSpace space = ds.getSpace();
  const int rank = space.getSimpleExtentNdims();
  if (rank < 1 || rank > 2) {
    throw std::runtime_error(where(path, name) + " has " + std::to_string(rank) + " dimensions; expected 1 or 2");
  }
  dims.assign(static_cast<size_t>(rank), 0);
  space.getSimpleExtentDims(dims.data());
  return ds;
}

// Reads a whole integer dataset of any width into int64.
std::vector<int64_t> read_all(H5::DataSet& ds, const std::vector<hsize_t>& dims) {
  hsize_t count = 1;
  for (hsize_t d : dims) count *= d;
  std::vector<int64_t> data(static_cast<size_t>(count));
  if (count > 0) ds.read(data.data(), H5::PredType::NATIVE_INT64);
  return data;
}

std::string shape_str(const std::vector<hsize_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

std::vector<int32_t> narrow(const std::vector<int64_t>& v, const std::string& path, const std::string& name,
                            int64_t cols) {
  std::vector<int32_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] < std::numeric_limits<int32_t>::min() || v[i] > std::numeric_limits<int32_t>::max()) {
      throw std::runtime_error(where(path, name) + " value " + std::to_string(v[i]) + " at row " +
                               std::to_string(static_cast<int64_t>(i) / cols) + " does not fit in int32");
    }
    out[i] = static_cast<int32_t>(v[i]);
  }
  return out;
}

void check_range(const std::vector<int32_t>& v, int64_t lo, int64_t hi_exclusive, const std::string& path,
                 const std::string& name, int64_t cols, const std::string& why) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] < lo || v[i] >= hi_exclusive) {
      throw std::runtime_error(where(path, name) + " has value " + std::to_string(v[i]) + " at row " +
                               std::to_string(static_cast<int64_t>(i) / cols) + ", column " +
                               std::to_string(static_cast<int64_t>(i) % cols) + "; expected [" + std::to_string(lo) +
                               ", " + std::to_string(hi_exclusive) + ")" + why);
    }
  }
}

// The six datasets of an open shard, their shapes checked against each other and the options.
struct OpenShard {
  H5::H5File file;
  H5::DataSet sets[6];
  std::vector<hsize_t> dims[6];
  ShardInfo info;
};

void open_locked(const std::string& path, const ShardReadOptions& opt, OpenShard& o) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw std::runtime_error("shard file '" + path + "' not found");
  if (!fs::is_regular_file(path, ec)) throw std::runtime_error("shard '" + path + "' is not a regular file");
  try {
    o.file.openFile(path, H5F_ACC_RDONLY);
  } catch (const H5::Exception& e) {
    throw std::runtime_error("cannot open shard '" + path + "' as an HDF5 file (" + e.getDetailMsg() +
                             "); is it readable and an HDF5 file?");
  }
  o.info.path = path;
  for (int f = 0; f < 6; ++f) o.sets[f] = open_dataset(o.file, path, kShardFields[f], o.dims[f]);
  const auto& d_ids = o.dims[0];
  const auto &d_pos = o.dims[3], &d_mids = o.dims[4], &d_nsp = o.dims[5];
  if (d_ids.size() != 2) {
    throw std::runtime_error(where(path, "input_ids") + " has shape " + shape_str(d_ids) + "; expected [N, seq_length]");
  }
  o.info.num_instances = static_cast<int64_t>(d_ids[0]);
  o.info.seq_length = static_cast<int64_t>(d_ids[1]);
  const int64_t n = o.info.num_instances;
  auto expect_2d = [&](const std::vector<hsize_t>& d, const char* name, int64_t cols, const std::string& what) {
    if (d.size() != 2 || static_cast<int64_t>(d[0]) != n || (cols >= 0 && static_cast<int64_t>(d[1]) != cols)) {
      throw std::runtime_error(where(path, name) + " has shape " + shape_str(d) + "; expected [" + std::to_string(n) +
                               ", " + what + "] to match input_ids " + shape_str(d_ids));
    }
  };
  expect_2d(o.dims[1], "input_mask", o.info.seq_length, std::to_string(o.info.seq_length));
  expect_2d(o.dims[2], "segment_ids", o.info.seq_length, std::to_string(o.info.seq_length));
  expect_2d(d_pos, "masked_lm_positions", -1, "max_predictions");
  o.info.max_predictions = static_cast<int64_t>(d_pos[1]);
  if (d_mids != d_pos) {
    throw std::runtime_error(where(path, "masked_lm_ids") + " has shape " + shape_str(d_mids) +
                             "; expected the shape of masked_lm_positions " + shape_str(d_pos));
  }
  if (static_cast<int64_t>(d_nsp[0]) != n || (d_nsp.size() == 2 && d_nsp[1] != 1)) {
    throw std::runtime_error(where(path, "next_sentence_labels") + " has shape " + shape_str(d_nsp) +
                             "; expected [" + std::to_string(n) + "] or [" + std::to_string(n) + ", 1]");
  }
  if (opt.expected_seq_length > 0 && o.info.seq_length != opt.expected_seq_length) {
    throw std::runtime_error(where(path, "input_ids") + " has sequence length " + std::to_string(o.info.seq_length) +
                             " (shape " + shape_str(d_ids) + ") but " + std::to_string(opt.expected_seq_length) +
                             " was asked for (--max_seq_length); use shards made with that length");
  }
  if (opt.expected_max_predictions > 0 && o.info.max_predictions != opt.expected_max_predictions) {
    throw std::runtime_error(where(path, "masked_lm_positions") + " holds " + std::to_string(o.info.max_predictions) +
                             " predictions per sequence but " + std::to_string(opt.expected_max_predictions) +
                             " was asked for (--max_predictions_per_seq)");
  }
}

PretrainingShard read_locked(const std::string& path, const ShardReadOptions& opt) {
  OpenShard o;
  open_locked(path, opt, o);
  PretrainingShard s;
  s.path = path;
  s.num_instances = o.info.num_instances;
  s.seq_length = o.info.seq_length;
  s.max_predictions = o.info.max_predictions;
  const int64_t n = s.num_instances, seq = std::max<int64_t>(s.seq_length, 1);
  const auto ids64 = read_all(o.sets[0], o.dims[0]);
  const auto mask64 = read_all(o.sets[1], o.dims[1]);
  const auto seg64 = read_all(o.sets[2], o.dims[2]);
  const auto pos64 = read_all(o.sets[3], o.dims[3]);
  const auto mids64 = read_all(o.sets[4], o.dims[4]);
  const auto nsp64 = read_all(o.sets[5], o.dims[5]);

  const int64_t pred = std::max<int64_t>(s.max_predictions, 1);
  s.input_ids = narrow(ids64, path, "input_ids", seq);
  s.input_mask = narrow(mask64, path, "input_mask", seq);
  s.segment_ids = narrow(seg64, path, "segment_ids", seq);
  s.masked_lm_positions = narrow(pos64, path, "masked_lm_positions", pred);
  s.masked_lm_ids = narrow(mids64, path, "masked_lm_ids", pred);
  s.next_sentence_labels = narrow(nsp64, path, "next_sentence_labels", 1);

  check_range(s.input_mask, 0, 2, path, "input_mask", seq, "");
  check_range(s.segment_ids, 0, 2, path, "segment_ids", seq, " (BERT has 2 token types)");
  check_range(s.next_sentence_labels, 0, 2, path, "next_sentence_labels", 1, "");
  check_range(s.masked_lm_positions, 0, s.seq_length, path, "masked_lm_positions", pred,
              " (a position inside the sequence)");
  if (opt.vocab_size > 0) {
    const std::string why = " (the vocabulary has " + std::to_string(opt.vocab_size) + " tokens)";
    check_range(s.input_ids, 0, opt.vocab_size, path, "input_ids", seq, why);
    check_range(s.masked_lm_ids, 0, opt.vocab_size, path, "masked_lm_ids", pred, why);
  }

  s.masked_lm_labels.assign(static_cast<size_t>(n * s.seq_length), -1);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = s.num_masked(i);
    for (int64_t j = 0; j < k; ++j) {
      const int32_t p = s.masked_lm_positions[static_cast<size_t>(i * s.max_predictions + j)];
      s.masked_lm_labels[static_cast<size_t>(i * s.seq_length + p)] =
          s.masked_lm_ids[static_cast<size_t>(i * s.max_predictions + j)];
    }
  }
  return s;
}

}  // namespace

int64_t PretrainingShard::num_masked(int64_t i) const {
  const int32_t* pos = masked_lm_positions.data() + i * max_predictions;
  return std::find(pos, pos + max_predictions, 0) - pos;
}

PretrainingShard read_pretraining_shard(const std::string& path, const ShardReadOptions& options) {
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  H5::Exception::dontPrint();
  try {
    return read_locked(path, options);
  } catch (const H5::Exception& e) {
    throw std::runtime_error("shard '" + path + "': HDF5 error in " + e.getFuncName() + ": " + e.getDetailMsg());
  }
}

ShardInfo probe_pretraining_shard(const std::string& path, const ShardReadOptions& options) {
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  H5::Exception::dontPrint();
  try {
    OpenShard o;
    open_locked(path, options, o);
    return o.info;
  } catch (const H5::Exception& e) {
    throw std::runtime_error("shard '" + path + "': HDF5 error in " + e.getFuncName() + ": " + e.getDetailMsg());
  }
}

void write_pretraining_shard(const std::string& path, const PretrainingShard& s, const ShardWriteOptions& options) {
  const size_t n = static_cast<size_t>(s.num_instances);
  const size_t seq = static_cast<size_t>(s.seq_length), pred = static_cast<size_t>(s.max_predictions);
  auto check = [&](const std::vector<int32_t>& v, size_t expected, const char* name) {
    if (v.size() != expected) {
      throw std::runtime_error("cannot write shard '" + path + "': field '" + name + "' has " +
                               std::to_string(v.size()) + " values, expected " + std::to_string(expected));
    }
  };
  check(s.input_ids, n * seq, "input_ids");
  check(s.input_mask, n * seq, "input_mask");
  check(s.segment_ids, n * seq, "segment_ids");
  check(s.masked_lm_positions, n * pred, "masked_lm_positions");
  check(s.masked_lm_ids, n * pred, "masked_lm_ids");
  check(s.next_sentence_labels, n, "next_sentence_labels");
  if (options.gzip_level < 0 || options.gzip_level > 9) {
    throw std::invalid_argument("gzip level must be 0..9, got " + std::to_string(options.gzip_level));
  }

  const fs::path target(path);
  const fs::path tmp = target.parent_path() /
                       ("." + target.filename().string() + ".tmp" + std::to_string(static_cast<long>(::getpid())));
  std::lock_guard<std::mutex> lock(hdf5_mutex());
  H5::Exception::dontPrint();
  try {
    {
      H5::H5File file(tmp.string(), H5F_ACC_TRUNC);
      const int64_t rows = s.num_instances;
      write_dataset(file, "input_ids", s.input_ids, rows, s.seq_length, options.gzip_level);
      write_dataset(file, "input_mask", s.input_mask, rows, s.seq_length, options.gzip_level);
      write_dataset(file, "segment_ids", s.segment_ids, rows, s.seq_length, options.gzip_level);
      write_dataset(file, "masked_lm_positions", s.masked_lm_positions, rows, s.max_predictions, options.gzip_level);
      write_dataset(file, "masked_lm_ids", s.masked_lm_ids, rows, s.max_predictions, options.gzip_level);
      write_dataset(file, "next_sentence_labels", s.next_sentence_labels, rows, 0, options.gzip_level);
      H5::DataSpace scalar(H5S_SCALAR);
      for (const auto& [key, value] : options.attributes) {
        H5::Attribute a = file.createAttribute(key, H5::PredType::STD_I64LE, scalar);
        a.write(H5::PredType::NATIVE_INT64, &value);
      }
      H5::StrType str_type(H5::PredType::C_S1, H5T_VARIABLE);
      for (const auto& [key, value] : options.text_attributes) {
        H5::Attribute a = file.createAttribute(key, str_type, scalar);
        a.write(str_type, value);
      }
    }
    std::error_code ec;
    fs::rename(tmp, target, ec);
    if (ec) throw std::runtime_error("cannot move '" + tmp.string() + "' to '" + path + "': " + ec.message());
  } catch (const H5::Exception& e) {
    std::error_code ignore;
    fs::remove(tmp, ignore);
    throw std::runtime_error("cannot write shard '" + path + "': HDF5 error in " + e.getFuncName() + ": " +
                             e.getDetailMsg());
  } catch (...) {
    std::error_code ignore;
    fs::remove(tmp, ignore);
    throw;
  }
}

PretrainingShard make_shard(const std::vector<TrainingInstance>& instances, const PretrainingOptions& o,
                            size_t first, size_t stride) {
  if (stride < 1) throw std::invalid_argument("make_shard: stride must be >= 1");
  PretrainingShard s;
  const size_t seq = static_cast<size_t>(o.max_seq_length), pred = static_cast<size_t>(o.max_predictions_per_seq);
  s.seq_length = o.max_seq_length;
  s.max_predictions = o.max_predictions_per_seq;
  const size_t n = first < instances.size() ? (instances.size() - first + stride - 1) / stride : 0;
  s.num_instances = static_cast<int64_t>(n);
  s.input_ids.assign(n * seq, 0);
  s.input_mask.assign(n * seq, 0);
  s.segment_ids.assign(n * seq, 0);
  s.masked_lm_positions.assign(n * pred, 0);
  s.masked_lm_ids.assign(n * pred, 0);
  s.next_sentence_labels.assign(n, 0);
  for (size_t row = 0; row < n; ++row) {
    const TrainingInstance& t = instances[first + row * stride];
    if (t.input_ids.size() > seq || t.masked_lm_positions.size() > pred ||
        t.masked_lm_ids.size() != t.masked_lm_positions.size()) {
      throw std::invalid_argument("make_shard: instance " + std::to_string(first + row * stride) + " has " +
                                  std::to_string(t.input_ids.size()) + " tokens and " +
                                  std::to_string(t.masked_lm_positions.size()) + " predictions; the shard holds " +
                                  std::to_string(seq) + " and " + std::to_string(pred));
    }
    for (size_t j = 0; j < t.input_ids.size(); ++j) {
      s.input_ids[row * seq + j] = t.input_ids[j];
      s.input_mask[row * seq + j] = 1;
      s.segment_ids[row * seq + j] = static_cast<int64_t>(j) < t.segment_a_length ? 0 : 1;
    }
    std::copy(t.masked_lm_positions.begin(), t.masked_lm_positions.end(), s.masked_lm_positions.begin() + row * pred);
    std::copy(t.masked_lm_ids.begin(), t.masked_lm_ids.end(), s.masked_lm_ids.begin() + row * pred);
    s.next_sentence_labels[row] = t.is_random_next ? 1 : 0;
  }
  return s;
}

std::vector<std::string> list_shard_files(const std::string& dir, const std::string& name_contains) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw std::runtime_error("shard directory '" + dir + "' not found");
  std::vector<std::string> files;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.empty() || name[0] == '.' || name.find(name_contains) == std::string::npos) continue;
    if (it->is_regular_file()) files.push_back(it->path().string());
  }
  if (ec) throw std::runtime_error("cannot list shard directory '" + dir + "': " + ec.message());
  if (files.empty()) {
    throw std::runtime_error("shard directory '" + dir + "' has no file whose name contains '" + name_contains + "'");
  }
  std::sort(files.begin(), files.end());
  return files;
}

int64_t nvidia_shard_index(int64_t epoch, int64_t world_size, int64_t rank, int64_t num_files) {
  if (num_files < 1 || world_size < 1 || rank < 0 || rank >= world_size || epoch < 0) {
    throw std::invalid_argument("nvidia_shard_index: bad arguments epoch " + std::to_string(epoch) + ", world " +
                                std::to_string(world_size) + ", rank " + std::to_string(rank) + ", files " +
                                std::to_string(num_files));
  }
  int64_t index = epoch * world_size + rank;
  if (world_size > num_files) index += (world_size % num_files) * epoch;
  return index % num_files;
}

}  // namespace ds::bert
