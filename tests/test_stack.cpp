// shmarray-stack: TIFF round trips, the pipeline against a plain reference
// written here, bad input, and a /dev/shm too small for the job.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <shmarray/shmarray.hpp>
#include <shmarray/stack/files.hpp>
#include <shmarray/stack/memory.hpp>
#include <shmarray/stack/stages.hpp>
#include <shmarray/stack/tiff.hpp>
#include <string>
#include <vector>

#include "support.hpp"

namespace st = shmarray::stack;
namespace fs = std::filesystem;

namespace {

// The program under test: $SHMARRAY_TEST_STACK names another build of it
// (an older one, to show what a test catches), else the one built here.
const char* stack_program() {
  const char* other = std::getenv("SHMARRAY_TEST_STACK");
  return other && *other ? other : SHMARRAY_STACK;
}

// Where the tests' files go: under the build tree, beside this program.
std::string work_root() {
  const std::string root = fs::read_symlink("/proc/self/exe").parent_path() / "stack-work";
  ::mkdir(root.c_str(), 0755);
  ::chmod(root.c_str(), 0755);
  return root;
}

// A directory of this test's own (under the build tree, searchable by
// other users, as a project directory is), removed with it.
struct temp_dir {
  std::string path;
  temp_dir() {
    std::string t = work_root() + "/XXXXXX";
    path = ::mkdtemp(t.data()) ? t : "";
    ::chmod(path.c_str(), 0755);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

struct result {
  int status = -1;
  std::string output;  // stdout and stderr
  pid_t pid = 0;
  bool exited(int code) const { return test::exited_with(status, code); }
  // Nothing of this run's is left in /dev/shm.
  bool clean() const {
    return test::shm_names("shmarray-stack-" + std::to_string(pid) + "-").empty();
  }
};

// Runs shmarray-stack with `args`.
result run_stack(const std::vector<std::string>& args) {
  const auto r = test::run_program(stack_program(), args);
  return {r.status, r.out + r.err, r.pid};
}

template <class T>
std::vector<T> random_stack(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<T> v(n);
  for (auto& x : v) {
    if constexpr (std::is_floating_point_v<T>)
      x = std::uniform_real_distribution<T>(-5, 5)(rng);
    else
      x = T(rng());
  }
  return v;
}

template <class T>
std::vector<T> read_all_frames(const std::string& path, st::stack_info& info) {
  info = st::probe_tiff(path);
  std::vector<T> out(info.frames * info.height * info.width);
  st::read_tiff(path, info, out.data(), 0, info.frames);
  return out;
}

std::vector<unsigned char> file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// An 8-bit RGB TIFF of one page: colour, which a stack must not be.
void write_rgb(const std::string& path, std::size_t h, std::size_t w) {
  TIFF* t = TIFFOpen(path.c_str(), "w");
  REQUIRE(t);
  std::vector<std::uint8_t> rgb(h * w * 3, 9);
  TIFFSetField(t, TIFFTAG_IMAGEWIDTH, std::uint32_t(w));
  TIFFSetField(t, TIFFTAG_IMAGELENGTH, std::uint32_t(h));
  TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, std::uint16_t(8));
  TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, std::uint16_t(3));
  TIFFSetField(t, TIFFTAG_PHOTOMETRIC, std::uint16_t(PHOTOMETRIC_RGB));
  TIFFSetField(t, TIFFTAG_PLANARCONFIG, std::uint16_t(PLANARCONFIG_CONTIG));
  TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, std::uint32_t(h));
  TIFFWriteEncodedStrip(t, 0, rgb.data(), tmsize_t(rgb.size()));
  TIFFClose(t);
}

// ---- the reference: the pipeline written plainly, one frame at a time

float ref_median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : v[n / 2 - 1] + (v[n / 2] - v[n / 2 - 1]) / 2;
}

std::ptrdiff_t ref_mirror(std::ptrdiff_t i, std::ptrdiff_t n) {
  while (i < 0 || i >= n)
    i = i < 0 ? -1 - i : 2 * n - 1 - i;
  return i;
}

template <class T>
std::vector<T> reference(const std::vector<T>& in, std::size_t frames, std::size_t h, std::size_t w,
                         double sigma, float full) {
  const int r = int(std::ceil(3 * sigma));
  std::vector<double> wd;
  double sum = 0;
  for (int k = -r; k <= r; ++k) {
    wd.push_back(std::exp(-0.5 * k * k / (sigma * sigma)));
    sum += wd.back();
  }
  std::vector<float> kern;
  for (double x : wd)
    kern.push_back(float(x / sum));
  std::vector<T> out(in.size());
  const auto H = std::ptrdiff_t(h), W = std::ptrdiff_t(w);
  for (std::size_t f = 0; f < frames; ++f) {
    std::vector<float> v(h * w), tmp(h * w);
    for (std::size_t i = 0; i < h * w; ++i)
      v[i] = float(in[f * h * w + i]);
    const float bg = ref_median(v);
    for (auto& x : v)
      x = std::max(x - bg, 0.f);
    for (std::ptrdiff_t y = 0; y < H; ++y)
      for (std::ptrdiff_t x = 0; x < W; ++x) {
        float acc = 0;
        for (int k = 0; k <= 2 * r; ++k)
          acc += kern[std::size_t(k)] * v[std::size_t(y * W + ref_mirror(x + k - r, W))];
        tmp[std::size_t(y * W + x)] = acc;
      }
    for (std::ptrdiff_t y = 0; y < H; ++y)
      for (std::ptrdiff_t x = 0; x < W; ++x) {
        float acc = 0;
        for (int k = 0; k <= 2 * r; ++k)
          acc += kern[std::size_t(k)] * tmp[std::size_t(ref_mirror(y + k - r, H) * W + x)];
        v[std::size_t(y * W + x)] = acc;
      }
    const float lo = *std::min_element(v.begin(), v.end());
    const float hi = *std::max_element(v.begin(), v.end());
    const float scale = full / (hi - lo);
    for (std::size_t i = 0; i < h * w; ++i) {
      const float n = hi > lo ? (v[i] - lo) * scale : 0.f;
      if constexpr (std::is_floating_point_v<T>)
        out[f * h * w + i] = n;
      else
        out[f * h * w + i] = T(std::min(std::max(std::nearbyint(n), 0.f), full));
    }
  }
  return out;
}

}  // namespace

TEST_CASE(
    "TIFF stacks round-trip: every pixel type, strips and tiles, classic and BigTIFF, either byte "
    "order") {
  temp_dir d;
  auto check = [&](auto tag, const char* what) {
    using T = decltype(tag);
    const std::size_t F = 3, H = 37, W = 53;  // tiles of 16 that do not fit evenly
    const auto data = random_stack<T>(F * H * W, 7);
    for (std::uint32_t tile : {0u, 16u})
      for (bool big : {false, true})
        for (std::uint16_t comp : {std::uint16_t(COMPRESSION_NONE), std::uint16_t(COMPRESSION_LZW),
                                   std::uint16_t(COMPRESSION_ADOBE_DEFLATE)})
          for (bool be : {false, true}) {
            INFO(what << " tile " << tile << " bigtiff " << big << " compression " << comp
                      << " big-endian " << be);
            st::write_options o;
            o.tile = tile;
            o.rows_per_strip = tile ? 0 : 5;  // many strips, the last one short
            o.big_endian = be;
            o.compression = comp;
            o.bigtiff_above = big ? 0 : o.bigtiff_above;  // a test may lower the threshold
            const std::string path = d / "t.tif";
            st::write_tiff(path, data.data(), F, H, W, o);
            st::stack_info info;
            const auto back = read_all_frames<T>(path, info);
            CHECK(info.frames == F);
            CHECK(info.height == H);
            CHECK(info.width == W);
            CHECK(info.type == st::pixel_of<T>());
            CHECK(info.tiled == (tile != 0));
            CHECK(info.bigtiff == big);
            CHECK(std::memcmp(back.data(), data.data(), data.size() * sizeof(T)) == 0);
            std::vector<T> two(2 * H * W);  // a range of pages alone
            st::read_tiff(path, info, two.data(), 1, 2);
            CHECK(std::memcmp(two.data(), data.data() + H * W, two.size() * sizeof(T)) == 0);
          }
  };
  check(std::uint8_t{}, "uint8");
  check(std::uint16_t{}, "uint16");
  check(float{}, "float32");
}

