import Foundation

/// How much of a busy thread's time the machine itself takes: one thread reads the monotonic
/// clock in a loop for `seconds`, and every gap between two reads longer than 20 µs is time the
/// thread did not run (an interrupt, the hypervisor, another task). Printed beside latency figures
/// so that a p99 of a few tens of microseconds can be read against what the machine allowed then:
/// on this project's VM (CONFIG_HZ=250), runs with nothing else active measured 360-490 such gaps
/// a second, most of them at fixed phases of the 4 ms scheduler tick, 21-85 a second over 100 µs.
func machineNoise(seconds: Int) {
    var ts = timespec()
    func now() -> Int64 {
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }
    let cpu = HostCPUTime.now()
    let start = now(), end = start + Int64(seconds) * 1_000_000_000
    var previous = start, over20 = 0, over50 = 0, over100 = 0, lost: Int64 = 0, longest: Int64 = 0
    while previous < end {
        let t = now()
        let gap = t - previous
        if gap > 20_000 {
            over20 += 1
            lost += gap
            if gap > 50_000 { over50 += 1 }
            if gap > 100_000 { over100 += 1 }
            longest = max(longest, gap)
        }
        previous = t
    }
    let elapsed = Double(previous - start) / 1e9
    print(String(format: "machine noise: a busy thread lost %.1f%% of %.0f s in gaps over 20 µs: %.0f/s over 20 µs, %.0f/s over 50, %.0f/s over 100, longest %.0f µs",
                 Double(lost) / Double(previous - start) * 100, elapsed, Double(over20) / elapsed, Double(over50) / elapsed,
                 Double(over100) / elapsed, Double(longest) / 1e3) + "; host steal " + HostCPUTime.stolen(since: cpu))
}
