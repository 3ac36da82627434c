// Image files for the demo through the system's libjpeg and libpng (no OpenCV needed on the board).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rtseg {

struct Image {
  int height = 0, width = 0;
  std::vector<uint8_t> rgb;  // height * width * 3, RGB
};

// Reads a JPEG or PNG (by content, not by name) as 8-bit RGB with the Python runners' rule
// (runtime/paddle_rtseg_runtime/images.py): gray replicated and alpha dropped (with a `warning:` line on
// stderr), 16-bit scaled by the image's maximum. Throws std::runtime_error naming the problem
// (unreadable, truncated JPEG, CMYK JPEG, smaller than 32x32) so that main prints one `error:` line.
Image ReadImage(const std::string& path);
// Class ids as an 8-bit palette PNG with PaddleSeg's pseudo-color palette (pixel value = class id),
// like the Python runners' mask.
void WriteLabelPng(const std::string& path, const std::vector<uint8_t>& label, int height, int width);
void WriteJpeg(const std::string& path, const Image& image, int quality = 95);
// PaddleSeg's palette entry of a class id (paddleseg.utils.visualize.get_color_map_list), RGB.
void PaletteRGB(int label, uint8_t rgb[3]);

}  // namespace rtseg