// Sets the value of `tag` in page `page` (from 0) of a classic little-endian
// TIFF held in `bytes`, as written here: a SHORT or LONG value held inline.
void patch_tag(std::vector<unsigned char>& bytes, int page, std::uint16_t tag, std::uint32_t v) {
  REQUIRE(bytes.size() > 8);
  REQUIRE(bytes[0] == 'I');
  std::uint32_t ifd;
  std::memcpy(&ifd, bytes.data() + 4, 4);
  for (int p = 0;; ++p) {
    std::uint16_t n;
    std::memcpy(&n, bytes.data() + ifd, 2);
    if (p == page) {
      for (std::uint16_t e = 0; e < n; ++e) {
        unsigned char* entry = bytes.data() + ifd + 2 + 12 * e;
        std::uint16_t t, type;
        std::memcpy(&t, entry, 2);
        std::memcpy(&type, entry + 2, 2);
        if (t != tag) continue;
        if (type == TIFF_SHORT) {
          const std::uint16_t v16 = std::uint16_t(v);
          std::memcpy(entry + 8, &v16, 2);
        } else {
          std::memcpy(entry + 8, &v, 4);
        }
        return;
      }
      FAIL("no such tag");
    }
    std::memcpy(&ifd, bytes.data() + ifd + 2 + 12 * n, 4);
    REQUIRE(ifd != 0);
  }
}

void write_bytes(const std::string& path, const std::vector<unsigned char>& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

// One greyscale page of `bits`-bit pixels of sample format `format`.
void write_odd_pixels(const std::string& path, std::uint16_t bits, std::uint16_t format) {
  TIFF* t = TIFFOpen(path.c_str(), "w");
  REQUIRE(t);
  std::vector<unsigned char> px(8 * 8 * 4, 1);
  TIFFSetField(t, TIFFTAG_IMAGEWIDTH, std::uint32_t(8));
  TIFFSetField(t, TIFFTAG_IMAGELENGTH, std::uint32_t(8));
  TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, bits);
  TIFFSetField(t, TIFFTAG_SAMPLEFORMAT, format);
  TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, std::uint16_t(1));
  TIFFSetField(t, TIFFTAG_PHOTOMETRIC, std::uint16_t(PHOTOMETRIC_MINISBLACK));
  TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, std::uint32_t(8));
  TIFFWriteEncodedStrip(t, 0, px.data(), tmsize_t(8 * bits));
  TIFFClose(t);
}

// Every kind of bad input, as files in `d`, with what the error says.
struct bad_input {
  std::string file;
  const char* says;
};
std::vector<bad_input> write_bad_inputs(const temp_dir& d) {
  const std::size_t H = 8, W = 8;
  std::vector<std::uint16_t> px(2 * H * W, 100);
  const std::string good = d / "good.tif";
  st::write_tiff(good, px.data(), 2, H, W);
  std::ofstream(d / "text.tif") << "this is not a TIFF file at all";
  auto head = file_bytes(good);  // a TIFF's header, cut short: truncated, not "not a TIFF"
  head.resize(100);
  write_bytes(d / "head.tif", head);
  write_rgb(d / "rgb.tif", H, W);
  write_odd_pixels(d / "int16.tif", 16, SAMPLEFORMAT_INT);
  write_odd_pixels(d / "bilevel.tif", 1, SAMPLEFORMAT_UINT);
  {  // pages of differing sizes
    TIFF* m = TIFFOpen((d / "mixed.tif").c_str(), "w");
    REQUIRE(m);
    for (std::size_t side : {H, std::size_t(4)}) {
      TIFFSetField(m, TIFFTAG_IMAGEWIDTH, std::uint32_t(side));
      TIFFSetField(m, TIFFTAG_IMAGELENGTH, std::uint32_t(side));
      TIFFSetField(m, TIFFTAG_BITSPERSAMPLE, std::uint16_t(16));
      TIFFSetField(m, TIFFTAG_SAMPLESPERPIXEL, std::uint16_t(1));
      TIFFSetField(m, TIFFTAG_PHOTOMETRIC, std::uint16_t(PHOTOMETRIC_MINISBLACK));
      TIFFSetField(m, TIFFTAG_ROWSPERSTRIP, std::uint32_t(side));
      TIFFWriteEncodedStrip(m, 0, px.data(), tmsize_t(side * side * 2));
      TIFFWriteDirectory(m);
    }
    TIFFClose(m);
  }
  std::vector<std::uint16_t> big(4 * 64 * 64, 3);
  st::write_tiff(d / "full.tif", big.data(), 4, 64, 64);
  auto cut = file_bytes(d / "full.tif");  // the chain of pages cut off
  cut.resize(cut.size() / 2);
  write_bytes(d / "cut.tif", cut);
  auto far = file_bytes(d / "full.tif");  // the chain whole, page 3's pixels past the end
  patch_tag(far, 2, TIFFTAG_STRIPOFFSETS, 0x7ffffff0u);
  write_bytes(d / "far.tif", far);
  auto jp2 = file_bytes(good);  // a compression this libtiff cannot decode
  patch_tag(jp2, 0, TIFFTAG_COMPRESSION, 34712);
  write_bytes(d / "jp2.tif", jp2);
  return {
      {d / "missing.tif", "cannot be opened"},
      {d / "text.tif", "is not a TIFF file"},
      {d / "head.tif", "is truncated or damaged"},
      {d / "rgb.tif", "is in colour"},
      {d / "int16.tif", "16-bit signed integer pixels"},
      {d / "bilevel.tif", "1-bit unsigned pixels"},
      {d / "mixed.tif", "page 2 is 4 x 4 uint16, but page 1 is 8 x 8 uint16"},
      {d / "cut.tif", "is truncated or damaged: page 3 cannot be read"},
      {d / "far.tif", "page 3, strip 1 cannot be read in full"},
      {d / "jp2.tif", "cannot decode"},
  };
}

TEST_CASE("bad TIFF input is a clear tiff_error") {
  temp_dir d;
  for (const auto& b : write_bad_inputs(d)) {
    INFO(b.file);
    CHECK_THROWS_WITH(
        [&] {
          st::stack_info info;
          read_all_frames<std::uint16_t>(b.file, info);
        }(),
        Catch::Contains(b.says) && Catch::Contains(b.file));
  }
}

template <class T>
void check_pipeline(const char* what) {
  INFO(what);
  temp_dir d;
  const std::size_t F = 7, H = 40, W = 50;
  auto data = random_stack<T>(F * H * W, 3);
  if constexpr (std::is_same_v<T, std::uint16_t>)
    for (auto& v : data)
      v = std::uint16_t(v % 4000 + 200);
  st::write_tiff(d / "in.tif", data.data(), F, H, W);
  const auto expect = reference(data, F, H, W, 2.0, st::full_scale<T>());
  std::vector<unsigned char> first_processed, first_max;
  for (const char* jobs : {"1", "2", "3"}) {
    INFO(jobs << " workers");
    const std::string out = d / (std::string("out") + jobs);
    const auto r = run_stack({d / "in.tif", "-o", out, "-j", jobs});
    INFO(r.output);
    REQUIRE(r.exited(0));
    CHECK(r.clean());
    st::stack_info info;
    const auto processed = read_all_frames<T>(out + "/processed.tif", info);
    CHECK(info.frames == F);
    CHECK(processed == expect);
    const auto mx = read_all_frames<T>(out + "/max.tif", info);
    REQUIRE(info.frames == 1);
    for (std::size_t i = 0; i < H * W; ++i) {
      T m = expect[i];
      for (std::size_t f = 1; f < F; ++f)
        m = std::max(m, expect[f * H * W + i]);
      REQUIRE(mx[i] == m);
    }
    const auto mean = read_all_frames<float>(out + "/mean.tif", info);
    const auto sd = read_all_frames<float>(out + "/std.tif", info);
    for (std::size_t i = 0; i < H * W; ++i) {
      double s = 0, s2 = 0;
      for (std::size_t f = 0; f < F; ++f)
        s += expect[f * H * W + i];
      const double mu = s / F;
      for (std::size_t f = 0; f < F; ++f)
        s2 += (expect[f * H * W + i] - mu) * (expect[f * H * W + i] - mu);
      REQUIRE(mean[i] == Approx(mu).epsilon(1e-6));
      REQUIRE(sd[i] == Approx(std::sqrt(s2 / F)).epsilon(1e-5).margin(1e-3));
    }
    const auto p = file_bytes(out + "/processed.tif"), m = file_bytes(out + "/max.tif");
    if (first_processed.empty()) {
      first_processed = p;
      first_max = m;
    }
    CHECK(p == first_processed);  // the files themselves, byte for byte
    CHECK(m == first_max);
    const auto png = file_bytes(out + "/max.png");
    REQUIRE(png.size() > 8);
    CHECK(std::memcmp(png.data(), "\x89PNG", 4) == 0);
  }
}

