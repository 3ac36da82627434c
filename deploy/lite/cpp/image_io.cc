#include "image_io.h"

#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <stdexcept>

#include <jpeglib.h>
#include <jerror.h>  // after jpeglib.h: the message codes (JWRN_JPEG_EOF)
#include <png.h>

namespace rtseg {
namespace {

struct FileCloser {
  void operator()(FILE* f) const { if (f) std::fclose(f); }
};
using File = std::unique_ptr<FILE, FileCloser>;

File Open(const std::string& path, const char* mode) {
  File f(std::fopen(path.c_str(), mode));
  if (!f) throw std::runtime_error(std::string("cannot open ") + path + ": " + std::strerror(errno));
  return f;
}

// The rule of paddle_rtseg.deployment.images.read_image, which every Python runner and CLI follows, so
// that a file gives the same pixels here: grayscale is replicated to 3 channels and an alpha channel
// dropped (each with a warning), 16-bit is scaled to 8 bits by the image's maximum, and images
// smaller than kMinSide on a side are refused. Channels as OpenCV decodes the file (IMREAD_UNCHANGED):
// a PNG with an alpha channel, or an RGB or palette PNG with a tRNS chunk, has 4 (gray + alpha
// replicated), so its alpha counts in the 16-bit maximum as it does there.
constexpr int kMinSide = 32;  // the models' coarsest feature map is 1/32 of the input

void Warn(const std::string& message) { std::cerr << "warning: " << message << "\n"; }

void CheckSize(const std::string& path, int height, int width) {
  if (height < kMinSide || width < kMinSide)
    throw std::runtime_error("image " + path + " is " + std::to_string(width) + "x" +
                             std::to_string(height) + " pixels; the models need at least " +
                             std::to_string(kMinSide) + "x" + std::to_string(kMinSide) +
                             " (their coarsest feature map is 1/32 of the input). Use a larger image.");
}

// Samples (channels per pixel, interleaved) to RGB: channel 0 replicated for 1 channel (gray), the
// first three kept for 3 or 4 (RGB, RGBA).
void ToRgb(const uint8_t* samples, int channels, size_t pixels, std::vector<uint8_t>* rgb) {
  rgb->resize(pixels * 3);
  for (size_t i = 0; i < pixels; ++i)
    for (int c = 0; c < 3; ++c) (*rgb)[3 * i + c] = samples[i * channels + (channels < 3 ? 0 : c)];
}

void WarnChannels(const std::string& path, int channels) {
  if (channels < 3) Warn(path + " is grayscale; replicating it to 3 channels.");
  if (channels == 4) Warn(path + " has an alpha channel; it is dropped.");
}

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  std::vector<std::string> warnings;
  bool truncated = false;
};

// libjpeg's warnings (msg_level -1): a file cut off before its end (it then fills the rest with
// gray) is remembered and refused after decoding; other damage (corrupt data, extraneous bytes) is
// kept and printed as `warning:` lines if the image is used, as OpenCV prints it for the Python
// runners.
void OnJpegMessage(j_common_ptr info, int msg_level) {
  JpegError* err = reinterpret_cast<JpegError*>(info->err);
  if (msg_level >= 0) return;  // trace messages
  if (info->err->msg_code == JWRN_JPEG_EOF) {
    err->truncated = true;
    return;
  }
  char message[JMSG_LENGTH_MAX];
  info->err->format_message(info, message);
  err->warnings.push_back(message);
}

void OnJpegError(j_common_ptr info) {
  JpegError* err = reinterpret_cast<JpegError*>(info->err);
  info->err->format_message(info, err->message);
  std::longjmp(err->jump, 1);
}

Image ReadJpeg(const std::string& path, FILE* f) {
  // Everything with a destructor exists before setjmp: a longjmp from libjpeg must not skip one.
  Image image;
  std::vector<uint8_t> samples;
  jpeg_decompress_struct info;
  JpegError err;
  info.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = OnJpegError;
  err.mgr.emit_message = OnJpegMessage;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&info);
    throw std::runtime_error("image " + path + " cannot be decoded: " + err.message +
                             ". Replace it or remove it.");
  }
  jpeg_create_decompress(&info);
  jpeg_stdio_src(&info, f);
  jpeg_read_header(&info, TRUE);
  const int channels = info.num_components;
  const bool size_ok = info.image_height >= kMinSide && info.image_width >= kMinSide;
  if ((channels != 1 && channels != 3) || !size_ok) {
    const int height = info.image_height, width = info.image_width;
    jpeg_destroy_decompress(&info);
    if (!size_ok) CheckSize(path, height, width);
    throw std::runtime_error("image " + path + " is a " + std::to_string(channels) +
                             "-component (CMYK) JPEG; the demo reads RGB and grayscale JPEGs. "
                             "Convert it to RGB first.");
  }
  info.out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&info);
  image.height = info.output_height;
  image.width = info.output_width;
  samples.resize(static_cast<size_t>(image.height) * image.width * channels);
  while (info.output_scanline < info.output_height) {
    JSAMPROW row = &samples[static_cast<size_t>(info.output_scanline) * image.width * channels];
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  if (err.truncated)
    throw std::runtime_error("image " + path + " cannot be decoded completely: the JPEG is truncated "
                             "(it ends before its end-of-image marker). Replace it or remove it.");
  for (const std::string& warning : err.warnings) Warn(path + ": " + warning);
  WarnChannels(path, channels);
  ToRgb(samples.data(), channels, static_cast<size_t>(image.height) * image.width, &image.rgb);
  return image;
}

