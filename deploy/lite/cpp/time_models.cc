// On-device timing for `python -m paddle_rtseg.fit_budget --backend lite_arm` (docs/fit_budget.md):
// loads every .nb listed in models.txt (written by fit_budget's first step), then times them in
// turn, round after round (so that a device warming up or throttling hits every model alike), and
// writes the median, min and max milliseconds of each into the latency file fit_budget reads back.
//
//   rtseg_lite_time models.txt latency.txt [threads=4] [rounds=20] [warmup=3]
//
// models.txt: a first line "# rtseg_lite_time 1 ...", then per model `file.nb bytes sha256 N C H W`
// (file relative to models.txt's folder). The input is a fixed pseudo-random float tensor of that
// shape (the time of these models does not depend on the values). latency.txt: a first line
// "# rtseg_lite_time 1 threads=T rounds=R warmup=W", a header comment, then per model the
// tab-separated `file sha256 median_ms min_ms max_ms rounds` (sha256 copied from models.txt, so
// fit_budget can check the times belong to its models). A file of the wrong size is refused: a
// partial copy would time another model.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "seg_predictor.h"

namespace {

const char kFormat[] = "rtseg_lite_time 1";

struct Model {
  std::string file, sha256;
  std::vector<int64_t> shape;
  std::unique_ptr<rtseg::SegPredictor> predictor;
  std::vector<float> input;
  std::vector<double> ms;
};

std::string Folder(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

long long FileSize(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  return f ? static_cast<long long>(f.tellg()) : -1;
}

int Positive(const char* text, const char* what) {
  const int value = std::atoi(text);
  if (value < 1) throw std::runtime_error(std::string(what) + " must be a positive integer");
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0]
              << " models.txt latency.txt [threads=4] [rounds=20] [warmup=3]\n";
    return 2;
  }
  try {
    const int threads = argc > 3 ? Positive(argv[3], "threads") : 4;
    const int rounds = argc > 4 ? Positive(argv[4], "rounds") : 20;
    const int warmup = argc > 5 ? Positive(argv[5], "warmup") : 3;
    std::ifstream list(argv[1]);
    if (!list) throw std::runtime_error(std::string("cannot read ") + argv[1]);
    std::string line;
    if (!std::getline(list, line) || line.find(kFormat) == std::string::npos)
      throw std::runtime_error(std::string(argv[1]) + " is not a models.txt of fit_budget");
    std::vector<Model> models;
    while (std::getline(list, line)) {
      if (line.empty() || line[0] == '#') continue;
      std::istringstream fields(line);
      Model m;
      long long bytes = 0;
      m.shape.resize(4);
      fields >> m.file >> bytes >> m.sha256 >> m.shape[0] >> m.shape[1] >> m.shape[2] >> m.shape[3];
      if (!fields) throw std::runtime_error("bad line in models.txt: " + line);
      const std::string path = Folder(argv[1]) + "/" + m.file;
      if (FileSize(path) != bytes)
        throw std::runtime_error(path + " is missing or not " + std::to_string(bytes) +
                                 " bytes (copy the whole folder again)");
      int64_t count = 1;
      for (int64_t d : m.shape) count *= d;
      m.input.resize(count);
      unsigned state = 12345u;  // a fixed pseudo-random image in [-2, 2)
      for (float& v : m.input) {
        state = state * 1664525u + 1013904223u;
        v = static_cast<float>(state >> 8) / static_cast<float>(1u << 24) * 4.0f - 2.0f;
      }
      m.predictor.reset(new rtseg::SegPredictor(path, threads));
      models.push_back(std::move(m));
    }
    if (models.empty()) throw std::runtime_error(std::string("no model listed in ") + argv[1]);
    std::cerr << "timing " << models.size() << " models, " << rounds << " rounds, " << threads
              << " threads\n";
    for (Model& m : models)
      for (int i = 0; i < warmup; ++i) m.predictor->Run(m.input.data(), m.shape);
    for (int r = 0; r < rounds; ++r) {
      for (Model& m : models) {
        const auto start = std::chrono::steady_clock::now();
        m.predictor->Run(m.input.data(), m.shape);
        const auto end = std::chrono::steady_clock::now();
        m.ms.push_back(std::chrono::duration<double, std::milli>(end - start).count());
      }
      std::cerr << "round " << (r + 1) << "/" << rounds << "\n";
    }
    std::ofstream out(argv[2]);
    out << "# " << kFormat << " threads=" << threads << " rounds=" << rounds
        << " warmup=" << warmup << "\n# file\tsha256\tmedian_ms\tmin_ms\tmax_ms\trounds\n";
    for (Model& m : models) {
      std::vector<double> t = m.ms;
      std::sort(t.begin(), t.end());
      const size_t n = t.size();
      const double median = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
      char row[512];
      std::snprintf(row, sizeof(row), "%s\t%s\t%.3f\t%.3f\t%.3f\t%zu\n", m.file.c_str(),
                    m.sha256.c_str(), median, t.front(), t.back(), n);
      out << row;
    }
    if (!out) throw std::runtime_error(std::string("cannot write ") + argv[2]);
    std::cout << "wrote " << argv[2] << "\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