TEST_CASE("the pipeline is bit-identical for 1, 2 and 3 workers, and equal to a plain reference") {
  check_pipeline<std::uint8_t>("uint8 (normalised to 0..255)");
  check_pipeline<std::uint16_t>("uint16 (normalised to 0..65535)");
  check_pipeline<float>("float32 (normalised to [0, 1])");
}

TEST_CASE("with steps none, processed.tif is the input bit for bit, for every pixel type") {
  temp_dir d;
  auto check = [&](auto tag) {
    using T = decltype(tag);
    const auto data = random_stack<T>(4 * 16 * 24, 11);
    st::write_tiff(d / "in.tif", data.data(), 4, 16, 24);
    const auto r = run_stack({d / "in.tif", "-o", d / "out", "--steps", "none", "-j", "2"});
    INFO(r.output);
    REQUIRE(r.exited(0));
    st::stack_info info;
    const auto back = read_all_frames<T>(d / "out/processed.tif", info);
    CHECK(std::memcmp(back.data(), data.data(), data.size() * sizeof(T)) == 0);
  };
  check(std::uint8_t{});
  check(std::uint16_t{});
  check(float{});
}

TEST_CASE("processed.tif is written as BigTIFF past the threshold (lowered here)") {
  temp_dir d;
  ::setenv("SHMARRAY_STACK_BIGTIFF_ABOVE", "10000", 1);
  const auto r = run_stack({"--synthetic", "3,32,32", "-o", d / "out", "-j", "1"});
  ::unsetenv("SHMARRAY_STACK_BIGTIFF_ABOVE");
  INFO(r.output);
  REQUIRE(r.exited(0));
  CHECK(st::probe_tiff(d / "out/processed.tif").bigtiff);
  CHECK_FALSE(st::probe_tiff(d / "out/max.tif").bigtiff);
  const auto plain = run_stack({"--synthetic", "3,32,32", "-o", d / "plain", "-j", "1"});
  REQUIRE(plain.exited(0));
  CHECK_FALSE(st::probe_tiff(d / "plain/processed.tif").bigtiff);
}

TEST_CASE("shmarray-stack: bad input exits non-zero with a clear message and leaves nothing") {
  temp_dir d;
  for (const auto& b : write_bad_inputs(d)) {  // probed by the parent, or read by a worker
    const auto r = run_stack({b.file, "-j", "2", "-o", d / "out"});
    INFO(b.file << ": " << r.output);
    CHECK(r.exited(1));
    CHECK(r.output.find(b.says) != std::string::npos);
    CHECK(r.clean());
  }
  struct bad {
    std::vector<std::string> args;
    int code;
    const char* says;
  };
  for (const auto& b : std::vector<bad>{
           {{"--steps", "blur,background"}, 2, "out of order"},
           {{"--steps", "sharpen"}, 2, "unknown step 'sharpen'"},
           {{"--sigma", "0"}, 2, "--sigma"},
           {{"--synthetic", "0,10,10"}, 2, "--synthetic takes"},
           {{"-j", "0"}, 2, "-j"},
           {{d / "text.tif", "--synthetic", "2,8,8"}, 2, "not both"},
       }) {
    auto args = b.args;
    args.insert(args.end(), {"-o", d / "out"});
    const auto r = run_stack(args);
    INFO(args[0] << ": " << r.output);
    CHECK(r.exited(b.code));
    CHECK(r.output.find(b.says) != std::string::npos);
    CHECK(r.clean());
  }
  // An output directory that cannot be made is refused before any work.
  std::ofstream(d / "a-file") << "x";
  const auto no_dir = run_stack({"--synthetic", "2,8,8", "-o", d / "a-file"});
  CHECK(no_dir.exited(1));
  CHECK(no_dir.output.find("cannot write there") != std::string::npos);
  CHECK(no_dir.output.find("frames of") == std::string::npos);  // nothing started
  CHECK(no_dir.clean());
  const auto help = run_stack({"--help"});
  CHECK(help.exited(0));
  CHECK(help.output.find("--scratch") != std::string::npos);
}

TEST_CASE("a /dev/shm too small for the job: a message with the ways out, or --scratch on disk") {
  temp_dir d;
  const auto r = test::in_small_tmpfs("/dev/shm", "4m", [&](auto say) {
    const auto small = run_stack({"--synthetic", "40,128,128", "-o", d / "out", "-j", "2"});
    say(small.output);
    if (!small.exited(1)) return 1;
    if (small.output.find("--shm-size") == std::string::npos) return 2;
    if (small.output.find("--scratch") == std::string::npos) return 3;
    if (small.output.find("bytes") == std::string::npos) return 4;
    if (!small.clean()) return 5;
    const auto disk =
        run_stack({"--synthetic", "40,128,128", "-o", d / "out", "-j", "2", "--scratch", d.path});
    say(disk.output);
    if (!disk.exited(0)) return 6;
    if (!fs::exists(d / "out/max.png")) return 7;
    for (const auto& e : fs::directory_iterator(d.path))  // the file-backed arrays are gone
      if (e.path().extension() == ".bin") return 8;
    return 0;
  });
  if (r.skipped()) return;
  INFO(r.said);
  CHECK(r.ok());
}

TEST_CASE("while the job runs, another process attaches its stack by name") {
  temp_dir d;
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    ::close(fds[0]);
    ::close(fds[1]);
    const std::string out = d / "out";
    ::execl(stack_program(), stack_program(), "--synthetic", "120,512,512", "-j", "1", "-o",
            out.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[1]);
  // Its names are /shmarray-stack-PID-RANDOM-input and so on.
  const std::string prefix = "shmarray-stack-" + std::to_string(pid) + "-";
  bool seen = false;
  for (int i = 0; i < 1000 && !seen; ++i) {
    std::string name;
    for (const auto& n : test::shm_names(prefix))
      if (n.size() > 6 && n.compare(n.size() - 6, 6, "-input") == 0) name = "/" + n;
    if (name.empty()) {
      ::usleep(2000);
      continue;
    }
    INFO(name);
    CHECK(name.size() == 1 + prefix.size() + 16 + 6);  // 16 random hex digits
    try {
      auto stack = shmarray::ndarray<const std::uint16_t>::attach(name);
      CHECK(stack.shape() == shmarray::shape_type{120, 512, 512});
      seen = true;
    } catch (const shmarray::not_found&) {
      ::usleep(2000);
    } catch (const shmarray::not_ready&) {
      ::usleep(2000);
    }
  }
  const std::string output = test::read_all(fds[0]);
  ::close(fds[0]);
  INFO(output);
  CHECK(seen);
  CHECK(test::exited_with(test::reap(pid), 0));
  CHECK(test::shm_names("shmarray-stack-" + std::to_string(pid) + "-").empty());
}

TEST_CASE(
    "float input with NaN and inf: the finite pixels are processed, the rest stay non-finite") {
  temp_dir d;
  const std::size_t F = 3, H = 16, W = 20, n = H * W;
  auto data = random_stack<float>(F * n, 5);
  data[5] = std::numeric_limits<float>::quiet_NaN();
  data[n + 7] = std::numeric_limits<float>::infinity();
  data[2 * n + 9] = -std::numeric_limits<float>::infinity();
  st::write_tiff(d / "in.tif", data.data(), F, H, W);
  const auto r = run_stack({d / "in.tif", "-o", d / "out", "-j", "2"});
  INFO(r.output);
  REQUIRE(r.exited(0));
  st::stack_info info;
  const auto out = read_all_frames<float>(d / "out/processed.tif", info);
  for (std::size_t f = 0; f < F; ++f) {
    float lo = INFINITY, hi = -INFINITY;
    std::size_t odd = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const float v = out[f * n + i];
      if (!std::isfinite(v)) {
        ++odd;
        continue;
      }
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    INFO("frame " << f);
    CHECK(lo == 0.f);  // the range of the finite pixels, whatever the others
    CHECK(hi == 1.f);
    if (f < 2) {
      CHECK(odd > 0);         // NaN and +inf stayed so, spread by the blur ...
      CHECK(odd <= 13 * 13);  // ... over its kernel's square (radius 6), no more
    } else {
      CHECK(odd == 0);  // -inf, below the background, was clamped to 0 like any such value
    }
  }
  const auto png = file_bytes(d / "out/max.png");
  CHECK(png.size() > 8);
}