struct PngError {
  std::jmp_buf jump;
  std::string message;
};

void OnPngError(png_structp png, png_const_charp message) {
  PngError* err = static_cast<PngError*>(png_get_error_ptr(png));
  err->message = message;
  std::longjmp(err->jump, 1);
}

void OnPngWarning(png_structp, png_const_charp) {}  // benign (e.g. unknown chunks); pixels decode

Image ReadPng(const std::string& path, FILE* f) {
  // Everything with a destructor exists before setjmp: a longjmp from libpng must not skip one.
  Image image;
  std::vector<uint8_t> raw, samples;
  std::vector<png_bytep> rows;
  PngError err;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &err, OnPngError, OnPngWarning);
  png_infop info = png_create_info_struct(png);
  if (setjmp(err.jump)) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw std::runtime_error("image " + path + " cannot be decoded (" + err.message +
                             "): the PNG is corrupt or truncated. Replace it or remove it.");
  }
  png_init_io(png, f);
  png_read_info(png, info);
  image.height = png_get_image_height(png, info);
  image.width = png_get_image_width(png, info);
  if (image.height < kMinSide || image.width < kMinSide) {
    png_destroy_read_struct(&png, &info, nullptr);
    CheckSize(path, image.height, image.width);
  }
  const int color = png_get_color_type(png, info);
  // as OpenCV decodes (grfmt_png.cpp): palettes to RGB, 1/2/4-bit gray to 8 bits, the tRNS chunk
  // of an RGB or palette image to an alpha channel (a gray image's is ignored), gray with alpha to
  // RGBA; 16-bit samples in host byte order
  const bool trns = png_get_valid(png, info, PNG_INFO_tRNS) &&
                    (color == PNG_COLOR_TYPE_RGB || color == PNG_COLOR_TYPE_PALETTE);
  const bool alpha = (color & PNG_COLOR_MASK_ALPHA) || trns;
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (png_get_bit_depth(png, info) < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (trns) png_set_tRNS_to_alpha(png);
  if (alpha && !(color & PNG_COLOR_MASK_COLOR)) png_set_gray_to_rgb(png);
  const bool wide = png_get_bit_depth(png, info) == 16;
  if (wide) png_set_swap(png);  // PNG stores 16-bit samples big-endian
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const int channels = png_get_channels(png, info);
  const size_t pixels = static_cast<size_t>(image.height) * image.width;
  const size_t row_bytes = png_get_rowbytes(png, info);
  raw.resize(row_bytes * image.height);
  rows.resize(image.height);
  for (int y = 0; y < image.height; ++y) rows[y] = &raw[static_cast<size_t>(y) * row_bytes];
  png_read_image(png, rows.data());
  png_destroy_read_struct(&png, &info, nullptr);
  const size_t count = pixels * channels;
  if (wide) {
    // cv2.convertScaleAbs(image, alpha=255 / max(image.max(), 1)): float scale, rounded to nearest
    // even, over every channel (alpha included), as paddle_rtseg_runtime/images.py's to_uint8 does
    const uint16_t* values = reinterpret_cast<const uint16_t*>(raw.data());  // rows are packed
    uint16_t peak = 0;
    for (size_t i = 0; i < count; ++i) peak = values[i] > peak ? values[i] : peak;
    const float scale = static_cast<float>(255.0 / (peak > 1 ? peak : 1));
    samples.resize(count);
    for (size_t i = 0; i < count; ++i) {
      const long v = std::lrint(std::fabs(static_cast<float>(values[i]) * scale));
      samples[i] = static_cast<uint8_t>(v > 255 ? 255 : v);
    }
  } else {
    samples.swap(raw);  // 8-bit rows are packed: already the interleaved samples
  }
  WarnChannels(path, channels);
  ToRgb(samples.data(), channels, pixels, &image.rgb);
  return image;
}

}  // namespace

