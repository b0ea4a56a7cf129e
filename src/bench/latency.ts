/**
 * What a pass of timed requests comes to: percentiles, the worst case, IOPS, and a histogram.
 *
 * Percentiles are nearest-rank over every sample (no interpolation, no sampling): p99 of 2000
 * writes is the 1980th fastest, a latency some request really had. IOPS is requests over the
 * wall time of the whole pass, which at queue depth 1 is about 1 / mean latency and above it
 * shows how much the requests overlap.
 *
 * The histogram's buckets grow geometrically, about 1.5x each, with edges people can read:
 * 1, 1.5, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100 µs and so on, ten times over per decade. A
 * latency distribution spans decades (a rewrite in tens of microseconds, a first write that
 * waits for the disk in milliseconds), so equal-width buckets would put nearly everything in one.
 */

import { cdfFromSamples, type CdfPoint } from './cdf-plot.js';

/** The bucket edges within one decade, times 10^k. */
const EDGES = [1, 1.5, 2, 3, 5, 7] as const;

export interface LatencyPercentiles {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export interface HistogramBucket {
  /** Latencies from this many microseconds ... */
  fromUs: number;
  /** ... up to, not including, this many. */
  toUs: number;
  count: number;
}

export interface LatencySummary {
  /** Requests measured. */
  count: number;
  /** Wall time of the pass, first request sent to last reply received. */
  seconds: number;
  iops: number;
  /** Per-request latency in microseconds. */
  latencyUs: LatencyPercentiles;
  /** From the fastest request's bucket to the slowest's, empty buckets between them included. */
  histogram: HistogramBucket[];
  /** The distribution for a plot: [latency µs, fraction of requests at or under it], every percent and the tail finer. */
  cdf: CdfPoint[];
}

/** Summarises per-request latencies (nanoseconds) measured over `seconds` of wall time. */
export function summarize(latenciesNs: Float64Array, seconds: number): LatencySummary {
  const count = latenciesNs.length;
  if (count === 0) {
    return { count, seconds, iops: 0, latencyUs: { p50: 0, p90: 0, p99: 0, max: 0, mean: 0 }, histogram: [], cdf: [] };
  }
  const sorted = Float64Array.from(latenciesNs, (ns) => ns / 1000).sort();
  const rank = (q: number): number => sorted[Math.max(0, Math.ceil(q * count) - 1)];
  let total = 0;
  for (const us of sorted) total += us;
  return {
    count,
    seconds,
    iops: seconds > 0 ? count / seconds : 0,
    latencyUs: { p50: rank(0.5), p90: rank(0.9), p99: rank(0.99), max: sorted[count - 1], mean: total / count },
    histogram: histogram(sorted),
    cdf: cdfFromSamples(sorted),
  };
}

/** The index of the bucket holding `us`: bucket i covers [edge(i), edge(i + 1)); bucket 0 starts at 0. */
function bucketOf(us: number): number {
  if (us < 1) return 0;
  // log10 and the division may land a hair off at an exact power of ten or an edge (2.9999...
  // for 3): the decade is corrected, and a value within rounding of an edge opens that bucket.
  let decade = Math.floor(Math.log10(us));
  let mantissa = us / 10 ** decade;
  if (mantissa >= 10 - 1e-9) {
    decade++;
    mantissa /= 10;
  } else if (mantissa < 1 - 1e-9) {
    decade--;
    mantissa *= 10;
  }
  let i = EDGES.length - 1;
  while (i > 0 && mantissa < EDGES[i] - 1e-9) i--;
  return decade * EDGES.length + i;
}

/** The lower edge of bucket i, in microseconds (0 for the first bucket, which takes everything below 1 µs). */
function edge(i: number): number {
  if (i <= 0) return 0;
  return EDGES[i % EDGES.length] * 10 ** Math.floor(i / EDGES.length);
}

function histogram(sortedUs: Float64Array): HistogramBucket[] {
  const first = bucketOf(sortedUs[0]);
  const last = bucketOf(sortedUs[sortedUs.length - 1]);
  const buckets: HistogramBucket[] = [];
  for (let i = first; i <= last; i++) buckets.push({ fromUs: edge(i), toUs: edge(i + 1), count: 0 });
  for (const us of sortedUs) buckets[bucketOf(us) - first].count++;
  return buckets;
}