TEST_CASE("an output file is whole or not there: a failed write leaves the old one") {
  temp_dir d;
  const std::string path = d / "x.tif";
  std::ofstream(path) << "old";
  auto text = [&] {
    const auto b = file_bytes(path);
    return std::string(b.begin(), b.end());
  };
  auto put = [](int fd, const char* what) {
    const ssize_t n = ::write(fd, what, std::strlen(what));
    ::close(fd);
    REQUIRE(n == ssize_t(std::strlen(what)));
  };
  const st::output_dir dir(d.path, false);
  CHECK_THROWS_WITH(dir.write("x.tif",
                              [&](int fd, const std::string& shown) {
                                CHECK(shown == path);
                                put(fd, "half");
                                throw std::runtime_error("disk full");
                              }),
                    "disk full");
  CHECK(text() == "old");
  std::size_t entries = 0;
  for (const auto& e : fs::directory_iterator(d.path))  // the temporary went
    entries += e.path().filename() != "x.tif";
  CHECK(entries == 0);
  dir.write("x.tif", [&](int fd, const std::string&) { put(fd, "new"); });
  CHECK(text() == "new");
  entries = 0;
  for (const auto& e : fs::directory_iterator(d.path))
    entries += e.path().filename() != "x.tif";
  CHECK(entries == 0);
}

// ---- hostile neighbours and hostile files (issue 19)

namespace {

// Another local user is played by nobody, which needs root and setpriv.
bool cannot_play_nobody() {
  if (::geteuid() == 0 && ::access("/usr/bin/setpriv", X_OK) == 0) return false;
  std::printf("SHMARRAY-SKIP: needs root and setpriv to act as another user\n");
  return true;
}

// Runs `script` with /bin/sh as nobody; its exit code.
int as_nobody(const std::string& script) {
  return test::run_program("/usr/bin/setpriv", {"--reuid=nobody", "--regid=nogroup",
                                                "--clear-groups", "/bin/sh", "-c", script})
      .code;
}

std::string text_of(const std::string& path) {
  const auto b = file_bytes(path);
  return std::string(b.begin(), b.end());
}

bool is_link(const std::string& path) {
  struct stat sb {};
  return ::lstat(path.c_str(), &sb) == 0 && S_ISLNK(sb.st_mode);
}

bool is_regular(const std::string& path) {
  struct stat sb {};
  return ::lstat(path.c_str(), &sb) == 0 && S_ISREG(sb.st_mode);
}

std::vector<std::string> entries_of(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    out.push_back(e.path().filename());
  std::sort(out.begin(), out.end());
  return out;
}

const std::vector<std::string> outputs{"processed.tif", "max.tif", "mean.tif", "std.tif",
                                       "max.png"};

// A job started in the background. With `hold`, it waits for go() before
// it execs, so that its pid is known before it runs. `env` entries
// (NAME=VALUE) are added to its environment.
struct background_job {
  pid_t pid = -1;
  int out = -1, go_fd = -1;
  background_job(const std::vector<std::string>& args, const std::vector<std::string>& env = {},
                 bool hold = false) {
    int o[2], g[2];
    REQUIRE(::pipe(o) == 0);
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, g) == 0);  // see go()
    std::fflush(nullptr);
    pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::setpgid(0, 0);  // a group of its own, which a timeout kills whole
      ::dup2(o[1], 1);
      ::dup2(o[1], 2);
      ::close(o[0]);
      ::close(o[1]);
      ::close(g[1]);
      char c;
      if (hold && ::read(g[0], &c, 1) != 1) ::_exit(126);
      ::close(g[0]);
      for (const auto& e : env)
        ::putenv(const_cast<char*>(e.c_str()));
      std::vector<char*> argv{const_cast<char*>(stack_program())};
      for (const auto& a : args)
        argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(stack_program(), argv.data());
      ::_exit(127);
    }
    ::close(o[1]);
    ::close(g[0]);
    out = o[0];
    go_fd = g[1];
    if (!hold) go();
  }
  void go() {
    if (go_fd < 0) return;
    // A job that did not wait (or is gone) is no SIGPIPE of this test's.
    (void)!::send(go_fd, "g", 1, MSG_NOSIGNAL);
    ::close(go_fd);
    go_fd = -1;
  }
  // Its output and end, waiting at most `seconds`: then it is killed
  // (SIGKILL to its group) and `timed_out` says so.
  result finish(double seconds = 300, bool* timed_out = nullptr) {
    go();
    result r;
    r.pid = pid;
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    bool late = false;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            until - std::chrono::steady_clock::now())
                            .count();
      if (left <= 0) {
        late = true;
        ::kill(-pid, SIGKILL);
        break;
      }
      pollfd p{out, POLLIN, 0};
      if (::poll(&p, 1, int(std::min<long long>(left, 1000))) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::read(out, buf, sizeof buf);
      if (n <= 0) break;
      r.output.append(buf, std::size_t(n));
    }
    ::close(out);
    r.status = test::reap(pid);
    if (timed_out) *timed_out = late;
    return r;
  }
};

// In `d`: a directory only root may enter, and a project directory the
// other user can write, not sticky (where fs.protected_symlinks protects
// nothing).
std::pair<std::string, std::string> private_and_shared(const temp_dir& d) {
  const std::string priv = d / "private", shared = d / "shared";
  fs::create_directory(priv);
  ::chmod(priv.c_str(), 0700);
  fs::create_directory(shared);
  ::chmod(shared.c_str(), 0777);
  return {priv, shared};
}

// Waits up to 5 s until the job `pid` has nothing left in /dev/shm (its
// watchdog removes its arrays after it is killed).
bool shm_clean_soon(pid_t pid) {
  const std::string prefix = "shmarray-stack-" + std::to_string(pid) + "-";
  for (int i = 0; i < 500; ++i) {
    if (test::shm_names(prefix).empty()) return true;
    ::usleep(10000);
  }
  return false;
}

}  // namespace

TEST_CASE(
    "outputs are never written through another user's links: links planted at the outputs' "
    "names and at the old temporary names are replaced or left, never followed") {
  if (cannot_play_nobody()) return;
  temp_dir d;
  const auto [priv, shared] = private_and_shared(d);
  std::string plant;
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const std::string secret = priv + "/secret" + std::to_string(i);
    std::ofstream(secret) << "secret";
    ::chmod(secret.c_str(), 0600);
    plant += "ln -s " + secret + " " + shared + "/" + outputs[i] + ".partial && ";
  }
  std::ofstream(priv + "/target") << "secret";
  ::chmod((priv + "/target").c_str(), 0600);
  plant += "ln -s " + priv + "/target " + shared + "/max.tif";
  REQUIRE(as_nobody(plant) == 0);
  REQUIRE(is_link(shared + "/max.tif"));

  const auto r = run_stack({"--synthetic", "3,16,16", "-j", "1", "-o", shared});
  INFO(r.output);
  CHECK(r.exited(0));
  CHECK(r.clean());
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    INFO(outputs[i]);
    CHECK(text_of(priv + "/secret" + std::to_string(i)) == "secret");
    CHECK(is_link(shared + "/" + outputs[i] + ".partial"));  // left alone
    CHECK(is_regular(shared + "/" + outputs[i]));            // a file of its own
  }
  CHECK(text_of(priv + "/target") == "secret");
  CHECK(st::probe_tiff(shared + "/max.tif").frames == 1);
  CHECK(entries_of(shared).size() == 2 * outputs.size());  // no temporary left
}

TEST_CASE(
    "an output or scratch directory reached through another user's link is refused, the "
    "caller's own link is followed") {
  if (cannot_play_nobody()) return;
  temp_dir d;
  const auto [priv, shared] = private_and_shared(d);
  REQUIRE(as_nobody("ln -s " + priv + " " + shared + "/out") == 0);
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"-o", shared + "/out"},
           {"-o", shared + "/out/sub/dir"},
           {"-o", d / "fine", "--scratch", shared + "/out"},
       }) {
    auto a = args;
    a.insert(a.begin(), {"--synthetic", "2,8,8", "-j", "1"});
    const auto r = run_stack(a);
    INFO(args[1] << " " << r.output);
    CHECK(r.exited(1));
    CHECK(r.output.find("is a symbolic link owned by uid") != std::string::npos);
    CHECK(r.output.find("not followed") != std::string::npos);
    CHECK(r.output.find("frames of") == std::string::npos);  // refused before any work
    CHECK(entries_of(priv).empty());
    CHECK(r.clean());
  }
  // The caller's own link is the caller's choice.
  fs::create_directory(d / "target");
  fs::create_directory_symlink(d / "target", shared + "/mine");
  const auto mine = run_stack({"--synthetic", "2,8,8", "-j", "1", "-o", shared + "/mine"});
  INFO(mine.output);
  CHECK(mine.exited(0));
  CHECK(is_regular(d / "target/max.png"));
}

