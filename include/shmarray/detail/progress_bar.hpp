// shmarray internals: the progress bar a run draws on stderr from the
// workers' shared counter.
#pragma once

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "../worker.hpp"

namespace shmarray::detail {

// A progress display on stderr, drawn from the shared counter.
class progress_bar {
 public:
  progress_bar(const worker_options& o, const std::atomic<std::uint64_t>& counter)
      : on_(o.progress),
        tty_(on_ && ::isatty(2)),
        label_(o.label),
        total_(o.total),
        counter_(counter),
        start_(std::chrono::steady_clock::now()) {}
  bool live() const noexcept { return tty_; }
  // Redraws the bar (a terminal only).
  void draw() const {
    if (tty_) put("\r" + line(width()));
  }
  // The last word: the bar's final state and a newline, or one plain line.
  void finish() const noexcept {
    if (!on_) return;
    try {
      put((tty_ ? "\r" + line(width()) : line(0)) + "\n");
    } catch (...) {
    }
  }

 private:
  static std::size_t width() {
    winsize ws{};
    if (::ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20) return ws.ws_col;
    return 80;
  }
  static void put(const std::string& s) { (void)!::write(2, s.data(), s.size()); }
  // "label [=====>    ]  45% 450/1000 3.2 s", or "label: 450/1000 in 3.2 s"
  std::string line(std::size_t cols) const {
    const std::uint64_t done = counter_.load(std::memory_order_relaxed);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    char time[32];
    std::snprintf(time, sizeof time, "%.1f s", secs);
    std::string t = std::to_string(done);
    if (total_) t += "/" + std::to_string(total_);
    t += (cols ? " " : " in ") + std::string(time);
    if (!cols) return label_ + ": " + t;
    std::string s = label_ + " ";
    const std::size_t bar = cols > s.size() + t.size() + 14 ? cols - s.size() - t.size() - 14 : 0;
    if (total_ && bar >= 10) {
      const double f = std::min(1.0, double(done) / double(total_));
      const std::size_t full = std::size_t(f * double(bar));
      char pct[8];
      std::snprintf(pct, sizeof pct, "%3d%% ", int(f * 100));
      s += "[" + std::string(full, '=') + (full < bar ? ">" : "") +
           std::string(bar - full - (full < bar), ' ') + "] " + pct;
    }
    s += t;
    if (s.size() < cols - 1) s.append(cols - 1 - s.size(), ' ');  // over a longer old line
    return s;
  }

  bool on_, tty_;
  std::string label_;
  std::uint64_t total_;
  const std::atomic<std::uint64_t>& counter_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace shmarray::detail
