// rtseg_image_dump: decode one image with the demo's reader (image_io) and write its pixels raw.
//
//   rtseg_image_dump image.{jpg,png} out.rgb      # height * width * 3 bytes, RGB; prints "H W"
//
// The tests' check that the demo sees the pixels the Python runners see (tests/test_arm.py): no
// Paddle Lite involved. Exit 2 with one `error:` line on a file the reader refuses.
#include <cstdio>
#include <iostream>
#include <stdexcept>

#include "image_io.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: " << argv[0] << " image out.rgb\n";
    return 2;
  }
  try {
    const rtseg::Image image = rtseg::ReadImage(argv[1]);
    FILE* out = std::fopen(argv[2], "wb");
    if (out == nullptr) throw std::runtime_error(std::string("cannot write ") + argv[2]);
    const size_t written = std::fwrite(image.rgb.data(), 1, image.rgb.size(), out);
    if (std::fclose(out) != 0 || written != image.rgb.size())
      throw std::runtime_error(std::string("cannot write ") + argv[2]);
    std::printf("%d %d\n", image.height, image.width);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
