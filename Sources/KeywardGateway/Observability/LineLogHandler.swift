#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging

/// Writes each event as one line to a file descriptor (standard error by default), with one
/// `write(2)` per line:
///
///     2026-11-23T21:04:05.123Z info keyward: request method=POST route=/v1/chat/completions status=200
///
/// Times are UTC. Control characters in messages and values are escaped, so a value can never
/// start a line of its own. Swift-log's `StreamLogHandler` formats the time through the local
/// time zone and locks a `FILE` per line; at one line per request that was a tenth of the
/// gateway's CPU.
public struct LineLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let descriptor: Int32

    public init(label: String, level: Logger.Level = .info, descriptor: Int32 = 2) {
        self.label = label
        self.logLevel = level
        self.descriptor = descriptor
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let own = event.metadata { merged.merge(own) { _, new in new } }
        let line = Self.line(time: Self.now(), level: event.level, label: label, message: event.message.description, metadata: merged)
        line.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let n = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if n > 0 { offset += n } else if n < 0 && errno == EINTR { continue } else { return }
            }
        }
    }

    /// Milliseconds since the epoch.
    static func now() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    /// The bytes of one line, keys in sorted order so that lines compare.
    static func line(time: Int64, level: Logger.Level, label: String, message: String, metadata: Logger.Metadata) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(160)
        appendTime(time, to: &out)
        out.append(0x20)
        out.append(contentsOf: level.rawValue.utf8)
        out.append(0x20)
        out.append(contentsOf: label.utf8)
        out.append(contentsOf: ": ".utf8)
        appendEscaped(message, to: &out)
        for key in metadata.keys.sorted() {
            out.append(0x20)
            appendEscaped(key, to: &out)
            out.append(UInt8(ascii: "="))
            appendEscaped(metadata[key]!.description, to: &out)
        }
        out.append(0x0A)
        return out
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`, from the civil-date algorithm rather than `gmtime`/`strftime`.
    static func appendTime(_ ms: Int64, to out: inout [UInt8]) {
        let seconds = ms.floorDiv(1000), millis = Int(ms - seconds * 1000)
        let days = seconds.floorDiv(86_400), secondOfDay = Int(seconds - days * 86_400)
        // Howard Hinnant's days-to-civil.
        let z = days + 719_468
        let era = z.floorDiv(146_097)
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = Int(doy - (153 * mp + 2) / 5 + 1)
        let month = Int(mp < 10 ? mp + 3 : mp - 9)
        let year = Int(yoe + era * 400 + (month <= 2 ? 1 : 0))
        func digits(_ v: Int, _ width: Int) {
            let start = out.count
            out.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: width))
            var v = v
            for i in stride(from: start + width - 1, through: start, by: -1) {
                out[i] = UInt8(48 + v % 10)
                v /= 10
            }
        }
        digits(year, 4); out.append(UInt8(ascii: "-")); digits(month, 2); out.append(UInt8(ascii: "-")); digits(day, 2)
        out.append(UInt8(ascii: "T"))
        digits(secondOfDay / 3600, 2); out.append(UInt8(ascii: ":")); digits(secondOfDay / 60 % 60, 2)
        out.append(UInt8(ascii: ":")); digits(secondOfDay % 60, 2); out.append(UInt8(ascii: "."))
        digits(millis, 3); out.append(UInt8(ascii: "Z"))
    }

    static func appendEscaped(_ s: String, to out: inout [UInt8]) {
        for b in s.utf8 {
            switch b {
            case 0x0A: out.append(contentsOf: "\\n".utf8)
            case 0x0D: out.append(contentsOf: "\\r".utf8)
            case 0x09: out.append(contentsOf: "\\t".utf8)
            case 0x5C: out.append(contentsOf: "\\\\".utf8)
            case ..<0x20, 0x7F:
                let hex = Array("0123456789abcdef".utf8)
                out.append(contentsOf: "\\x".utf8)
                out.append(hex[Int(b >> 4)])
                out.append(hex[Int(b & 15)])
            default: out.append(b)
            }
        }
    }
}

private extension Int64 {
    func floorDiv(_ d: Int64) -> Int64 { self >= 0 ? self / d : -((-self + d - 1) / d) }
}
