// shmarray-stack: TIFF round trips, the pipeline against a plain reference
// written here, bad input, and a /dev/shm too small for the job.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <shmarray/shmarray.hpp>
#include <shmarray/stack/stages.hpp>
#include <shmarray/stack/tiff.hpp>
#include <string>
#include <vector>

#include "support.hpp"

namespace st = shmarray::stack;
namespace fs = std::filesystem;

namespace {

// A directory of this test's own, removed with it.
struct temp_dir {
  std::string path;
  temp_dir() {
    char t[] = "/tmp/shmarray_stack_XXXXXX";
    path = ::mkdtemp(t) ? t : "";
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
  const auto r = test::run_program(SHMARRAY_STACK, args);
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
    ::execl(SHMARRAY_STACK, SHMARRAY_STACK, "--synthetic", "120,512,512", "-j", "1", "-o",
            out.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[1]);
  const std::string name = "/shmarray-stack-" + std::to_string(pid) + "-input";
  bool seen = false;
  for (int i = 0; i < 1000 && !seen; ++i) {
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
  CHECK_THROWS_WITH(st::write_then_rename(path,
                                          [](const std::string& tmp) {
                                            std::ofstream(tmp) << "half";
                                            throw std::runtime_error("disk full");
                                          }),
                    "disk full");
  CHECK(text() == "old");
  CHECK_FALSE(fs::exists(path + ".partial"));
  st::write_then_rename(path, [](const std::string& tmp) { std::ofstream(tmp) << "new"; });
  CHECK(text() == "new");
}
