/// The fields the gateway reads from an AI request body (`model`, `stream`, `store`); every other
/// byte passes through untouched.
///
/// Read in one pass that also checks the whole body is JSON (RFC 8259: structure, numbers,
/// escapes, UTF-8, nesting at most 512 deep), as a strict parser would: Foundation's JSONDecoder
/// took ~3 % of the gateway's CPU for these three fields.
struct RequestHead: Equatable {
    var model: String
    var stream: Bool?
    var store: Bool?

    /// Parses `body`; throws the same 400 errors as decoding it would (`invalid_json` saying at
    /// which character, `missing_field`, `invalid_field`).
    static func parse(_ body: [UInt8]) throws -> RequestHead {
        var scanner = JSONSyntaxScanner(body, keys: keys)
        do { try scanner.scanDocument() } catch {
            throw GatewayError.invalidRequest("the body is not valid JSON: \(error.reason) at character \(error.offset)", code: "invalid_json")
        }
        guard scanner.topLevelIsObject else {
            throw GatewayError.invalidRequest("field '' has the wrong type", code: "invalid_field")
        }
        guard let modelRange = scanner.found[0] else {
            throw GatewayError.invalidRequest("missing required field 'model'", code: "missing_field")
        }
        guard let model = JSONSyntaxScanner.string(body[modelRange]) else {
            throw GatewayError.invalidRequest("field 'model' has the wrong type", code: "invalid_field")
        }
        func flag(_ i: Int, _ name: String) throws -> Bool? {
            guard let r = scanner.found[i] else { return nil }
            switch body[r.lowerBound] {
            case UInt8(ascii: "t"): return true
            case UInt8(ascii: "f"): return false
            case UInt8(ascii: "n"): return nil
            default: throw GatewayError.invalidRequest("field '\(name)' has the wrong type", code: "invalid_field")
            }
        }
        return RequestHead(model: model, stream: try flag(1, "stream"), store: try flag(2, "store"))
    }

    private static let keys = ["model", "stream", "store"].map { Array($0.utf8) }
}

/// A strict single-pass JSON syntax check that records where the values of some top-level keys
/// of an object are (the last occurrence wins, as in Foundation's decoders).
struct JSONSyntaxScanner {
    struct Failure: Error {
        let reason: String
        let offset: Int
    }

    private let json: [UInt8]
    private let keys: [[UInt8]]
    private var i = 0
    /// For each key, the byte range of its value in a top-level object.
    private(set) var found: [Range<Int>?]
    private(set) var topLevelIsObject = false
    static let maxDepth = 512

    init(_ json: [UInt8], keys: [[UInt8]]) {
        self.json = json
        self.keys = keys
        found = Array(repeating: nil, count: keys.count)
    }

    mutating func scanDocument() throws(Failure) {
        skipSpace()
        topLevelIsObject = i < json.count && json[i] == UInt8(ascii: "{")
        try scanValue(depth: 0)
        skipSpace()
        guard i == json.count else { throw fail("garbage after the value") }
    }

    private func fail(_ reason: String) -> Failure {
        Failure(reason: i < json.count ? "\(reason) (\(Self.describe(json[i])))" : "\(reason) (the body ends)", offset: i)
    }

    private static func describe(_ b: UInt8) -> String {
        (0x21...0x7E).contains(b) ? "'\(Character(Unicode.Scalar(b)))'" : "byte \(b)"
    }

    private mutating func skipSpace() {
        while i < json.count, json[i] == 0x20 || json[i] == 0x0A || json[i] == 0x0D || json[i] == 0x09 { i += 1 }
    }

    private mutating func scanValue(depth: Int) throws(Failure) {
        guard i < json.count else { throw fail("a value is missing") }
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
        guard i + n <= json.count, word.withUTF8Buffer({ json[i..<(i + n)].elementsEqual($0) }) else { throw fail("unexpected character") }
        i += n
    }

    private mutating func scanObject(depth: Int) throws(Failure) {
        guard depth <= Self.maxDepth else { throw fail("nested too deeply") }
        i += 1
        skipSpace()
        if i < json.count, json[i] == UInt8(ascii: "}") { i += 1; return }
        while true {
            skipSpace()
            guard i < json.count, json[i] == UInt8(ascii: "\"") else { throw fail("expected a member name") }
            let keyStart = i + 1
            try scanString()
            let keyEnd = i - 1
            skipSpace()
            guard i < json.count, json[i] == UInt8(ascii: ":") else { throw fail("expected ':'") }
            i += 1
            skipSpace()
            let valueStart = i
            try scanValue(depth: depth)
            if depth == 1, let k = keys.firstIndex(where: { json[keyStart..<keyEnd].elementsEqual($0) }) {
                found[k] = valueStart..<i
            }
            skipSpace()
            guard i < json.count else { throw fail("expected ',' or '}'") }
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
        if i < json.count, json[i] == UInt8(ascii: "]") { i += 1; return }
        while true {
            skipSpace()
            try scanValue(depth: depth)
            skipSpace()
            guard i < json.count else { throw fail("expected ',' or ']'") }
            if json[i] == UInt8(ascii: ",") { i += 1; continue }
            guard json[i] == UInt8(ascii: "]") else { throw fail("expected ',' or ']'") }
            i += 1
            return
        }
    }

    private mutating func scanString() throws(Failure) {
        i += 1
        while i < json.count {
            let b = json[i]
            switch b {
            case UInt8(ascii: "\""):
                i += 1
                return
            case UInt8(ascii: "\\"):
                guard i + 1 < json.count else { throw fail("unterminated string") }
                switch json[i + 1] {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                     UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    i += 2
                case UInt8(ascii: "u"):
                    guard i + 6 <= json.count, json[(i + 2)..<(i + 6)].allSatisfy(Self.isHex) else { throw fail("invalid \\u escape") }
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
        guard i + count <= json.count, (lower...upper).contains(json[i + 1]),
              json[(i + 2)..<(i + count)].allSatisfy({ (0x80...0xBF).contains($0) }) else { throw fail("invalid UTF-8") }
        i += count
    }

    private mutating func scanNumber() throws(Failure) {
        if json[i] == UInt8(ascii: "-") { i += 1 }
        guard i < json.count, Self.isDigit(json[i]) else { throw fail("invalid number") }
        if json[i] == UInt8(ascii: "0") { i += 1 } else { while i < json.count, Self.isDigit(json[i]) { i += 1 } }
        if i < json.count, json[i] == UInt8(ascii: ".") {
            i += 1
            guard i < json.count, Self.isDigit(json[i]) else { throw fail("invalid number") }
            while i < json.count, Self.isDigit(json[i]) { i += 1 }
        }
        if i < json.count, json[i] == UInt8(ascii: "e") || json[i] == UInt8(ascii: "E") {
            i += 1
            if i < json.count, json[i] == UInt8(ascii: "+") || json[i] == UInt8(ascii: "-") { i += 1 }
            guard i < json.count, Self.isDigit(json[i]) else { throw fail("invalid number") }
            while i < json.count, Self.isDigit(json[i]) { i += 1 }
        }
    }

    private static func isDigit(_ b: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b) }
    private static func isHex(_ b: UInt8) -> Bool {
        isDigit(b) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(b) || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(b)
    }

    /// The value of a JSON string literal already checked by the scanner; nil if `literal` is
    /// not a string. Unpaired surrogate escapes become U+FFFD, as Foundation decodes them.
    static func string(_ literal: ArraySlice<UInt8>) -> String? {
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
