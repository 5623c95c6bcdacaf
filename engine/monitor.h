// Phase timers (wall_clock_breakdown) and the CSV monitor (csv_monitor / tensorboard sections).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <string>

namespace ds {

enum class Phase { Forward = 0, Backward = 1, Allreduce = 2, Step = 3 };
constexpr int kNumPhases = 4;
const char* phase_name(Phase p);  // "forward", "backward", "allreduce", "step"

// Accumulated wall-clock milliseconds per phase. With `synchronize` set (CUDA model and
// wall_clock_breakdown on) start and stop wait for the device so kernel time lands in its phase.
class PhaseTimers {
 public:
  void set_synchronize(bool on) { synchronize_ = on; }
  void start(Phase p);
  void stop(Phase p);
  double total_ms(Phase p) const { return total_ms_[static_cast<int>(p)]; }
  void reset();

 private:
  void sync() const;
  bool synchronize_ = false;
  std::array<double, kNumPhases> total_ms_{};
  std::array<std::chrono::steady_clock::time_point, kNumPhases> started_{};
  std::array<bool, kNumPhases> running_{};
};

// Starts a phase on construction and stops it on destruction (also when an exception passes).
class ScopedPhase {
 public:
  ScopedPhase(PhaseTimers& t, Phase p) : t_(t), p_(p) { t_.start(p_); }
  ~ScopedPhase() { t_.stop(p_); }
  ScopedPhase(const ScopedPhase&) = delete;
  ScopedPhase& operator=(const ScopedPhase&) = delete;

 private:
  PhaseTimers& t_;
  Phase p_;
};

// DeepSpeed's csvMonitor layout: one file per event under <dir>, named after the event with '/'
// and ' ' replaced by '_' ("Train/Samples/lr" -> Train_Samples_lr.csv), rows "step,value" under a
// header "step,<last path component>". An existing file is appended to (a resumed run continues
// it) and gets no second header.
class CsvMonitor {
 public:
  explicit CsvMonitor(std::string dir);  // creates dir
  const std::string& dir() const { return dir_; }
  void write(const std::string& event, double value, int64_t step);
  void flush();

 private:
  std::string dir_;
  std::map<std::string, std::unique_ptr<std::ofstream>> files_;
};

}  // namespace ds
