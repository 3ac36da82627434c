// Paddle Lite ARM demo: segment images with a .nb model converted by deploy/lite/convert.py.
//
//   rtseg_lite_demo model_arm.nb image.jpg [out_dir] [threads] [mean_r,mean_g,mean_b] [std_r,std_g,std_b]
//
// Pre-processing is PaddleSeg's Normalize (BGR->RGB, /255, (x - mean) / std); the defaults are the
// mean/std in deploy.yaml of paddle_rtseg's configs (ImageNet). Writes <out_dir>/<name>.png (class
// ids, 8-bit) and <name>_overlay.jpg. Works with exports whose output_op is none/softmax (N,C,H,W
// scores: argmax here) or argmax (N,H,W int32 class map).
//
// Not built or run on the development machine (x86, no ARM toolchain); see README.md for the build.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <opencv2/opencv.hpp>

#include "paddle_api.h"  // from the Paddle Lite prebuilt library (cxx/include)

using paddle::lite_api::CreatePaddlePredictor;
using paddle::lite_api::MobileConfig;
using paddle::lite_api::PaddlePredictor;
using paddle::lite_api::PowerMode;

static std::vector<float> ParseTriple(const char* text, std::vector<float> fallback) {
  if (text == nullptr) return fallback;
  std::vector<float> values;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) values.push_back(std::stof(item));
  if (values.size() != 3) {
    std::cerr << "Error: expected three comma-separated numbers, got '" << text << "'\n";
    std::exit(2);
  }
  return values;
}

// PaddleSeg's pseudo-color palette (paddleseg.utils.visualize.get_color_map_list).
static cv::Vec3b PaletteBGR(int label) {
  int r = 0, g = 0, b = 0;
  for (int j = 0, lab = label; lab; ++j, lab >>= 3) {
    r |= ((lab >> 0) & 1) << (7 - j);
    g |= ((lab >> 1) & 1) << (7 - j);
    b |= ((lab >> 2) & 1) << (7 - j);
  }
  return cv::Vec3b(b, g, r);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "Usage: " << argv[0]
              << " model.nb image [out_dir=.] [threads=2] [mean=0.485,0.456,0.406]"
                 " [std=0.229,0.224,0.225]\n";
    return 2;
  }
  const std::string model_path = argv[1], image_path = argv[2];
  const std::string out_dir = argc > 3 ? argv[3] : ".";
  const int threads = argc > 4 ? std::atoi(argv[4]) : 2;
  const std::vector<float> mean = ParseTriple(argc > 5 ? argv[5] : nullptr, {0.485f, 0.456f, 0.406f});
  const std::vector<float> std_ = ParseTriple(argc > 6 ? argv[6] : nullptr, {0.229f, 0.224f, 0.225f});

  cv::Mat image = cv::imread(image_path, cv::IMREAD_UNCHANGED);
  if (image.empty()) {
    std::cerr << "Error: cannot read image " << image_path << "\n";
    return 2;
  }
  if (image.depth() != CV_8U || image.channels() != 3) {
    std::cerr << "Error: image " << image_path << " has " << image.channels()
              << " channel(s); the model takes 3-channel 8-bit color images. Convert it first.\n";
    return 2;
  }
  const int h = image.rows, w = image.cols;

  // One predictor per input size: the exported graph is dynamic, but create a new predictor when
  // the size changes (the paddlelite 2.13 x86 runtime gives wrong results after a size change; not
  // verified on ARM, so the demo stays on the safe side).
  MobileConfig config;
  config.set_model_from_file(model_path);
  config.set_threads(threads);
  config.set_power_mode(PowerMode::LITE_POWER_HIGH);
  std::shared_ptr<PaddlePredictor> predictor = CreatePaddlePredictor<MobileConfig>(config);

  // HWC BGR uint8 -> NCHW RGB float, normalized.
  std::unique_ptr<paddle::lite_api::Tensor> input = predictor->GetInput(0);
  input->Resize({1, 3, h, w});
  float* data = input->mutable_data<float>();
  for (int y = 0; y < h; ++y) {
    const cv::Vec3b* row = image.ptr<cv::Vec3b>(y);
    for (int x = 0; x < w; ++x) {
      for (int c = 0; c < 3; ++c) {  // c: RGB channel; OpenCV stores BGR
        const float v = row[x][2 - c] / 255.0f;
        data[(c * h + y) * w + x] = (v - mean[c]) / std_[c];
      }
    }
  }

  const auto start = std::chrono::steady_clock::now();
  predictor->Run();
  const double ms = std::chrono::duration<double, std::milli>(
      std::chrono::steady_clock::now() - start).count();

  std::unique_ptr<const paddle::lite_api::Tensor> output = predictor->GetOutput(0);
  const std::vector<int64_t> shape = output->shape();
  cv::Mat label(h, w, CV_8UC1);
  if (shape.size() == 3) {  // argmax export: int32 N,H,W
    const int32_t* ids = output->data<int32_t>();
    for (int i = 0; i < h * w; ++i) label.data[i] = static_cast<uint8_t>(ids[i]);
  } else if (shape.size() == 4) {  // logits / probabilities N,C,H,W
    const int classes = static_cast<int>(shape[1]);
    const float* scores = output->data<float>();
    for (int i = 0; i < h * w; ++i) {
      int best = 0;
      for (int c = 1; c < classes; ++c)
        if (scores[c * h * w + i] > scores[best * h * w + i]) best = c;
      label.data[i] = static_cast<uint8_t>(best);
    }
  } else {
    std::cerr << "Error: unexpected output rank " << shape.size() << "\n";
    return 1;
  }

  std::string name = image_path.substr(image_path.find_last_of("/\\") + 1);
  name = name.substr(0, name.find_last_of('.'));
  cv::Mat colored(h, w, CV_8UC3);
  for (int i = 0; i < h * w; ++i) colored.at<cv::Vec3b>(i / w, i % w) = PaletteBGR(label.data[i]);
  cv::Mat overlay;
  cv::addWeighted(image, 0.4, colored, 0.6, 0.0, overlay);
  cv::imwrite(out_dir + "/" + name + ".png", label);
  cv::imwrite(out_dir + "/" + name + "_overlay.jpg", overlay);
  std::printf("%s: %dx%d, %.1f ms (%d threads) -> %s/%s.png\n", image_path.c_str(), w, h, ms,
              threads, out_dir.c_str(), name.c_str());
  return 0;
}
