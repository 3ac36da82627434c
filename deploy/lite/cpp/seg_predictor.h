// The Paddle Lite part shared by the demo (main.cc) and the test runner (run_raw.cc): load a .nb
// with the light API, feed an N x C x H x W float tensor, read the output back (float scores
// N x C x H x W, or int32 class ids N x H x W for argmax exports).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "paddle_api.h"  // Paddle Lite light API (the library's include/ folder)

namespace rtseg {

struct Output {
  std::vector<int64_t> shape;
  bool is_int32 = false;       // argmax export: int32 class ids
  std::vector<float> scores;   // filled when !is_int32
  std::vector<int32_t> ids;    // filled when is_int32
  int64_t numel() const;
};

class SegPredictor {
 public:
  // Throws std::runtime_error when the model cannot be loaded.
  SegPredictor(const std::string& model_path, int threads);
  // One predictor serves every input size and batch size (the export is dynamic, and has no
  // reshape whose shape Paddle Lite would reuse from the previous run: tests/test_arm.py).
  Output Run(const float* data, const std::vector<int64_t>& shape);

 private:
  std::shared_ptr<paddle::lite_api::PaddlePredictor> predictor_;
};

// Class map (uint8) of image `n` of an output: the ids of an argmax export, or the argmax over
// channels of scores (first maximum wins, as numpy's argmax).
std::vector<uint8_t> LabelMap(const Output& output, int64_t n);

}  // namespace rtseg