TEST_CASE(
    "a scratch directory (--scratch DIR) is made when missing, components and all, as -o OUTDIR "
    "is") {
  temp_dir d;
  const auto made = run_stack(
      {"--synthetic", "2,8,8", "-j", "1", "-o", d / "new/a/b", "--scratch", d / "scratch/x/y"});
  INFO(made.output);
  CHECK(made.exited(0));
  CHECK(is_regular(d / "new/a/b/max.png"));
  CHECK(fs::is_directory(d / "scratch/x/y"));
  CHECK(entries_of(d / "scratch/x/y").empty());  // the file-backed arrays went
  CHECK(made.clean());
  // A file where the directory should be is refused before any work.
  std::ofstream(d / "a-file") << "x";
  const auto file = run_stack({"--synthetic", "2,8,8", "-o", d / "out", "--scratch", d / "a-file"});
  INFO(file.output);
  CHECK(file.exited(1));
  CHECK(file.output.find("--scratch " + d / "a-file" + ": cannot keep arrays there") !=
        std::string::npos);
  CHECK(file.output.find("frames of") == std::string::npos);
}

TEST_CASE("outputs have the mode they had before temporaries: 0666 less the umask") {
  temp_dir d;
  for (const mode_t mask : {mode_t(022), mode_t(027), mode_t(077)}) {
    const mode_t old = ::umask(mask);
    const auto r = run_stack({"--synthetic", "2,8,8", "-j", "1", "-o", d / "out"});
    ::umask(old);
    INFO(r.output << " umask " << mask);
    REQUIRE(r.exited(0));
    for (const auto& name : outputs) {
      struct stat sb {};
      REQUIRE(::stat((d / "out/" + name).c_str(), &sb) == 0);
      CHECK((sb.st_mode & 07777) == (0666 & ~mask));
    }
  }
}

TEST_CASE(
    "SIGINT or SIGTERM while the outputs are written removes the temporary and keeps the "
    "previous outputs, and the job ends by the signal and its arrays go") {
  for (const int sig : {SIGINT, SIGTERM}) {
    INFO("signal " << sig);
    temp_dir d;
    const std::string out = d / "out";
    fs::create_directory(out);
    for (const auto& name : outputs)
      std::ofstream(out + "/" + name) << "old";
    // processed.tif is about 100 MB: it takes a while to write.
    background_job job({"--synthetic", "200,512,512", "--steps", "none", "-j", "2", "-o", out});
    std::string seen;  // the temporary that was there when the signal went
    for (int i = 0; i < 600000 && seen.empty(); ++i) {
      for (const auto& e : entries_of(out))
        if (e.size() > 8 && e.compare(e.size() - 8, 8, ".partial") == 0) seen = e;
      if (seen.empty() && !test::running(job.pid)) break;
      if (seen.empty()) ::usleep(100);
    }
    if (!seen.empty()) ::kill(job.pid, sig);
    const auto r = job.finish();
    INFO(r.output);
    REQUIRE_FALSE(seen.empty());
    CHECK(test::killed_by(r.status, sig));
    for (const auto& e : entries_of(out)) {
      INFO(e);
      CHECK(e.find(".partial") == std::string::npos);
    }
    // The file being written when the signal came is the old one still.
    const std::string written = seen.substr(0, seen.find('.', seen.find('.') + 1));
    INFO(written);
    CHECK(text_of(out + "/" + written) == "old");
    CHECK(shm_clean_soon(r.pid));
  }
}

namespace {

// One page of w x h 8-bit pixels, one strip in `codec`, as libtiff writes
// it; `raw`, if given, is written as the strip's data as it is.
void write_one_strip(const std::string& path, std::uint32_t w, std::uint32_t h, std::uint16_t codec,
                     const std::vector<std::uint8_t>& px,
                     const std::vector<unsigned char>& raw = {}) {
  TIFF* t = TIFFOpen(path.c_str(), "w");
  REQUIRE(t);
  TIFFSetField(t, TIFFTAG_IMAGEWIDTH, w);
  TIFFSetField(t, TIFFTAG_IMAGELENGTH, h);
  TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, std::uint16_t(8));
  TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, std::uint16_t(1));
  TIFFSetField(t, TIFFTAG_PHOTOMETRIC, std::uint16_t(PHOTOMETRIC_MINISBLACK));
  TIFFSetField(t, TIFFTAG_COMPRESSION, codec);
  TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, h);
  if (raw.empty())
    REQUIRE(TIFFWriteEncodedStrip(t, 0, const_cast<std::uint8_t*>(px.data()),
                                  tmsize_t(px.size())) >= 0);
  else
    REQUIRE(TIFFWriteRawStrip(t, 0, const_cast<unsigned char*>(raw.data()), tmsize_t(raw.size())) >=
            0);
  TIFFClose(t);
}

// The LZW stream that decodes to the most bytes per bit libtiff allows
// (tiff.hpp derives the bound): after a Clear, the literal `v`, then codes
// 258, 259, ..., 4095 (each names the entry it adds: runs of v of length
// 2, 3, ..., 3839), then 4095 until the table's 5119 entries are full,
// then end-of-information. It decodes to 11,298,177 bytes of v.
std::vector<unsigned char> longest_lzw(std::uint8_t v) {
  std::vector<unsigned char> out;
  std::uint64_t acc = 0;
  int bits = 0;
  auto put = [&](unsigned code, int width) {
    acc = (acc << width) | code;
    bits += width;
    while (bits >= 8) {
      out.push_back(static_cast<unsigned char>(acc >> (bits - 8)));
      bits -= 8;
    }
  };
  // The width of the k-th code after a Clear: the table's size then.
  auto width = [](int k) { return k <= 254 ? 9 : k <= 766 ? 10 : k <= 1790 ? 11 : 12; };
  put(256, 9);  // Clear
  put(v, width(1));
  int k = 2;
  for (; k <= 3839; ++k)
    put(unsigned(256 + k), width(k));
  for (; k <= 4862; ++k)
    put(4095, width(k));
  put(257, width(k));  // end of information
  if (bits) out.push_back(static_cast<unsigned char>(acc << (8 - bits)));
  return out;
}

}  // namespace

TEST_CASE(
    "a 126-byte LZW file declaring a 12000 x 12000 page is refused as damaged before anything "
    "is reserved") {
  temp_dir d;
  const std::string path = d / "bomb.tif";
  write_one_strip(path, 8, 8, COMPRESSION_LZW, std::vector<std::uint8_t>(64, 0));
  auto b = file_bytes(path);
  patch_tag(b, 0, TIFFTAG_IMAGEWIDTH, 12000);
  patch_tag(b, 0, TIFFTAG_IMAGELENGTH, 12000);
  patch_tag(b, 0, TIFFTAG_ROWSPERSTRIP, 12000);
  write_bytes(path, b);
  INFO(b.size() << " bytes");
  CHECK(b.size() < 300);
  CHECK_THROWS_WITH(st::probe_tiff(path),
                    Catch::Contains("page 1, strip 1 cannot be read in full") &&
                        Catch::Contains("LZW") && Catch::Contains("144000000"));
  const auto r = run_stack({path, "-j", "2", "-o", d / "out"});
  INFO(r.output);
  CHECK(r.exited(1));
  CHECK(r.output.find("cannot be read in full") != std::string::npos);
  CHECK(r.output.find("frames of") == std::string::npos);  // no array was made
  CHECK(r.clean());
}

