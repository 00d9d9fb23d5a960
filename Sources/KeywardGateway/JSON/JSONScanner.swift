/// Finds a top-level member of a JSON object without parsing the rest, so that the gateway can
/// replace one value (the response `id`) and pass every other byte through untouched.
enum JSONScanner {
    /// The byte range of the value of top-level `key` in the object `json`, or nil when `json`
    /// is not an object or lacks the key.
    static func valueRange(of key: String, in json: [UInt8]) -> Range<Int>? {
        valueRange(of: key, in: json, within: 0..<json.count)
    }

    /// The same within the object that spans `bounds` of `json` (a nested value), without copying it.
    static func valueRange(of key: String, in json: [UInt8], within bounds: Range<Int>) -> Range<Int>? {
        var i = skipSpace(json, bounds.lowerBound)
        guard i < bounds.upperBound, json[i] == UInt8(ascii: "{") else { return nil }
        i += 1
        while true {
            i = skipSpace(json, i)
            guard i < bounds.upperBound else { return nil }
            if json[i] == UInt8(ascii: "}") { return nil }
            if json[i] == UInt8(ascii: ",") { i += 1; continue }
            guard json[i] == UInt8(ascii: "\""), let keyEnd = stringEnd(json, i) else { return nil }
            let matches = json[(i + 1)..<(keyEnd - 1)].elementsEqual(key.utf8)
            i = skipSpace(json, keyEnd)
            guard i < json.count, json[i] == UInt8(ascii: ":") else { return nil }
            let start = skipSpace(json, i + 1)
            guard let end = valueEnd(json, start) else { return nil }
            if matches { return start..<end }
            i = end
        }
    }

    /// The integer at `path` (top-level object, then nested objects), e.g. `["usage", "prompt_tokens"]`.
    static func integer(at path: [String], in json: [UInt8]) -> Int? {
        var range = 0..<json.count
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
    /// the key is absent.
    static func replacingString(_ key: String, with value: String, in json: [UInt8]) -> [UInt8] {
        guard let range = valueRange(of: key, in: json) else { return json }
        var out = [UInt8]()
        out.reserveCapacity(json.count + value.utf8.count)
        out += json[..<range.lowerBound]
        out += quoted(value)
        out += json[range.upperBound...]
        return out
    }

    /// A JSON string literal for identifiers we generate (letters, digits, `-`, `_`) and others.
    static func quoted(_ s: String) -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "\"")]
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): out += [92, 34]
            case UInt8(ascii: "\\"): out += [92, 92]
            case 0..<0x20: out += Array("\\u00".utf8) + [hex(b >> 4), hex(b & 15)]
            default: out.append(b)
            }
        }
        out.append(UInt8(ascii: "\""))
        return out
    }

    private static func hex(_ n: UInt8) -> UInt8 { n < 10 ? 48 + n : 87 + n }

    private static func skipSpace(_ j: [UInt8], _ start: Int) -> Int {
        var i = start
        while i < j.count, j[i] == 32 || j[i] == 9 || j[i] == 10 || j[i] == 13 { i += 1 }
        return i
    }

    /// The index after the closing quote of the string starting at `start`.
    private static func stringEnd(_ j: [UInt8], _ start: Int) -> Int? {
        var i = start + 1
        while i < j.count {
            switch j[i] {
            case UInt8(ascii: "\\"): i += 2
            case UInt8(ascii: "\""): return i + 1
            default: i += 1
            }
        }
        return nil
    }

    /// The index after the value starting at `start`.
    private static func valueEnd(_ j: [UInt8], _ start: Int) -> Int? {
        guard start < j.count else { return nil }
        switch j[start] {
        case UInt8(ascii: "\""):
            return stringEnd(j, start)
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            var depth = 0
            var i = start
            while i < j.count {
                switch j[i] {
                case UInt8(ascii: "\""):
                    guard let e = stringEnd(j, i) else { return nil }
                    i = e
                    continue
                case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    depth -= 1
                    if depth == 0 { return i + 1 }
                default: break
                }
                i += 1
            }
            return nil
        default:
            var i = start
            while i < j.count, j[i] != UInt8(ascii: ","), j[i] != UInt8(ascii: "}"), j[i] != UInt8(ascii: "]"),
                  j[i] != 32, j[i] != 10, j[i] != 13, j[i] != 9 { i += 1 }
            return i > start ? i : nil
        }
    }
}
