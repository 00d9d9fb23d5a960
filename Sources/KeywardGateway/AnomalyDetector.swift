/// Watches unwraps and retrievals per principal and per key over fixed windows and says when one
/// looks anomalous: above a ceiling, or a multiple of its own recent baseline. A pure state
/// machine: the caller passes the time in, so every rule is testable without a clock or I/O.
public struct AnomalyDetector: Sendable {
    public struct Configuration: Sendable, Hashable {
        /// Window length in seconds.
        public var window: Double
        /// Uses in one window that always alert.
        public var ceiling: Int
        /// Alert when a window exceeds this multiple of the mean of the previous windows …
        public var ratio: Double
        /// … over this many previous windows …
        public var baselineWindows: Int
        /// … and holds at least this many uses (a quiet principal's first requests are no burst).
        public var minimum: Int

        public init(window: Double = 60, ceiling: Int = 10_000, ratio: Double = 10, baselineWindows: Int = 10, minimum: Int = 100) {
            self.window = window
            self.ceiling = ceiling
            self.ratio = ratio
            self.baselineWindows = baselineWindows
            self.minimum = minimum
        }
    }

    /// One breach: raised once per subject per window.
    public struct Alert: Sendable, Hashable {
        /// `principal:tok_…` and/or `key:REF`.
        public var subjects: [String]
        public var principal: String
        public var key: String
        /// Uses in the current window when it fired.
        public var count: Int
        /// `ceiling` or `baseline`.
        public var reason: String
        public var baseline: Double
    }

    private struct Counter: Sendable {
        var window: Int64
        var count: Int
        /// Counts of the previous windows, newest last.
        var history: [Int]
        var alerted: Bool
    }

    public let configuration: Configuration
    private var counters: [String: Counter] = [:]

    public init(configuration: Configuration) { self.configuration = configuration }

    /// Counts one use of `key` by `principal` at `time` (seconds); returns an alert if that use
    /// made a principal or key anomalous that had not yet alerted in this window.
    public mutating func observe(principal: String, key: String, at time: Double) -> Alert? {
        let window = Int64((time / configuration.window).rounded(.down))
        var fired: [String] = []
        var reason = "ceiling"
        var worst = 0
        var baseline = 0.0
        for subject in ["principal:\(principal)", "key:\(key)"] {
            var c = counters[subject] ?? Counter(window: window, count: 0, history: [], alerted: false)
            if window > c.window {
                // Close the windows passed since the last use, quiet ones as zeros.
                let skipped = Int(min(window - c.window, Int64(configuration.baselineWindows + 1)))
                c.history.append(c.count)
                c.history += Array(repeating: 0, count: skipped - 1)
                c.history = Array(c.history.suffix(configuration.baselineWindows))
                c.window = window
                c.count = 0
                c.alerted = false
            }
            c.count += 1
            if !c.alerted {
                let mean = c.history.isEmpty ? 0 : Double(c.history.reduce(0, +)) / Double(c.history.count)
                let overCeiling = c.count > configuration.ceiling
                let overBaseline = c.count >= configuration.minimum && Double(c.count) > configuration.ratio * max(mean, 1)
                if overCeiling || overBaseline {
                    c.alerted = true
                    fired.append(subject)
                    if !overCeiling { reason = "baseline" }
                    worst = max(worst, c.count)
                    baseline = max(baseline, mean)
                }
            }
            counters[subject] = c
        }
        // Forget subjects idle for longer than the baseline covers.
        if counters.count > 100_000 {
            counters = counters.filter { window - $0.value.window <= Int64(configuration.baselineWindows) }
        }
        guard !fired.isEmpty else { return nil }
        return Alert(subjects: fired, principal: principal, key: key, count: worst, reason: reason, baseline: baseline)
    }
}
