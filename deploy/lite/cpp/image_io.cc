#include "image_io.h"

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>

#include <jpeglib.h>
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

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void OnJpegError(j_common_ptr info) {
  JpegError* err = reinterpret_cast<JpegError*>(info->err);
  info->err->format_message(info, err->message);
  std::longjmp(err->jump, 1);
}

Image ReadJpeg(const std::string& path, FILE* f) {
  jpeg_decompress_struct info;
  JpegError err;
  info.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = OnJpegError;
  Image image;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&info);
    throw std::runtime_error(path + ": " + err.message);
  }
  jpeg_create_decompress(&info);
  jpeg_stdio_src(&info, f);
  jpeg_read_header(&info, TRUE);
  if (info.num_components != 3) {
    jpeg_destroy_decompress(&info);
    throw std::runtime_error(path + " has " + std::to_string(info.num_components) +
                             " channel(s); the model takes 3-channel color images. Convert it first.");
  }
  info.out_color_space = JCS_RGB;
  jpeg_start_decompress(&info);
  image.height = info.output_height;
  image.width = info.output_width;
  image.rgb.resize(static_cast<size_t>(image.height) * image.width * 3);
  while (info.output_scanline < info.output_height) {
    JSAMPROW row = &image.rgb[static_cast<size_t>(info.output_scanline) * image.width * 3];
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  return image;
}

Image ReadPng(const std::string& path, FILE* f) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw std::runtime_error("cannot decode PNG " + path);
  }
  png_init_io(png, f);
  png_read_info(png, info);
  const int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
  if (depth != 8 || (color != PNG_COLOR_TYPE_RGB && color != PNG_COLOR_TYPE_PALETTE)) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw std::runtime_error(path + " is not an 8-bit RGB PNG (gray, alpha or 16-bit); the model "
                             "takes 3-channel 8-bit color images. Convert it first.");
  }
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  png_read_update_info(png, info);
  Image image;
  image.height = png_get_image_height(png, info);
  image.width = png_get_image_width(png, info);
  image.rgb.resize(static_cast<size_t>(image.height) * image.width * 3);
  std::vector<png_bytep> rows(image.height);
  for (int y = 0; y < image.height; ++y) rows[y] = &image.rgb[static_cast<size_t>(y) * image.width * 3];
  png_read_image(png, rows.data());
  png_destroy_read_struct(&png, &info, nullptr);
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
  throw std::runtime_error(path + " is neither JPEG nor PNG; convert it to one of them.");
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