Image ReadImage(const std::string& path) {
  File f = Open(path, "rb");
  unsigned char magic[8] = {0};
  const size_t got = std::fread(magic, 1, 8, f.get());
  std::rewind(f.get());
  if (got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) return ReadJpeg(path, f.get());
  if (got == 8 && png_sig_cmp(magic, 0, 8) == 0) return ReadPng(path, f.get());
  throw std::runtime_error("image " + path + " is neither JPEG nor PNG; convert it to one of them.");
}

void PaletteRGB(int label, uint8_t rgb[3]) {
  rgb[0] = rgb[1] = rgb[2] = 0;
  for (int j = 0, lab = label; lab; ++j, lab >>= 3) {
    rgb[0] |= ((lab >> 0) & 1) << (7 - j);
    rgb[1] |= ((lab >> 1) & 1) << (7 - j);
    rgb[2] |= ((lab >> 2) & 1) << (7 - j);
  }
}

void WriteLabelPng(const std::string& path, const std::vector<uint8_t>& label, int height, int width) {
  File f = Open(path, "wb");
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw std::runtime_error("cannot write PNG " + path);
  }
  png_init_io(png, f.get());
  png_set_IHDR(png, info, width, height, 8, PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_color palette[256];
  for (int i = 0; i < 256; ++i) {
    uint8_t rgb[3];
    PaletteRGB(i, rgb);
    palette[i].red = rgb[0];
    palette[i].green = rgb[1];
    palette[i].blue = rgb[2];
  }
  png_set_PLTE(png, info, palette, 256);
  png_write_info(png, info);
  for (int y = 0; y < height; ++y)
    png_write_row(png, const_cast<png_bytep>(&label[static_cast<size_t>(y) * width]));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
}

void WriteJpeg(const std::string& path, const Image& image, int quality) {
  File f = Open(path, "wb");
  jpeg_compress_struct info;
  JpegError err;
  info.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = OnJpegError;
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&info);
    throw std::runtime_error(path + ": " + err.message);
  }
  jpeg_create_compress(&info);
  jpeg_stdio_dest(&info, f.get());
  info.image_width = image.width;
  info.image_height = image.height;
  info.input_components = 3;
  info.in_color_space = JCS_RGB;
  jpeg_set_defaults(&info);
  jpeg_set_quality(&info, quality, TRUE);
  jpeg_start_compress(&info, TRUE);
  while (info.next_scanline < info.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(&image.rgb[static_cast<size_t>(info.next_scanline) * image.width * 3]);
    jpeg_write_scanlines(&info, &row, 1);
  }
  jpeg_finish_compress(&info);
  jpeg_destroy_compress(&info);
}

}  // namespace rtseg