TEST_CASE(
    "a strip's byte count is checked at its codec's bound: at the bound the page is accepted, "
    "a byte short of it refused (none, PackBits, LZW, Deflate)") {
  temp_dir d;
  struct edge {
    std::uint16_t codec;
    std::uint32_t w, h;
    std::uint8_t value;
    std::uint64_t ratio;  // the bound, bytes per byte
  };
  for (const auto& e : std::vector<edge>{
           {COMPRESSION_NONE, 16, 8, 0, 1},
           {COMPRESSION_PACKBITS, 16, 8, 7, 64},
           {COMPRESSION_LZW, 3839, 2943, 7, 1628},
           {COMPRESSION_ADOBE_DEFLATE, 2048, 2048, 0, 1032},
       }) {
    INFO("compression " << e.codec);
    const std::string path = d / "edge.tif";
    const std::size_t n = std::size_t(e.w) * e.h;
    std::vector<std::uint8_t> px(n, e.value);
    if (e.codec == COMPRESSION_NONE)
      for (std::size_t i = 0; i < n; ++i)
        px[i] = std::uint8_t(i * 37);
    // The data as the codec makes it (for LZW, the stream at the bound's
    // ratio): accepted and read back whole.
    write_one_strip(
        path, e.w, e.h, e.codec, px,
        e.codec == COMPRESSION_LZW ? longest_lzw(e.value) : std::vector<unsigned char>{});
    st::stack_info info;
    REQUIRE(read_all_frames<std::uint8_t>(path, info) == px);
    // The fewest bytes the bound lets hold the strip, and one fewer: the
    // strip's first k bytes moved to the end of the file, its byte count k.
    const std::uint64_t least = (n + e.ratio - 1) / e.ratio;
    INFO("at least " << least << " bytes");
    TIFF* t = TIFFOpen(path.c_str(), "r");
    REQUIRE(t);
    const std::uint64_t off = TIFFGetStrileOffset(t, 0), count = TIFFGetStrileByteCount(t, 0);
    TIFFClose(t);
    const auto good = file_bytes(path);
    auto at_end = [&](std::uint64_t k) {
      auto b = good;
      std::vector<unsigned char> data(good.begin() + std::ptrdiff_t(off),
                                      good.begin() + std::ptrdiff_t(off + std::min(count, k)));
      data.resize(k, 0);
      patch_tag(b, 0, TIFFTAG_STRIPOFFSETS, std::uint32_t(b.size()));
      patch_tag(b, 0, TIFFTAG_STRIPBYTECOUNTS, std::uint32_t(k));
      b.insert(b.end(), data.begin(), data.end());
      write_bytes(path, b);
    };
    at_end(least);
    CHECK_NOTHROW(st::probe_tiff(path));
    if (e.codec == COMPRESSION_NONE) CHECK(read_all_frames<std::uint8_t>(path, info) == px);
    at_end(least - 1);
    CHECK_THROWS_WITH(st::probe_tiff(path),
                      Catch::Contains("page 1, strip 1 cannot be read in full") &&
                          Catch::Contains("its " + std::to_string(least - 1) + " bytes"));
    const auto r = run_stack({path, "-j", "1", "-o", d / "out"});
    INFO(r.output);
    CHECK(r.exited(1));
    CHECK(r.output.find("frames of") == std::string::npos);
  }
}

TEST_CASE(
    "a page in a codec without a bound is decoded before the stack is reserved: ZSTD or LZMA "
    "data that cannot fill page 1 are refused first, whole data run") {
  temp_dir d;
  int tried = 0;
  for (const std::uint16_t codec :
       {std::uint16_t(COMPRESSION_ZSTD), std::uint16_t(COMPRESSION_LZMA)}) {
    if (!TIFFIsCODECConfigured(codec)) continue;
    ++tried;
    INFO("compression " << codec);
    const auto data = random_stack<std::uint16_t>(3 * 32 * 40, 9);
    st::write_options o;
    o.compression = codec;
    o.rows_per_strip = 32;  // a strip per page
    const std::string whole = d / "whole.tif", cut = d / "cut.tif";
    st::write_tiff(whole, data.data(), 3, 32, 40, o);
    const auto ok = run_stack({whole, "--steps", "none", "-j", "2", "-o", d / "out"});
    INFO(ok.output);
    CHECK(ok.exited(0));
    for (int page : {0, 1}) {  // page 1 damaged: refused before; page 2: when read
      auto b = file_bytes(whole);
      patch_tag(b, page, TIFFTAG_STRIPBYTECOUNTS, 12);
      write_bytes(cut, b);
      const auto r = run_stack({cut, "-j", "2", "-o", d / "out"});
      INFO(r.output);
      CHECK(r.exited(1));
      CHECK(r.output.find("page " + std::to_string(page + 1) + ", strip 1 cannot be read") !=
            std::string::npos);
      CHECK((r.output.find("frames of") == std::string::npos) == (page == 0));
      CHECK(r.clean());
    }
  }
  CHECK(tried > 0);
}

TEST_CASE(
    "the memory figures are MemAvailable and the room the tightest cgroup limit leaves, v1 and "
    "v2, ancestors included") {
  temp_dir d;
  const std::string root = d.path;
  auto put = [&](const std::string& rel, const std::string& text) {
    fs::create_directories(fs::path(root + rel).parent_path());
    std::ofstream(root + rel) << text;
  };
  put("/proc/meminfo", "MemTotal:  8000000 kB\nMemFree:  100 kB\nMemAvailable:  4000000 kB\n");
  put("/proc/cgroup", "12:cpu,cpuacct:/a\n4:memory:/job/step\n0::/job/step\n");
  put("/proc/mountinfo",
      "30 1 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
      "31 1 0:27 / /sys/fs/cgroup/uni\\040fied rw,relatime - cgroup2 cgroup2 rw\n");
  // v2: the parent's limit is the tighter one; its inactive file pages are
  // reclaimable.
  put("/sys/fs/cgroup/uni fied/job/memory.max", "3000000000\n");
  put("/sys/fs/cgroup/uni fied/job/memory.current", "1000000000\n");
  put("/sys/fs/cgroup/uni fied/job/memory.stat", "anon 600000000\ninactive_file 400000000\n");
  put("/sys/fs/cgroup/uni fied/job/step/memory.max", "max\n");
  put("/sys/fs/cgroup/uni fied/job/step/memory.current", "900000000\n");
  // v1: no limit (the largest page count).
  put("/sys/fs/cgroup/memory/job/step/memory.limit_in_bytes", "9223372036854771712\n");
  put("/sys/fs/cgroup/memory/job/step/memory.usage_in_bytes", "5\n");
  st::memory_sources src;
  src.meminfo = root + "/proc/meminfo";
  src.self_cgroup = root + "/proc/cgroup";
  src.mountinfo = root + "/proc/mountinfo";
  src.root = root;
  auto m = st::memory_for_shared_arrays(src);
  CHECK(m.meminfo == std::uint64_t(4000000) * 1024);
  REQUIRE(m.cgroup_room);
  CHECK(*m.cgroup_room == 3000000000u - 600000000u);
  CHECK(m.cgroup_limit == 3000000000u);
  CHECK(m.cgroup == "/sys/fs/cgroup/uni fied/job");
  CHECK(m.available() == 2400000000u);
  const std::string say = st::memory_shortfall(2500000000u, 9000000000u, m);
  CHECK(say.find("/dev/shm has 9000000000 bytes") != std::string::npos);
  CHECK(say.find("MemAvailable in /proc/meminfo is 4096000000 bytes") != std::string::npos);
  CHECK(say.find("cgroup /sys/fs/cgroup/uni fied/job, 3000000000 bytes") != std::string::npos);
  CHECK(say.find("leaves 2400000000 bytes") != std::string::npos);
  CHECK(st::memory_shortfall(2400000000u, 9000000000u, m).empty());
  // v1 with a limit tighter than v2's.
  put("/sys/fs/cgroup/memory/job/memory.limit_in_bytes", "1000000000\n");
  put("/sys/fs/cgroup/memory/job/memory.usage_in_bytes", "300000000\n");
  put("/sys/fs/cgroup/memory/job/memory.stat", "inactive_file 1\ntotal_inactive_file 100000000\n");
  m = st::memory_for_shared_arrays(src);
  CHECK(m.cgroup_room == 800000000u);
  CHECK(m.cgroup == "/sys/fs/cgroup/memory/job");
  // Nothing readable: no figure, so no refusal.
  st::memory_sources none;
  none.meminfo = none.self_cgroup = none.mountinfo = root + "/missing";
  CHECK(st::memory_for_shared_arrays(none).available() == ~std::uint64_t(0));
}

