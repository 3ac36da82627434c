#include "seg_predictor.h"

#include <stdexcept>

namespace rtseg {

using paddle::lite_api::CreatePaddlePredictor;
using paddle::lite_api::MobileConfig;
using paddle::lite_api::PowerMode;
using paddle::lite_api::PrecisionType;

int64_t Output::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SegPredictor::SegPredictor(const std::string& model_path, int threads) {
  MobileConfig config;
  config.set_model_from_file(model_path);
  config.set_threads(threads);
  config.set_power_mode(PowerMode::LITE_POWER_HIGH);
  predictor_ = CreatePaddlePredictor<MobileConfig>(config);
  if (!predictor_) throw std::runtime_error("cannot load Paddle Lite model " + model_path);
}

Output SegPredictor::Run(const float* data, const std::vector<int64_t>& shape) {
  std::unique_ptr<paddle::lite_api::Tensor> input = predictor_->GetInput(0);
  input->Resize(shape);
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  float* dst = input->mutable_data<float>();
  std::copy(data, data + count, dst);
  predictor_->Run();

  std::unique_ptr<const paddle::lite_api::Tensor> tensor = predictor_->GetOutput(0);
  Output out;
  out.shape = tensor->shape();
  const int64_t n = out.numel();
  if (tensor->precision() == PrecisionType::kInt32) {
    out.is_int32 = true;
    const int32_t* ids = tensor->data<int32_t>();
    out.ids.assign(ids, ids + n);
  } else if (tensor->precision() == PrecisionType::kInt64) {  // argmax with int64 dtype
    out.is_int32 = true;
    const int64_t* ids = tensor->data<int64_t>();
    out.ids.assign(ids, ids + n);
  } else {
    const float* scores = tensor->data<float>();
    out.scores.assign(scores, scores + n);
  }
  return out;
}

std::vector<uint8_t> LabelMap(const Output& output, int64_t n) {
  const bool scores = output.shape.size() == 4 && !output.is_int32;
  if (!scores && output.shape.size() != 3)
    throw std::runtime_error("unexpected output rank " + std::to_string(output.shape.size()));
  const int64_t h = output.shape[scores ? 2 : 1], w = output.shape[scores ? 3 : 2];
  const int64_t plane = h * w;
  std::vector<uint8_t> label(plane);
  if (!scores) {
    const int32_t* ids = output.ids.data() + n * plane;
    for (int64_t i = 0; i < plane; ++i) label[i] = static_cast<uint8_t>(ids[i]);
    return label;
  }
  const int64_t classes = output.shape[1];
  const float* s = output.scores.data() + n * classes * plane;
  for (int64_t i = 0; i < plane; ++i) {
    int64_t best = 0;
    for (int64_t c = 1; c < classes; ++c)
      if (s[c * plane + i] > s[best * plane + i]) best = c;
    label[i] = static_cast<uint8_t>(best);
  }
  return label;
}

}  // namespace rtseg
