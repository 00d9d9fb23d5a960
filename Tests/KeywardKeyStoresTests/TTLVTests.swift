import Foundation
@testable import KeywardKeyStores
import KeywardTesting
import PropertyBased
import Testing

/// KMIP's TTLV encoding: the specification's own examples (KMIP 1.4, section 9.1.2), round trips of
/// generated trees, and bytes that are not TTLV (never a crash, always a clear error).
@Suite struct TTLVTests {
    static func hex(_ s: String) -> [UInt8] {
        let digits = Array(s.filter(\.isHexDigit))
        return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(digits[$0...$0 + 1]), radix: 16)! }
    }

    /// Each example of KMIP 1.4 section 9.1.2 ("Examples"), tag 0x420020, as the spec prints it.
    static let specExamples: [(TTLV, String)] = [
        (TTLV(0x420020, .integer(8)), "42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00"),
        (TTLV(0x420020, .longInteger(123_456_789_000_000_000)), "42 00 20 | 03 | 00 00 00 08 | 01 B6 9B 4B A5 74 92 00"),
        (TTLV(0x420020, .bigInteger(hex("00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00"))),
         "42 00 20 | 04 | 00 00 00 10 | 00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00"),
        (TTLV(0x420020, .enumeration(255)), "42 00 20 | 05 | 00 00 00 04 | 00 00 00 FF 00 00 00 00"),
        (TTLV(0x420020, .boolean(true)), "42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 01"),
        (TTLV(0x420020, .textString("Hello World")), "42 00 20 | 07 | 00 00 00 0B | 48 65 6C 6C 6F 20 57 6F 72 6C 64 00 00 00 00 00"),
        (TTLV(0x420020, .byteString([1, 2, 3])), "42 00 20 | 08 | 00 00 00 03 | 01 02 03 00 00 00 00 00"),
        // Friday, March 14, 2008, 11:56:40 GMT
        (TTLV(0x420020, .dateTime(0x47DA_67F8)), "42 00 20 | 09 | 00 00 00 08 | 00 00 00 00 47 DA 67 F8"),
        // 10 days in seconds
        (TTLV(0x420020, .interval(864_000)), "42 00 20 | 0A | 00 00 00 04 | 00 0D 2F 00 00 00 00 00"),
        (TTLV(0x420020, [TTLV(0x420004, .enumeration(254)), TTLV(0x420005, .integer(255))]),
         "42 00 20 | 01 | 00 00 00 20 | 42 00 04 | 05 | 00 00 00 04 | 00 00 00 FE 00 00 00 00 | 42 00 05 | 02 | 00 00 00 04 | 00 00 00 FF 00 00 00 00"),
    ]

    @Test func theSpecificationsExamplesEncodeAndDecode() throws {
        for (item, expected) in Self.specExamples {
            #expect(item.encoded == Self.hex(expected), "\(item)")
            #expect(try TTLV.decode(Self.hex(expected)) == item)
            #expect(TTLV.frameLength(header: Self.hex(expected)) == Self.hex(expected).count)
        }
    }

    /// Trees generated from a seed, so that a failing seed replays.
    struct Trees {
        var random: SplitMix
        init(state: UInt64) { random = SplitMix(seed: state) }
        mutating func next() -> UInt64 { random.next() }
        mutating func bytes(_ n: Int) -> [UInt8] { random.bytes(n) }
        mutating func item(depth: Int) -> TTLV {
            let tag = 0x42_0000 | UInt32(next() % 0x10000)
            let kind = Int(next() % (depth < 4 ? 10 : 9))
            let value: TTLV.Value
            switch kind {
            case 0: value = .integer(Int32(truncatingIfNeeded: next()))
            case 1: value = .longInteger(Int64(bitPattern: next()))
            case 2: value = .bigInteger(bytes(8 * Int(1 + next() % 3)))
            case 3: value = .enumeration(UInt32(truncatingIfNeeded: next()))
            case 4: value = .boolean(next() % 2 == 0)
            case 5: value = .textString(String(decoding: bytes(Int(next() % 20)).map { 0x20 + $0 % 0x5F }, as: UTF8.self) + (next() % 3 == 0 ? "é✓" : ""))
            case 6: value = .byteString(bytes(Int(next() % 40)))
            case 7: value = .dateTime(Int64(bitPattern: next()))
            case 8: value = .interval(UInt32(truncatingIfNeeded: next()))
            default: value = .structure((0..<Int(next() % 5)).map { _ in item(depth: depth + 1) })
            }
            return TTLV(tag, value)
        }
    }

    @Test func generatedTreesRoundTrip() async {
        await propertyCheck(count: 300, input: Gen.int(in: 0...1_000_000_000)) { seed in
            var g = Trees(state: UInt64(seed))
            let tree = g.item(depth: 0)
            let bytes = tree.encoded
            #expect(bytes.count % 8 == 0)
            #expect(TTLV.frameLength(header: bytes) == bytes.count)
            #expect((try? TTLV.decode(bytes)) == tree)
        }
    }

    @Test func everyTruncationAndFlippedByteIsAnErrorOrAnotherTreeNeverACrash() async {
        await propertyCheck(count: 60, input: Gen.int(in: 0...1_000_000_000)) { seed in
            var g = Trees(state: UInt64(seed))
            let bytes = TTLV(0x420078, [g.item(depth: 1), g.item(depth: 1)]).encoded
            for cut in 0..<bytes.count {
                #expect(throws: TTLV.DecodingError.self) { try TTLV.decode(Array(bytes[..<cut])) }
            }
            for i in bytes.indices {
                var flipped = bytes
                flipped[i] ^= UInt8(truncatingIfNeeded: g.next() | 1)
                _ = try? TTLV.decode(flipped)
            }
        }
    }

    @Test func malformedItemsSayWhy() {
        let cases: [(String, String)] = [
            ("42 00 20 | 02 | 00 00 00 08 | 00 00 00 08 00 00 00 00", "type 2 with length 8"),
            ("42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 02", "a boolean of 2"),
            ("42 00 20 | 07 | 00 00 00 02 | FF FE 00 00 00 00 00 00", "text that is not UTF-8"),
            ("42 00 20 | 08 | 00 00 00 03 | 01 02 03 00 00 00 00 01", "padding that is not zero"),
            ("42 00 20 | 0B | 00 00 00 00", "unknown type 11"),
            ("42 00 20 | 08 | 7F FF FF FF | 00", "a length past the end"),
            ("42 00 20 | 01 | 00 00 00 08 | 42 00 04 | 05 | 00 00 00 04 | 00 00 00 FE 00 00 00 00", "a structure's items overrun its length"),
        ]
        for (bytes, reason) in cases {
            #expect(throws: TTLV.DecodingError(reason: reason)) { try TTLV.decode(Self.hex(bytes)) }
        }
        var deep = TTLV(0x420001, .integer(1))
        for _ in 0...TTLV.maxDepth { deep = TTLV(0x420001, [deep]) }
        #expect(throws: TTLV.DecodingError(reason: "nested deeper than \(TTLV.maxDepth)")) { try TTLV.decode(deep.encoded) }
    }

    @Test func descriptionsNeverShowByteStrings() {
        let secret: [UInt8] = Array("key material".utf8)
        let item = TTLV(0x42007C, [TTLV(0x4200C2, .byteString(secret)), TTLV(0x420094, .textString("uid-1"))])
        #expect(!item.description.contains("key material"))
        #expect(item.description.contains("bytes(12)") && item.description.contains("uid-1"))
    }
}