TEST_CASE(
    "a job larger than the memory that can back /dev/shm is refused, naming /dev/shm's free "
    "bytes and the memory figures, while --scratch and a job that fits still run") {
  temp_dir d;
  const std::string fake = d / "fake";
  fs::create_directory(fake);
  std::ofstream(fake + "/meminfo-small") << "MemTotal: 100000 kB\nMemAvailable:   50000 kB\n";
  std::ofstream(fake + "/meminfo-big") << "MemTotal: 90000000 kB\nMemAvailable: 80000000 kB\n";
  std::ofstream(fake + "/cgroup-none") << "0::/\n";
  std::ofstream(fake + "/cgroup-v2") << "0::/job/step\n";
  std::ofstream(fake + "/cgroup-v1") << "4:memory:/job\n0::/\n";
  std::ofstream(fake + "/mountinfo-v2")
      << "99 1 0:99 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n";
  std::ofstream(fake + "/mountinfo-v1")
      << "98 1 0:98 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n";
  // The job sees these in place of its /proc/meminfo, /proc/self/cgroup and
  // /proc/self/mountinfo, and a tmpfs of cgroup files, in a mount namespace
  // of its own (the shell binds them over its own /proc files, then execs).
  auto job = [&](const std::string& meminfo, const std::string& kind,
                 const std::vector<std::string>& args) {
    std::string cmd = "mount --bind " + fake + "/meminfo-" + meminfo + " /proc/meminfo && ";
    cmd += "mount --bind " + fake + "/cgroup-" + kind + " /proc/$$/cgroup && ";
    if (kind != "none")
      cmd += "mount --bind " + fake + "/mountinfo-" + kind + " /proc/$$/mountinfo && ";
    cmd += "exec " + std::string(stack_program());
    for (const auto& a : args)
      cmd += " '" + a + "'";
    return test::run_program("/bin/sh", {"-c", cmd});
  };
  const auto r = test::in_small_tmpfs("/dev/shm", "1g", [&](auto say) {
    if (::mount("tmpfs", "/sys/fs/cgroup", "tmpfs", 0, "size=1m") != 0) {
      say(std::string("mount over /sys/fs/cgroup: ") + std::strerror(errno));
      return 77;
    }
    auto put = [](const std::string& path, const std::string& text) {
      fs::create_directories(fs::path(path).parent_path());
      std::ofstream(path) << text;
    };
    put("/sys/fs/cgroup/job/memory.max", "67108864\n");  // 64 MiB, a level up
    put("/sys/fs/cgroup/job/memory.current", "1048576\n");
    put("/sys/fs/cgroup/job/step/memory.max", "max\n");
    put("/sys/fs/cgroup/job/step/memory.current", "1048576\n");
    put("/sys/fs/cgroup/memory/job/memory.limit_in_bytes", "67108864\n");
    put("/sys/fs/cgroup/memory/job/memory.usage_in_bytes", "1048576\n");
    const std::vector<std::string> big{"--synthetic", "200,256,256", "-j", "1", "-o", d / "out"};
    struct want {
      const char* meminfo;
      const char* kind;
      const char* says;
    };
    int rc = 10;
    for (const auto& w : std::vector<want>{
             {"small", "none", "MemAvailable in /proc/meminfo is 51200000 bytes"},
             {"big", "v2", "the memory limit of cgroup /sys/fs/cgroup/job, 67108864 bytes"},
             {"big", "v1", "the memory limit of cgroup /sys/fs/cgroup/memory/job, 67108864"},
         }) {
      ++rc;
      const auto p = job(w.meminfo, w.kind, big);
      say(p.out + p.err);
      if (p.code != 1) return rc;
      if (p.err.find(w.says) == std::string::npos) return rc + 100;
      if (p.err.find("/dev/shm has") == std::string::npos) return rc + 200;
      if (p.err.find("--scratch DIR") == std::string::npos) return rc + 300;
      if (p.out.find("frames of") != std::string::npos) return rc + 400;
    }
    // On disk the arrays are file pages, which the memory does not hold.
    auto scratch = big;
    scratch.insert(scratch.end(), {"--scratch", d / "scratch"});
    const auto disk = job("small", "none", scratch);
    say(disk.out + disk.err);
    if (disk.code != 0) return 20;
    const auto fits = job("small", "v2", {"--synthetic", "4,64,64", "-j", "1", "-o", d / "out"});
    say(fits.out + fits.err);
    if (fits.code != 0) return 21;
    return 0;
  });
  if (r.skipped()) return;
  INFO(r.said);
  CHECK(r.ok());
}

TEST_CASE(
    "every numeric option is checked: a value out of range or not a number exits 2, naming the "
    "option and the value") {
  temp_dir d;
  struct bad {
    std::vector<std::string> args;
    std::string says;
  };
  for (const auto& b : std::vector<bad>{
           {{"--sigma", "1e-300", "--steps", "blur"}, "--sigma 1e-300"},
           {{"--sigma", "1e-300", "--steps", "none"}, "--sigma 1e-300"},
           {{"--sigma", "0.001"}, "--sigma 0.001"},
           {{"--sigma", "1001"}, "--sigma 1001"},
           {{"--sigma", "-2"}, "--sigma -2"},
           {{"--sigma", "inf"}, "--sigma inf"},
           {{"--sigma", "nan"}, "--sigma nan"},
           {{"--sigma", "1e999"}, "--sigma 1e999"},
           {{"--sigma", "2x"}, "--sigma 2x"},
           {{"-j", "0"}, "-j 0"},
           {{"-j", "-1"}, "-j -1"},
           {{"-j", "1.5"}, "-j 1.5"},
           {{"-j", "99999999999999999999999"}, "-j 99999999999999999999999"},
           {{"-j", "two"}, "-j two"},
           {{"--synthetic", "-1,8,8"}, "'-1,8,8'"},
           {{"--synthetic", "2,8"}, "'2,8'"},
           {{"--synthetic", "2,8,8,8"}, "'2,8,8,8'"},
           {{"--synthetic", "2,8,65536"}, "'2,8,65536'"},
           {{"--synthetic", "2,8,1e3"}, "'2,8,1e3'"},
       }) {
    auto args = b.args;
    if (args[0] != "--synthetic") args.insert(args.end(), {"--synthetic", "2,8,8"});
    args.insert(args.end(), {"-o", d / "out"});
    const auto r = run_stack(args);
    INFO(b.args[0] << " " << b.args[1] << ": " << r.output);
    CHECK(r.exited(2));
    CHECK(r.output.find(b.says) != std::string::npos);
    CHECK(r.output.find("frames of") == std::string::npos);
  }
  ::setenv("SHMARRAY_STACK_BIGTIFF_ABOVE", "12k", 1);
  const auto env = run_stack({"--synthetic", "2,8,8", "-o", d / "out"});
  ::unsetenv("SHMARRAY_STACK_BIGTIFF_ABOVE");
  INFO(env.output);
  CHECK(env.exited(2));
  CHECK(env.output.find("SHMARRAY_STACK_BIGTIFF_ABOVE=12k") != std::string::npos);
  // The kernel itself is checked: a sigma whose square underflows gives NaN.
  CHECK_THROWS_AS(st::gaussian_kernel(1e-300), std::invalid_argument);
  for (double s : {0.01, 0.5, 2.0, 1000.0}) {
    const auto k = st::gaussian_kernel(s);
    double sum = 0;
    for (float w : k)
      sum += w;
    CHECK(sum == Approx(1).epsilon(1e-4));
  }
  // Values at the ends of the ranges are taken.
  for (const auto& ok : std::vector<std::vector<std::string>>{
           {"--sigma", "0.01"},
           {"--sigma", "1000", "--synthetic", "1,4,4"},
           {"-j", "1"},
       }) {
    auto args = ok;
    if (args.size() == 2) args.insert(args.end(), {"--synthetic", "2,8,8"});
    args.insert(args.end(), {"-o", d / "out"});
    const auto r = run_stack(args);
    INFO(ok[0] << " " << ok[1] << ": " << r.output);
    CHECK(r.exited(0));
  }
}

TEST_CASE(
    "inputs that are not regular files are refused at once: a FIFO (which would wait for a "
    "writer for ever), a device, a directory") {
  temp_dir d;
  REQUIRE(::mkfifo((d / "fifo.tif").c_str(), 0600) == 0);
  for (const std::string& input : {d / "fifo.tif", std::string("/dev/null"), d.path}) {
    bool timed_out = false;
    const auto r = background_job({input, "-j", "1", "-o", d / "out"}).finish(20, &timed_out);
    INFO(input << ": " << r.output);
    CHECK_FALSE(timed_out);
    CHECK(r.exited(1));
    CHECK(r.output.find(input + ": is not a regular file") != std::string::npos);
    CHECK(r.clean());
  }
}

