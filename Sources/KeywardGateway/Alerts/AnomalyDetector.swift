/// Watches unwraps and retrievals per principal and per key over sliding windows and says when one
/// looks anomalous: above a ceiling, or a multiple of its own recent baseline. A pure state
/// machine: the caller passes the time in, so every rule is testable without a clock or I/O.
///
/// A window slides in steps of a sixth of its length: its count is the sum of the last six steps,
/// so a burst is seen whole wherever it falls. The baseline is the mean count per window over the
/// (up to) `baselineWindows` windows before the current one.
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

    /// One breach: raised once per subject, then not again for a window's length.
    public struct Alert: Sendable, Hashable {
        /// `principal:tok_…` and/or `key:REF`.
        public var subjects: [String]
        public var principal: String
        public var key: String
        /// Uses in the sliding window when it fired.
        public var count: Int
        /// `ceiling` or `baseline`.
        public var reason: String
        public var baseline: Double
    }

    static let steps = 6

    private struct Counter: Sendable {
        /// The step the last use fell in.
        var step: Int64
        /// Uses per step, newest last: the current window's steps and the baseline's before them.
        var counts: [Int]
        /// The time of the subject's last alert.
        var alertedAt: Double?
    }

    public let configuration: Configuration
    private var counters: [String: Counter] = [:]
    private var lastStep: Int64 = 0

    public init(configuration: Configuration) { self.configuration = configuration }

    /// Counts `count` uses of `key` by `principal` at `time` (seconds); returns an alert if they
    /// made a principal or key anomalous that has not alerted within the last window.
    public mutating func observe(principal: String, key: String, at time: Double, count: Int = 1) -> Alert? {
        let step = Int64((time * Double(Self.steps) / configuration.window).rounded(.down))
        let kept = Self.steps * (configuration.baselineWindows + 1)
        lastStep = max(lastStep, step)
        var fired: [String] = []
        var reason = "ceiling"
        var worst = 0
        var baseline = 0.0
        for subject in ["principal:\(principal)", "key:\(key)"] {
            var c = counters[subject] ?? Counter(step: step, counts: [0], alertedAt: nil)
            if step > c.step {
                // Quiet steps since the last use count as zeros.
                c.counts += Array(repeating: 0, count: Int(min(step - c.step, Int64(kept))))
                c.counts.removeFirst(max(0, c.counts.count - kept))
                c.step = step
            }
            c.counts[c.counts.count - 1] += count
            let current = c.counts.suffix(Self.steps).reduce(0, +)
            let history = c.counts.dropLast(Self.steps)
            // The rate seen before the current window, per window; while the subject is new, over
            // the time there is (none yet: a baseline of zero).
            let windows = Double(history.count) / Double(Self.steps)
            let mean = windows > 0 ? Double(history.reduce(0, +)) / windows : 0
            let quiet = c.alertedAt.map { time - $0 >= configuration.window } ?? true
            let overCeiling = current > configuration.ceiling
            let overBaseline = current >= configuration.minimum && Double(current) > configuration.ratio * max(mean, 1)
            if quiet && (overCeiling || overBaseline) {
                c.alertedAt = time
                fired.append(subject)
                if !overCeiling { reason = "baseline" }
                worst = max(worst, current)
                baseline = max(baseline, mean)
            }
            counters[subject] = c
        }
        // Forget subjects idle for longer than the baseline covers.
        if counters.count > 100_000 {
            counters = counters.filter { lastStep - $0.value.step <= Int64(kept) }
        }
        guard !fired.isEmpty else { return nil }
        return Alert(subjects: fired, principal: principal, key: key, count: worst, reason: reason, baseline: baseline)
    }
}
