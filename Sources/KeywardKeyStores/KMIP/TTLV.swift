/// One item of KMIP's Tag-Type-Length-Value encoding (KMIP 1.4, section 9.1): a 3-byte tag, a
/// 1-byte type, a 4-byte big-endian length of the value, then the value padded with zeros to a
/// multiple of 8 bytes. A structure's value is its items, one after another.
public struct TTLV: Equatable, Sendable, CustomStringConvertible {
    public var tag: UInt32
    public var value: Value

    public enum Value: Equatable, Sendable {
        case structure([TTLV])
        case integer(Int32)
        case longInteger(Int64)
        /// Two's complement, big-endian, a multiple of 8 bytes.
        case bigInteger([UInt8])
        case enumeration(UInt32)
        case boolean(Bool)
        case textString(String)
        case byteString([UInt8])
        /// Seconds since the Unix epoch.
        case dateTime(Int64)
        case interval(UInt32)

        var type: UInt8 {
            switch self {
            case .structure: 0x01
            case .integer: 0x02
            case .longInteger: 0x03
            case .bigInteger: 0x04
            case .enumeration: 0x05
            case .boolean: 0x06
            case .textString: 0x07
            case .byteString: 0x08
            case .dateTime: 0x09
            case .interval: 0x0A
            }
        }
    }

    public init(_ tag: UInt32, _ value: Value) {
        self.tag = tag
        self.value = value
    }

    public init(_ tag: UInt32, _ items: [TTLV]) {
        self.init(tag, .structure(items))
    }

    // MARK: Encoding

    /// The item's bytes.
    public var encoded: [UInt8] {
        var out: [UInt8] = []
        encode(into: &out)
        return out
    }

    public func encode(into out: inout [UInt8]) {
        out.append(UInt8(truncatingIfNeeded: tag >> 16))
        out.append(UInt8(truncatingIfNeeded: tag >> 8))
        out.append(UInt8(truncatingIfNeeded: tag))
        out.append(value.type)
        let lengthAt = out.count
        out.append(contentsOf: [0, 0, 0, 0])
        let start = out.count
        switch value {
        case .structure(let items):
            for item in items { item.encode(into: &out) }
        case .integer(let v):
            Self.append(UInt64(UInt32(bitPattern: v)), bytes: 4, to: &out)
        case .longInteger(let v):
            Self.append(UInt64(bitPattern: v), bytes: 8, to: &out)
        case .bigInteger(let bytes), .byteString(let bytes):
            out.append(contentsOf: bytes)
        case .enumeration(let v), .interval(let v):
            Self.append(UInt64(v), bytes: 4, to: &out)
        case .boolean(let v):
            Self.append(v ? 1 : 0, bytes: 8, to: &out)
        case .textString(let s):
            out.append(contentsOf: s.utf8)
        case .dateTime(let v):
            Self.append(UInt64(bitPattern: v), bytes: 8, to: &out)
        }
        let length = out.count - start
        for i in 0..<4 { out[lengthAt + i] = UInt8(truncatingIfNeeded: length >> (24 - 8 * i)) }
        out.append(contentsOf: repeatElement(0, count: (8 - length % 8) % 8))
    }

