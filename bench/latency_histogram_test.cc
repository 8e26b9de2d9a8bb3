#include "bench/latency_histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

namespace snapbench {
namespace {

TEST(LatencyHistogramTest, EmptyIsZero) {
  LatencyHistogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.Percentile(50), 0u);
  EXPECT_EQ(h.max(), 0u);
  EXPECT_EQ(h.min(), 0u);
}

TEST(LatencyHistogramTest, BucketsAreContiguousAndCoverRange) {
  uint64_t expected_lower = 0;
  for (size_t i = 0; i < LatencyHistogram::kNumBuckets; ++i) {
    ASSERT_EQ(LatencyHistogram::LowerBound(i), expected_lower) << i;
    ASSERT_EQ(LatencyHistogram::IndexOf(expected_lower), i);
    const uint64_t last = expected_lower + LatencyHistogram::Width(i) - 1;
    ASSERT_EQ(LatencyHistogram::IndexOf(last), i);
    expected_lower += LatencyHistogram::Width(i);
  }
  EXPECT_EQ(expected_lower - 1, LatencyHistogram::kMaxValue);
  EXPECT_EQ(LatencyHistogram::IndexOf(UINT64_MAX),
            LatencyHistogram::kNumBuckets - 1);
}

TEST(LatencyHistogramTest, SmallValuesAreExact) {
  LatencyHistogram h;
  for (uint64_t v = 1; v <= 50; ++v) h.Record(v);
  EXPECT_EQ(h.Percentile(50), 25u);
  EXPECT_EQ(h.Percentile(90), 45u);
  EXPECT_EQ(h.Percentile(100), 50u);
  EXPECT_EQ(h.min(), 1u);
}

TEST(LatencyHistogramTest, PercentilesWithinRelativeError) {
  LatencyHistogram h;
  std::mt19937_64 rng(42);
  std::lognormal_distribution<double> dist(12.0, 1.5);  // ~160us median
  std::vector<uint64_t> samples;
  for (int i = 0; i < 100000; ++i) {
    auto v = static_cast<uint64_t>(dist(rng));
    samples.push_back(v);
    h.Record(v);
  }
  std::sort(samples.begin(), samples.end());
  for (double p : {50.0, 90.0, 99.0, 99.9}) {
    const uint64_t exact =
        samples[static_cast<size_t>(p / 100.0 * samples.size()) - 1];
    const double got = static_cast<double>(h.Percentile(p));
    EXPECT_NEAR(got, static_cast<double>(exact), exact * 0.016) << p;
  }
  EXPECT_EQ(h.max(), samples.back());
}

TEST(LatencyHistogramTest, MergeAddsCounts) {
  LatencyHistogram a, b;
  for (int i = 0; i < 100; ++i) a.Record(1000);
  for (int i = 0; i < 100; ++i) b.Record(1000000);
  a.Merge(b);
  EXPECT_EQ(a.count(), 200u);
  EXPECT_EQ(a.min(), 1000u);
  EXPECT_EQ(a.max(), 1000000u);
  EXPECT_NEAR(static_cast<double>(a.Percentile(50)), 1000.0, 16.0);
  EXPECT_NEAR(static_cast<double>(a.Percentile(51)), 1e6, 1.6e4);
}

}  // namespace
}  // namespace snapbench
