// A fixed-size log-linear latency histogram (HDR-style) for snapbench.
//
// Values are nanoseconds. Values below 2^kSubBits are counted exactly; above
// that every power-of-two range ("octave") is split into 2^kSubBits equal
// sub-buckets, so a recorded value lands in a bucket whose width is at most
// 1/64 of its lower bound. Percentiles report the bucket midpoint (clamped to
// the exact min/max seen), i.e. a relative error below 0.8%. Memory is fixed
// (kNumBuckets counters, ~19 KiB) no matter how long the run is; values above
// kMaxValue are counted in the last bucket (max stays exact).
#ifndef SNAPLEDGER_BENCH_LATENCY_HISTOGRAM_H_
#define SNAPLEDGER_BENCH_LATENCY_HISTOGRAM_H_

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace snapbench {

class LatencyHistogram {
 public:
  static constexpr int kSubBits = 6;
  static constexpr uint64_t kSubCount = uint64_t{1} << kSubBits;  // 64
  static constexpr int kMaxExponent = 41;  // 2^42 ns ~ 73 minutes
  static constexpr uint64_t kMaxValue = (uint64_t{1} << (kMaxExponent + 1)) - 1;
  static constexpr size_t kNumBuckets =
      kSubCount + (kMaxExponent - kSubBits + 1) * kSubCount;

  void Record(uint64_t ns) {
    ++buckets_[IndexOf(ns)];
    ++count_;
    sum_ += static_cast<double>(ns);
    min_ = std::min(min_, ns);
    max_ = std::max(max_, ns);
  }

  void Merge(const LatencyHistogram& other) {
    for (size_t i = 0; i < kNumBuckets; ++i) buckets_[i] += other.buckets_[i];
    count_ += other.count_;
    sum_ += other.sum_;
    min_ = std::min(min_, other.min_);
    max_ = std::max(max_, other.max_);
  }

  uint64_t count() const { return count_; }
  uint64_t min() const { return count_ == 0 ? 0 : min_; }
  uint64_t max() const { return max_; }
  double mean() const {
    return count_ == 0 ? 0.0 : sum_ / static_cast<double>(count_);
  }

  // Value at percentile p (0 < p <= 100): the smallest recorded bucket such
  // that at least p% of the samples are at or below it. 0 when empty.
  uint64_t Percentile(double p) const {
    if (count_ == 0) return 0;
    if (p >= 100.0) return max_;
    auto rank = static_cast<uint64_t>(
        std::ceil(p / 100.0 * static_cast<double>(count_)));
    rank = std::clamp<uint64_t>(rank, 1, count_);
    uint64_t seen = 0;
    for (size_t i = 0; i < kNumBuckets; ++i) {
      seen += buckets_[i];
      if (seen >= rank) {
        return std::clamp(Midpoint(i), min_, max_);
      }
    }
    return max_;
  }

  static size_t IndexOf(uint64_t ns) {
    if (ns < kSubCount) return static_cast<size_t>(ns);
    if (ns > kMaxValue) return kNumBuckets - 1;
    const int exponent = std::bit_width(ns) - 1;  // >= kSubBits
    const int shift = exponent - kSubBits;
    const uint64_t sub = (ns >> shift) - kSubCount;  // 0..kSubCount-1
    return static_cast<size_t>(kSubCount +
                               static_cast<uint64_t>(shift) * kSubCount + sub);
  }

  // Lowest value mapped to bucket i, and the bucket's width.
  static uint64_t LowerBound(size_t i) {
    if (i < kSubCount) return i;
    const uint64_t shift = (i - kSubCount) / kSubCount;
    const uint64_t sub = (i - kSubCount) % kSubCount;
    return (kSubCount + sub) << shift;
  }
  static uint64_t Width(size_t i) {
    if (i < kSubCount) return 1;
    return uint64_t{1} << ((i - kSubCount) / kSubCount);
  }
  static uint64_t Midpoint(size_t i) { return LowerBound(i) + Width(i) / 2; }

 private:
  std::array<uint64_t, kNumBuckets> buckets_{};
  uint64_t count_ = 0;
  double sum_ = 0;
  uint64_t min_ = std::numeric_limits<uint64_t>::max();
  uint64_t max_ = 0;
};

}  // namespace snapbench

#endif  // SNAPLEDGER_BENCH_LATENCY_HISTOGRAM_H_
