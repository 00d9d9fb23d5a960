/// The gateway's one JSON reader: a strict single pass (RFC 8259: structure, numbers, escapes,
/// UTF-8, nesting at most 512 deep) that records where the values of some top-level keys of an
/// object are (the last occurrence wins, as in Foundation's decoders), so that a few fields can be
/// read, or one value replaced, while every other byte passes through untouched.
public struct JSONScanner {
    public struct Failure: Error {
        public let reason: String
        public let offset: Int
    }

    private let json: [UInt8]
    private let keys: [[UInt8]]
    private var i: Int
    private let end: Int
    /// For each key, the byte range of its value in a top-level object.
    public private(set) var found: [Range<Int>?]
    public private(set) var topLevelIsObject = false
    public static let maxDepth = 512

    /// A scanner of the document `json`, or of the one value that spans `bounds` of it.
    public init(_ json: [UInt8], keys: [[UInt8]], within bounds: Range<Int>? = nil) {
        self.json = json
        self.keys = keys
        i = bounds?.lowerBound ?? 0
        end = bounds?.upperBound ?? json.count
        found = Array(repeating: nil, count: keys.count)
    }

    /// Checks that the document (or the value within the bounds) is one JSON value, recording the keys' values.
    public mutating func scanDocument() throws(Failure) {
        skipSpace()
        topLevelIsObject = i < end && json[i] == UInt8(ascii: "{")
        try scanValue(depth: 0)
        skipSpace()
        guard i == end else { throw fail("garbage after the value") }
    }

    private func fail(_ reason: String) -> Failure {
        Failure(reason: i < end ? "\(reason) (\(Self.describe(json[i])))" : "\(reason) (the body ends)", offset: i)
    }

    private static func describe(_ b: UInt8) -> String {
        (0x21...0x7E).contains(b) ? "'\(Character(Unicode.Scalar(b)))'" : "byte \(b)"
    }

    private mutating func skipSpace() {
        while i < end, json[i] == 0x20 || json[i] == 0x0A || json[i] == 0x0D || json[i] == 0x09 { i += 1 }
    }