TEST_CASE(
    "a chain of pages that loops is damage: the last page pointing back to the first, a page "
    "pointing to itself, refused with exit 1") {
  temp_dir d;
  std::vector<std::uint16_t> px(3 * 8 * 8, 5);
  st::write_tiff(d / "good.tif", px.data(), 3, 8, 8);
  const auto good = file_bytes(d / "good.tif");
  std::vector<std::uint32_t> ifds;  // each page's directory
  std::uint32_t at;
  std::memcpy(&at, good.data() + 4, 4);
  while (at) {
    ifds.push_back(at);
    std::uint16_t n;
    std::memcpy(&n, good.data() + at, 2);
    std::memcpy(&at, good.data() + at + 2 + 12 * n, 4);
  }
  REQUIRE(ifds.size() == 3);
  auto link = [&](std::size_t from, std::size_t to) {
    auto b = good;
    std::uint16_t n;
    std::memcpy(&n, b.data() + ifds[from], 2);
    std::memcpy(b.data() + ifds[from] + 2 + 12 * n, &ifds[to], 4);
    return b;
  };
  write_bytes(d / "loop.tif", link(2, 0));
  write_bytes(d / "self.tif", link(0, 0));
  write_bytes(d / "mid.tif", link(2, 1));
  for (const auto& [file, says] : std::vector<std::pair<std::string, std::string>>{
           {"loop.tif", "page 3 points back to page 1"},
           {"self.tif", "page 1 points to itself"},
           {"mid.tif", "page 3 points back to page 2"},
       }) {
    INFO(file);
    CHECK_THROWS_WITH(st::probe_tiff(d / file),
                      Catch::Contains("its chain of pages loops") && Catch::Contains(says));
    const auto r = run_stack({d / file, "-j", "2", "-o", d / "out"});
    INFO(r.output);
    CHECK(r.exited(1));
    CHECK(r.output.find(says) != std::string::npos);
    CHECK(r.clean());
  }
}

TEST_CASE(
    "an input that another user shrinks and regrows while the job reads it is a read error, "
    "never a SIGBUS") {
  if (cannot_play_nobody()) return;
  temp_dir d;
  const std::string theirs = d / "theirs";
  fs::create_directory(theirs);
  // Many pages, so that reading them takes a while.
  std::vector<std::uint16_t> px(3000 * 16 * 16);
  for (std::size_t i = 0; i < px.size(); ++i)
    px[i] = std::uint16_t(i * 7);
  st::write_tiff(theirs + "/stack.tif", px.data(), 3000, 16, 16);
  REQUIRE(::chown(theirs.c_str(), 65534, 65534) == 0);
  REQUIRE(::chown((theirs + "/stack.tif").c_str(), 65534, 65534) == 0);
  const std::string loop =
      "import os, time\n"
      "p = '" +
      theirs +
      "/stack.tif'\n"
      "data = open(p, 'rb').read()\n"
      "fd = os.open(p, os.O_RDWR)\n"
      "end = time.monotonic() + 60\n"
      "while time.monotonic() < end and not os.path.exists(p + '.stop'):\n"
      "    os.ftruncate(fd, 4096)\n"
      "    time.sleep(0.001)\n"
      "    os.pwrite(fd, data, 0)\n"
      "    time.sleep(0.003)\n";
  std::ofstream(theirs + "/resize.py") << loop;
  std::fflush(nullptr);
  const pid_t resizer = ::fork();
  REQUIRE(resizer >= 0);
  if (resizer == 0) {
    ::execl("/usr/bin/setpriv", "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
            "/usr/bin/python3", (theirs + "/resize.py").c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::usleep(300000);
  int signals = 0, others = 0;
  std::string said;
  for (int i = 0; i < 20; ++i) {
    const auto r =
        run_stack({theirs + "/stack.tif", "--steps", "none", "-j", "2", "-o", d / "out"});
    if (WIFSIGNALED(r.status)) {
      ++signals;
      said += "killed by signal " + std::to_string(WTERMSIG(r.status)) + "\n";
    } else if ((!r.exited(0) && !r.exited(1)) ||
               r.output.find("Sanitizer") != std::string::npos) {  // ASan reports a SIGBUS
      ++others;
      said += r.output;
    }
    CHECK(r.clean());
  }
  std::ofstream(theirs + "/stack.tif.stop");  // the resizer only looks for it
  test::reap(resizer);
  INFO(said);
  CHECK(signals == 0);
  CHECK(others == 0);
}

TEST_CASE(
    "the job's names have a random part: a name planted by another user, in the old scheme or "
    "colliding with the new, does not stop it") {
  if (cannot_play_nobody()) return;
  temp_dir d;
  const auto r = test::in_small_tmpfs("/dev/shm", "64m", [&](auto say) {
    const std::string first = "0000000000000001", second = "00000000000000a2";
    background_job job({"--synthetic", "3,16,16", "-j", "1", "-o", d / "out"},
                       {"SHMARRAY_STACK_TEST_NAMES=" + first + "," + second}, true);
    const std::string pid = std::to_string(job.pid);
    // The old scheme's first name, and the new scheme's last name of the
    // first base, so that five arrays are made before the sixth collides.
    const std::vector<std::string> planted{"shmarray-stack-" + pid + "-input",
                                           "shmarray-stack-" + pid + "-" + first + "-std"};
    std::string plant = "umask 077";
    for (const auto& n : planted)
      plant += " && : > /dev/shm/" + n;
    const int planted_rc = as_nobody(plant);
    const auto run = job.finish(120);
    say(run.output);
    if (planted_rc != 0) return 2;
    if (!run.exited(0)) return 3;
    if (run.output.find("/shmarray-stack-" + pid + "-" + second + "-input") == std::string::npos)
      return 4;
    // What is left is what was planted: the first base's arrays went.
    const auto left = test::shm_names("shmarray-stack-" + pid + "-");
    if (left != std::set<std::string>(planted.begin(), planted.end())) return 5;
    for (const auto& n : planted)
      ::unlink(("/dev/shm/" + n).c_str());
    return 0;
  });
  if (r.skipped()) return;
  INFO(r.said);
  CHECK(r.ok());
}

TEST_CASE("the median of integer pixels by counting is the median by selection exactly") {
  std::mt19937 rng(7);
  std::vector<float> scratch;
  std::vector<std::uint32_t> counts;
  auto check = [&](std::vector<float> v, std::size_t h, std::size_t w, auto tag) {
    using T = decltype(tag);
    st::frame_map f(v.data(), Eigen::Index(h), Eigen::Index(w));
    const float selected = st::median(f, scratch);
    const float counted = st::median_of<T>(f, scratch, counts);
    CHECK(selected == counted);
    CHECK(counted == ref_median(v));
  };
  for (std::size_t n : {1, 2, 3, 4, 7, 64, 255, 1024, 4097}) {
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<float> u16(n), u8(n), few(n);
      std::uniform_int_distribution<int> any16(0, 65535), any8(0, 255), two(1000, 1001);
      for (std::size_t i = 0; i < n; ++i) {
        u16[i] = float(any16(rng));
        u8[i] = float(any8(rng));
        few[i] = float(two(rng));  // many ties, a middle between two values
      }
      check(u16, 1, n, std::uint16_t{});
      check(few, 1, n, std::uint16_t{});
      check(u8, 1, n, std::uint8_t{});
    }
  }
  check(std::vector<float>(6, 65535.f), 2, 3, std::uint16_t{});  // the top value
  check(std::vector<float>{0.f, 65535.f}, 1, 2, std::uint16_t{});
  // A frame that is not of such integers goes back to selection.
  std::vector<float> odd{1.5f, 2.f, 3.f, 70000.f, -1.f};
  st::frame_map f(odd.data(), 1, 5);
  CHECK(st::median_of<std::uint16_t>(f, scratch, counts) == st::median(f, scratch));
  std::vector<float> nan{1.f, std::nanf(""), 3.f};
  st::frame_map g(nan.data(), 1, 3);
  CHECK(st::median_of<std::uint16_t>(g, scratch, counts) == st::median(g, scratch));
}

TEST_CASE("to pixels rounds as nearbyint does: ties to even, clamped, NaN to 0") {
  auto reference = [](float w, float hi) {
    const float v = std::nearbyint(w);
    return !(v > 0.f) ? 0.f : v >= hi ? hi : v;
  };
  std::vector<float> in;
  for (int k = -3; k <= 65538; ++k)
    for (float d : {-0.5f, -0.25f, 0.f, 0.25f, 0.5f, 0.49999997f, 0.50000006f})
      in.push_back(float(k) + d);
  for (float x : {0.f, -0.f, std::nanf(""), INFINITY, -INFINITY, 1e-40f, 1e30f, -1e30f, 65535.5f,
                  65534.5f, 255.5f, 254.5f, 256.49f})
    in.push_back(x);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> any(-10.f, 70000.f);
  for (int i = 0; i < 100000; ++i)
    in.push_back(any(rng));
  std::vector<std::uint16_t> out16(in.size());
  std::vector<std::uint8_t> out8(in.size());
  st::to_pixels(in.data(), out16.data(), in.size());
  st::to_pixels(in.data(), out8.data(), in.size());
  std::size_t wrong16 = 0, wrong8 = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    wrong16 += out16[i] != std::uint16_t(reference(in[i], 65535.f));
    wrong8 += out8[i] != std::uint8_t(reference(in[i], 255.f));
  }
  CHECK(wrong16 == 0);
  CHECK(wrong8 == 0);
}
