// Test runner: many inputs through ONE predictor (emulated ARM calls are slow; loading once also
// checks that a predictor serves several sizes and batch sizes in a row).
//
//   rtseg_lite_raw model.nb list.txt [threads=1]
//
// Each line of list.txt: `input.bin output.bin N C H W`. input.bin holds N*C*H*W float32 (native
// byte order); output.bin receives the output tensor as raw float32 or int32, and output.bin.txt
// its dtype and shape ("float32 2 19 97 131").
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "seg_predictor.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0] << " model.nb list.txt [threads=1]\n";
    return 2;
  }
  try {
    rtseg::SegPredictor predictor(argv[1], argc > 3 ? std::atoi(argv[3]) : 1);
    std::ifstream list(argv[2]);
    if (!list) throw std::runtime_error(std::string("cannot read ") + argv[2]);
    std::string line;
    while (std::getline(list, line)) {
      if (line.empty()) continue;
      std::istringstream fields(line);
      std::string in_path, out_path;
      std::vector<int64_t> shape(4);
      fields >> in_path >> out_path >> shape[0] >> shape[1] >> shape[2] >> shape[3];
      if (!fields) throw std::runtime_error("bad line in list: " + line);
      const int64_t count = shape[0] * shape[1] * shape[2] * shape[3];
      std::vector<float> data(count);
      std::ifstream in(in_path, std::ios::binary);
      if (!in.read(reinterpret_cast<char*>(data.data()), count * sizeof(float)))
        throw std::runtime_error("cannot read " + std::to_string(count) + " floats from " + in_path);
      rtseg::Output out = predictor.Run(data.data(), shape);
      std::ofstream bin(out_path, std::ios::binary);
      if (out.is_int32)
        bin.write(reinterpret_cast<const char*>(out.ids.data()), out.ids.size() * sizeof(int32_t));
      else
        bin.write(reinterpret_cast<const char*>(out.scores.data()),
                  out.scores.size() * sizeof(float));
      std::ofstream txt(out_path + ".txt");
      txt << (out.is_int32 ? "int32" : "float32");
      for (int64_t d : out.shape) txt << " " << d;
      txt << "\n";
      if (!bin || !txt) throw std::runtime_error("cannot write " + out_path);
      std::cout << in_path << " -> " << out_path << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
