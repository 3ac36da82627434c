// Paddle Lite ARM demo: segment an image with a .nb model converted by deploy/lite/convert.py.
//
//   rtseg_lite_demo model_arm.nb image.{jpg,png} [out_dir=.] [threads=2] [mean_r,mean_g,mean_b]
//                   [std_r,std_g,std_b]
//
// Pre-processing is PaddleSeg's Normalize ((rgb / 255 - mean) / std); mean/std default to the values
// in the deploy.yaml of paddle_rtseg's configs (ImageNet). Writes <out_dir>/<name>.png (class ids as
// an 8-bit palette PNG, like the Python runners) and <name>_overlay.jpg (0.4 image + 0.6 palette).
// Works with exports whose output_op is none/softmax (N,C,H,W scores: argmax here) or argmax.
// Built and run under qemu-aarch64 by tests/test_arm.py (see README.md in this folder).
#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "image_io.h"
#include "seg_predictor.h"

static std::vector<float> ParseTriple(const char* text, std::vector<float> fallback) {
  if (text == nullptr) return fallback;
  std::vector<float> values;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) values.push_back(std::stof(item));
  if (values.size() != 3)
    throw std::runtime_error(std::string("expected three comma-separated numbers, got '") + text + "'");
  return values;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0]
              << " model.nb image [out_dir=.] [threads=2] [mean=0.485,0.456,0.406]"
                 " [std=0.229,0.224,0.225]\n";
    return 2;
  }
  const std::string model_path = argv[1], image_path = argv[2];
  const std::string out_dir = argc > 3 ? argv[3] : ".";
  const int threads = argc > 4 ? std::atoi(argv[4]) : 2;
  rtseg::Image image;
  std::vector<float> mean, std_;
  try {
    mean = ParseTriple(argc > 5 ? argv[5] : nullptr, {0.485f, 0.456f, 0.406f});
    std_ = ParseTriple(argc > 6 ? argv[6] : nullptr, {0.229f, 0.224f, 0.225f});
    image = rtseg::ReadImage(image_path);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  }
  const int h = image.height, w = image.width;
  try {
    rtseg::SegPredictor predictor(model_path, threads);
    // HWC RGB uint8 -> NCHW float, normalized in the same float32 order as the Python runners.
    std::vector<float> data(3 * static_cast<size_t>(h) * w);
    for (int i = 0; i < h * w; ++i)
      for (int c = 0; c < 3; ++c)
        data[static_cast<size_t>(c) * h * w + i] = (image.rgb[3 * i + c] / 255.0f - mean[c]) / std_[c];

    const auto start = std::chrono::steady_clock::now();
    rtseg::Output output = predictor.Run(data.data(), {1, 3, h, w});
    const double ms = std::chrono::duration<double, std::milli>(
        std::chrono::steady_clock::now() - start).count();
    std::vector<uint8_t> label = rtseg::LabelMap(output, 0);
    if (label.size() != static_cast<size_t>(h) * w)
      throw std::runtime_error("the output is not at the input's size (a fixed-size export?)");

    std::string name = image_path.substr(image_path.find_last_of("/\\") + 1);
    name = name.substr(0, name.find_last_of('.'));
    rtseg::Image overlay = image;  // cv2.addWeighted(image, 0.4, colored, 0.6, 0), rounded
    for (int i = 0; i < h * w; ++i) {
      uint8_t rgb[3];
      rtseg::PaletteRGB(label[i], rgb);
      for (int c = 0; c < 3; ++c) {
        const float v = 0.4f * image.rgb[3 * i + c] + 0.6f * rgb[c] + 0.5f;
        overlay.rgb[3 * i + c] = static_cast<uint8_t>(v > 255.f ? 255.f : v);
      }
    }
    rtseg::WriteLabelPng(out_dir + "/" + name + ".png", label, h, w);
    rtseg::WriteJpeg(out_dir + "/" + name + "_overlay.jpg", overlay);
    std::printf("%s: %dx%d, %.1f ms (%d threads) -> %s/%s.png\n", image_path.c_str(), w, h, ms,
                threads, out_dir.c_str(), name.c_str());
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
