// shmarray-stack: output files appear whole or not at all.
#pragma once

#include <cstdio>
#include <stdexcept>
#include <string>
#include <utility>

namespace shmarray::stack {

// Calls write(tmp) with a temporary name beside `path`, then renames it to
// `path`: a failure (an exception) leaves any older file of that name
// untouched and removes the temporary.
template <class Write>
void write_then_rename(const std::string& path, Write&& write) {
  const std::string tmp = path + ".partial";
  try {
    std::forward<Write>(write)(tmp);
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw std::runtime_error(path + ": cannot be put in place (rename failed)");
  }
}

}  // namespace shmarray::stack