    private mutating func scanValue(depth: Int) throws(Failure) {
        guard i < end else { throw fail("a value is missing") }
        switch json[i] {
        case UInt8(ascii: "{"): try scanObject(depth: depth + 1)
        case UInt8(ascii: "["): try scanArray(depth: depth + 1)
        case UInt8(ascii: "\""): try scanString()
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): try scanNumber()
        default: throw fail("unexpected character")
        }
    }

    private mutating func literal(_ word: StaticString) throws(Failure) {
        let n = word.utf8CodeUnitCount
        guard i + n <= end, word.withUTF8Buffer({ json[i..<(i + n)].elementsEqual($0) }) else { throw fail("unexpected character") }
        i += n
    }

    private mutating func scanObject(depth: Int) throws(Failure) {
        guard depth <= Self.maxDepth else { throw fail("nested too deeply") }
        i += 1
        skipSpace()
        if i < end, json[i] == UInt8(ascii: "}") { i += 1; return }
        while true {
            skipSpace()
            guard i < end, json[i] == UInt8(ascii: "\"") else { throw fail("expected a member name") }
            let keyStart = i + 1
            try scanString()
            let keyEnd = i - 1
            skipSpace()
            guard i < end, json[i] == UInt8(ascii: ":") else { throw fail("expected ':'") }
            i += 1
            skipSpace()
            let valueStart = i
            try scanValue(depth: depth)
            if depth == 1, let k = keys.firstIndex(where: { json[keyStart..<keyEnd].elementsEqual($0) }) {
                found[k] = valueStart..<i
            }
            skipSpace()
            guard i < end else { throw fail("expected ',' or '}'") }
            if json[i] == UInt8(ascii: ",") { i += 1; continue }
            guard json[i] == UInt8(ascii: "}") else { throw fail("expected ',' or '}'") }
            i += 1
            return
        }
    }

    private mutating func scanArray(depth: Int) throws(Failure) {
        guard depth <= Self.maxDepth else { throw fail("nested too deeply") }
        i += 1
        skipSpace()
        if i < end, json[i] == UInt8(ascii: "]") { i += 1; return }
        while true {
            skipSpace()
            try scanValue(depth: depth)
            skipSpace()
            guard i < end else { throw fail("expected ',' or ']'") }
            if json[i] == UInt8(ascii: ",") { i += 1; continue }
            guard json[i] == UInt8(ascii: "]") else { throw fail("expected ',' or ']'") }
            i += 1
            return
        }
    }

    private mutating func scanString() throws(Failure) {
        i += 1
        while i < end {
            let b = json[i]
            switch b {
            case UInt8(ascii: "\""):
                i += 1
                return
            case UInt8(ascii: "\\"):
                guard i + 1 < end else { throw fail("unterminated string") }
                switch json[i + 1] {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                     UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    i += 2
                case UInt8(ascii: "u"):
                    guard i + 6 <= end, json[(i + 2)..<(i + 6)].allSatisfy(Self.isHex) else { throw fail("invalid \\u escape") }
                    i += 6
                default:
                    throw fail("invalid escape")
                }
            case 0..<0x20:
                throw fail("control character in a string")
            case 0x20..<0x80:
                i += 1
            default:
                try scanUTF8()
            }
        }
        throw fail("unterminated string")
    }

    /// One multi-byte UTF-8 sequence (RFC 3629: no overlong forms, surrogates or values past U+10FFFF).
    private mutating func scanUTF8() throws(Failure) {
        let b0 = json[i]
        let (count, lower, upper): (Int, UInt8, UInt8)
        switch b0 {
        case 0xC2...0xDF: (count, lower, upper) = (2, 0x80, 0xBF)
        case 0xE0: (count, lower, upper) = (3, 0xA0, 0xBF)
        case 0xE1...0xEC, 0xEE...0xEF: (count, lower, upper) = (3, 0x80, 0xBF)
        case 0xED: (count, lower, upper) = (3, 0x80, 0x9F)
        case 0xF0: (count, lower, upper) = (4, 0x90, 0xBF)
        case 0xF1...0xF3: (count, lower, upper) = (4, 0x80, 0xBF)
        case 0xF4: (count, lower, upper) = (4, 0x80, 0x8F)
        default: throw fail("invalid UTF-8")
        }
        guard i + count <= end, (lower...upper).contains(json[i + 1]),
              json[(i + 2)..<(i + count)].allSatisfy({ (0x80...0xBF).contains($0) }) else { throw fail("invalid UTF-8") }
        i += count
    }

    private mutating func scanNumber() throws(Failure) {
        if json[i] == UInt8(ascii: "-") { i += 1 }
        guard i < end, Self.isDigit(json[i]) else { throw fail("invalid number") }
        if json[i] == UInt8(ascii: "0") { i += 1 } else { while i < end, Self.isDigit(json[i]) { i += 1 } }
        if i < end, json[i] == UInt8(ascii: ".") {
            i += 1
            guard i < end, Self.isDigit(json[i]) else { throw fail("invalid number") }
            while i < end, Self.isDigit(json[i]) { i += 1 }
        }
        if i < end, json[i] == UInt8(ascii: "e") || json[i] == UInt8(ascii: "E") {
            i += 1
            if i < end, json[i] == UInt8(ascii: "+") || json[i] == UInt8(ascii: "-") { i += 1 }
            guard i < end, Self.isDigit(json[i]) else { throw fail("invalid number") }
            while i < end, Self.isDigit(json[i]) { i += 1 }
        }
    }

    private static func isDigit(_ b: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b) }
    private static func isHex(_ b: UInt8) -> Bool {
        isDigit(b) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(b) || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(b)
    }

    /// The value of a JSON string literal already checked by the scanner; nil if `literal` is
    /// not a string. Unpaired surrogate escapes become U+FFFD, as Foundation decodes them.
    public static func string(_ literal: ArraySlice<UInt8>) -> String? {
        guard literal.count >= 2, literal.first == UInt8(ascii: "\""), literal.last == UInt8(ascii: "\"") else { return nil }
        let inner = literal.dropFirst().dropLast()
        guard inner.contains(UInt8(ascii: "\\")) else { return String(decoding: inner, as: UTF8.self) }
        var out: [UInt8] = []
        out.reserveCapacity(inner.count)
        var j = inner.startIndex
        func hex4(_ at: Int) -> UInt32 {
            inner[at..<(at + 4)].reduce(0) { v, b in
                let d: UInt8 = b <= UInt8(ascii: "9") ? b - 48 : (b | 0x20) - 87
                return v << 4 | UInt32(d)
            }
        }
        while j < inner.endIndex {
            guard inner[j] == UInt8(ascii: "\\") else { out.append(inner[j]); j += 1; continue }
            let e = inner[j + 1]
            j += 2
            switch e {
            case UInt8(ascii: "b"): out.append(8)
            case UInt8(ascii: "f"): out.append(12)
            case UInt8(ascii: "n"): out.append(10)
            case UInt8(ascii: "r"): out.append(13)
            case UInt8(ascii: "t"): out.append(9)
            case UInt8(ascii: "u"):
                var scalar = hex4(j)
                j += 4
                if (0xD800...0xDBFF).contains(scalar), j + 6 <= inner.endIndex, inner[j] == UInt8(ascii: "\\"), inner[j + 1] == UInt8(ascii: "u"),
                   case let low = hex4(j + 2), (0xDC00...0xDFFF).contains(low) {
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    j += 6
                }
                out.append(contentsOf: String(Character(Unicode.Scalar(scalar) ?? "\u{FFFD}")).utf8)
            default: out.append(e)  // \" \\ \/
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension JSONScanner {
    /// The byte range of the value of top-level `key` in the object `json` (or in the object that
    /// spans `bounds` of it, a nested value, without copying it); nil when that is not a valid
    /// JSON object or lacks the key.
    public static func valueRange(of key: String, in json: [UInt8], within bounds: Range<Int>? = nil) -> Range<Int>? {
        valueRanges(of: [key], in: json, within: bounds)?[0]
    }

    /// The byte ranges of the values of top-level `keys` in the object `json` (or in the object
    /// that spans `bounds` of it), found in one pass; nil when that is not a valid JSON object.
    public static func valueRanges(of keys: [String], in json: [UInt8], within bounds: Range<Int>? = nil) -> [Range<Int>?]? {
        var scanner = JSONScanner(json, keys: keys.map { Array($0.utf8) }, within: bounds)
        guard (try? scanner.scanDocument()) != nil, scanner.topLevelIsObject else { return nil }
        return scanner.found
    }

    /// `json` with the value at `range` replaced by the JSON string `value`.
    public static func replacing(_ range: Range<Int>, withString value: String, in json: [UInt8]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(json.count + value.utf8.count + 2)
        out += json[..<range.lowerBound]
        JSONString.append(quoted: value, to: &out)
        out += json[range.upperBound...]
        return out
    }

    /// The integer at `path` (top-level object, then nested objects), e.g. `["usage", "prompt_tokens"]`,
    /// of `json` or of the value that spans `bounds` of it.
    public static func integer(at path: [String], in json: [UInt8], within bounds: Range<Int>? = nil) -> Int? {
        var range = bounds ?? 0..<json.count
        for key in path {
            guard let r = valueRange(of: key, in: json, within: range) else { return nil }
            range = r
        }
        // A JSON integer: optional minus, digits (no fraction or exponent, which Int() refused too).
        var i = range.lowerBound, negative = false, value = 0
        if i < range.upperBound, json[i] == UInt8(ascii: "-") { negative = true; i += 1 }
        guard i < range.upperBound else { return nil }
        while i < range.upperBound {
            let d = Int(json[i]) - 48
            guard (0...9).contains(d) else { return nil }
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(d)
            guard !o1, !o2 else { return nil }
            value = a
            i += 1
        }
        return negative ? -value : value
    }

    /// `json` with the value of top-level `key` replaced by the JSON string `value`; unchanged if
    /// the key is absent or `json` is not a valid object.
    public static func replacingString(_ key: String, with value: String, in json: [UInt8]) -> [UInt8] {
        guard let range = valueRange(of: key, in: json) else { return json }
        return replacing(range, withString: value, in: json)
    }

    /// A JSON string literal (see ``JSONString``).
    public static func quoted(_ s: String) -> [UInt8] {
        var out: [UInt8] = []
        JSONString.append(quoted: s, to: &out)
        return out
    }
}

/// Writing JSON strings: the one quoting every module uses (records' metadata, listings, replaced ids).
public enum JSONString {
    /// Appends `s` as a JSON string literal: `"` and `\` escaped, control characters as `\u00xx`.
    public static func append(quoted s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): out += [92, 34]
            case UInt8(ascii: "\\"): out += [92, 92]
            case 0..<0x20: out += [92, UInt8(ascii: "u"), 48, 48, hex(b >> 4), hex(b & 15)]
            default: out.append(b)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    private static func hex(_ n: UInt8) -> UInt8 { n < 10 ? 48 + n : 87 + n }
}
