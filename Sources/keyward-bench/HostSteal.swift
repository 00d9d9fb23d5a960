import Foundation

/// The machine's CPU time as /proc/stat counts it: how much the hypervisor gave to others while
/// our vCPUs wanted to run ("steal"). On this project's VM it ranged from 1% to 37% of all CPU time
/// during gateway runs, and millisecond tails rose with it, so figures are printed beside it.
struct HostCPUTime {
    let steal: UInt64
    let total: UInt64

    /// The `cpu` line of /proc/stat (all cores), or nil where there is none.
    static func now() -> HostCPUTime? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let line = text.split(separator: "\n").first, line.hasPrefix("cpu ") else { return nil }
        let fields = line.split(separator: " ").dropFirst().compactMap { UInt64($0) }
        guard fields.count >= 8 else { return nil }
        // user nice system idle iowait irq softirq steal; guest time is already in user.
        return HostCPUTime(steal: fields[7], total: fields.prefix(8).reduce(0, +))
    }

    /// The share of CPU time stolen since `earlier`, in percent, as text ("n/a" without /proc).
    static func stolen(since earlier: HostCPUTime?) -> String {
        guard let earlier, let later = now(), later.total > earlier.total else { return "n/a" }
        return String(format: "%.1f%%", Double(later.steal - earlier.steal) / Double(later.total - earlier.total) * 100)
    }
}