    private static func append(_ v: UInt64, bytes: Int, to out: inout [UInt8]) {
        for i in (0..<bytes).reversed() { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
    }

    // MARK: Decoding

    /// Why bytes are not a KMIP message.
    public struct DecodingError: Error, Equatable, CustomStringConvertible {
        public let reason: String
        public var description: String { "malformed TTLV: \(reason)" }
    }

    /// Structures nest at most this deep (KMIP's own messages nest about 6 deep).
    static let maxDepth = 32

    /// Decodes exactly one item filling `bytes`.
    public static func decode(_ bytes: [UInt8]) throws(DecodingError) -> TTLV {
        var reader = Reader(bytes: bytes)
        let item = try reader.item(depth: 0)
        guard reader.at == bytes.count else { throw DecodingError(reason: "\(bytes.count - reader.at) bytes after the item") }
        return item
    }

    /// The length of the item whose 8-byte header starts `header`: header and padded value.
    public static func frameLength(header: some Collection<UInt8>) -> Int? {
        guard header.count >= 8 else { return nil }
        let h = Array(header.prefix(8))
        let length = Int(h[4]) << 24 | Int(h[5]) << 16 | Int(h[6]) << 8 | Int(h[7])
        return 8 + length + (8 - length % 8) % 8
    }

    private struct Reader {
        let bytes: [UInt8]
        var at = 0

        mutating func take(_ n: Int) throws(DecodingError) -> ArraySlice<UInt8> {
            guard n >= 0, bytes.count - at >= n else { throw DecodingError(reason: "truncated") }
            defer { at += n }
            return bytes[at..<(at + n)]
        }

        func number(_ s: ArraySlice<UInt8>) -> UInt64 { s.reduce(0) { $0 << 8 | UInt64($1) } }

        mutating func item(depth: Int) throws(DecodingError) -> TTLV {
            guard depth <= TTLV.maxDepth else { throw DecodingError(reason: "nested deeper than \(TTLV.maxDepth)") }
            let header = try take(8)
            let tag = UInt32(number(header.prefix(3)))
            let type = header[header.startIndex + 3]
            let length = Int(number(header.suffix(4)))
            let padded = length + (8 - length % 8) % 8
            guard padded <= bytes.count - at else { throw DecodingError(reason: "a length past the end") }
            func fixed(_ expected: Int) throws(DecodingError) {
                guard length == expected else { throw DecodingError(reason: "type \(type) with length \(length)") }
            }
            let value: Value
            switch type {
            case 0x01:
                let end = at + length
                var items: [TTLV] = []
                while at < end { items.append(try item(depth: depth + 1)) }
                guard at == end else { throw DecodingError(reason: "a structure's items overrun its length") }
                value = .structure(items)
            case 0x02:
                try fixed(4)
                value = .integer(Int32(bitPattern: UInt32(number(try take(4)))))
            case 0x03:
                try fixed(8)
                value = .longInteger(Int64(bitPattern: number(try take(8))))
            case 0x04:
                guard length > 0, length % 8 == 0 else { throw DecodingError(reason: "a big integer of \(length) bytes") }
                value = .bigInteger(Array(try take(length)))
            case 0x05, 0x0A:
                try fixed(4)
                let v = UInt32(number(try take(4)))
                value = type == 0x05 ? .enumeration(v) : .interval(v)
            case 0x06:
                try fixed(8)
                let v = number(try take(8))
                guard v <= 1 else { throw DecodingError(reason: "a boolean of \(v)") }
                value = .boolean(v == 1)
            case 0x07:
                guard let s = String(validating: try take(length), as: UTF8.self) else { throw DecodingError(reason: "text that is not UTF-8") }
                value = .textString(s)
            case 0x08:
                value = .byteString(Array(try take(length)))
            case 0x09:
                try fixed(8)
                value = .dateTime(Int64(bitPattern: number(try take(8))))
            default:
                throw DecodingError(reason: "unknown type \(type)")
            }
            if type != 0x01 {
                guard try take(padded - length).allSatisfy({ $0 == 0 }) else { throw DecodingError(reason: "padding that is not zero") }
            }
            return TTLV(tag, value)
        }
    }

    // MARK: Reading

    /// The first item with `tag` directly inside this structure.
    public subscript(_ tag: UInt32) -> TTLV? {
        guard case .structure(let items) = value else { return nil }
        return items.first { $0.tag == tag }
    }

    /// Every item with `tag` directly inside this structure.
    public func all(_ tag: UInt32) -> [TTLV] {
        guard case .structure(let items) = value else { return [] }
        return items.filter { $0.tag == tag }
    }

    public var text: String? { if case .textString(let s) = value { s } else { nil } }
    public var bytes: [UInt8]? { if case .byteString(let b) = value { b } else { nil } }
    public var enumeration: UInt32? { if case .enumeration(let v) = value { v } else { nil } }
    public var integer: Int32? { if case .integer(let v) = value { v } else { nil } }
    public var dateTime: Int64? { if case .dateTime(let v) = value { v } else { nil } }

    /// Tags and values, one item per line, without byte strings' contents (they may hold key
    /// material or ciphertext): for errors and tests.
    public var description: String { lines(indent: "").joined(separator: "\n") }

    private func lines(indent: String) -> [String] {
        let name = "0x" + String(tag, radix: 16, uppercase: true)
        switch value {
        case .structure(let items): return ["\(indent)\(name) {"] + items.flatMap { $0.lines(indent: indent + "  ") } + ["\(indent)}"]
        case .byteString(let b): return ["\(indent)\(name) bytes(\(b.count))"]
        case .bigInteger(let b): return ["\(indent)\(name) big(\(b.count))"]
        case .textString(let s): return ["\(indent)\(name) \"\(s)\""]
        default: return ["\(indent)\(name) \(value)"]
        }
    }
}
