#include "engine/monitor.h"

#include <torch/cuda.h>

#include <filesystem>
#include <iomanip>
#include <stdexcept>

namespace ds {

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::Forward: return "forward";
    case Phase::Backward: return "backward";
    case Phase::Allreduce: return "allreduce";
    case Phase::Step: return "step";
  }
  return "?";
}

void PhaseTimers::sync() const {
  if (synchronize_) torch::cuda::synchronize();
}

void PhaseTimers::start(Phase p) {
  const int i = static_cast<int>(p);
  if (running_[i]) return;
  sync();
  started_[i] = std::chrono::steady_clock::now();
  running_[i] = true;
}

void PhaseTimers::stop(Phase p) {
  const int i = static_cast<int>(p);
  if (!running_[i]) return;
  sync();
  total_ms_[i] += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started_[i]).count();
  running_[i] = false;
}

void PhaseTimers::reset() { total_ms_.fill(0.0); }

CsvMonitor::CsvMonitor(std::string dir) : dir_(std::move(dir)) {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) throw std::runtime_error("csv monitor: cannot create directory '" + dir_ + "': " + ec.message());
}

void CsvMonitor::write(const std::string& event, double value, int64_t step) {
  auto it = files_.find(event);
  if (it == files_.end()) {
    std::string file = event;
    for (char& c : file) {
      if (c == '/' || c == ' ') c = '_';
    }
    const std::filesystem::path path = std::filesystem::path(dir_) / (file + ".csv");
    std::error_code ec;
    const bool fresh = !std::filesystem::exists(path, ec) || std::filesystem::file_size(path, ec) == 0;
    auto out = std::make_unique<std::ofstream>(path, std::ios::app);
    if (!*out) throw std::runtime_error("csv monitor: cannot open '" + path.string() + "' for writing");
    if (fresh) *out << "step," << event.substr(event.find_last_of('/') + 1) << "\n";
    it = files_.emplace(event, std::move(out)).first;
  }
  *it->second << step << "," << std::setprecision(9) << value << "\n";
}

void CsvMonitor::flush() {
  for (auto& [name, f] : files_) f->flush();
}

}  // namespace ds
