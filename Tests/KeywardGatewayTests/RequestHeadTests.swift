import KeywardJSON
import Foundation
@testable import KeywardGateway
import PropertyBased
import KeywardTesting
import Testing

@Suite struct RequestHeadTests {
    func head(_ text: String) throws -> RequestHead { try RequestHead.parse(Array(text.utf8)) }

    func code(_ text: String) -> String? {
        do { _ = try head(text); return nil } catch let e as GatewayError { return e.code } catch { return "other" }
    }

    @Test func readsTheThreeFieldsAndIgnoresTheRest() throws {
        #expect(try head(#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#) == RequestHead(model: "gpt-4o"))
        #expect(try head(#" { "stream" : true , "model" : "m" , "store":false, "nested": {"model": "inner"} } "#)
                == RequestHead(model: "m", stream: true, store: false))
        #expect(try head(#"{"model":"a","stream":null,"model":"b"}"#) == RequestHead(model: "b"))
        #expect(try head(#"{"model":"caf\u00e9 \ud83d\ude00 \"q\" \\ \/ \n"}"#).model == "café 😀 \"q\" \\ / \n")
        #expect(try head(#"{"model":"naïve-模型"}"#).model == "naïve-模型")
    }

    @Test func saysWhatIsWrongAndWhere() throws {
        do {
            _ = try head(#"{"model": "mock-1", "messages": [}"#)
            Issue.record("accepted")
        } catch let e as GatewayError {
            #expect(e.code == "invalid_json")
            #expect(e.message.contains("character 33"), "\(e.message)")
        }
        #expect(code(#"{"messages":[]}"#) == "missing_field")
        #expect(code(#"{"model":"m","x":[1,]}"#) == "invalid_json", "a trailing comma (Foundation takes it; RFC 8259 does not)")
        #expect(code(#"{"model":"m","x":1e309}"#) == nil, "a number beyond Double's range (RFC 8259 allows it; Foundation does not)")
        #expect(code(#"{"model":5}"#) == "invalid_field")
        #expect(code(#"{"model":"m","stream":"yes"}"#) == "invalid_field")
        #expect(code(#"["model"]"#) == "invalid_field")
        #expect(code("") == "invalid_json")
        for bad in [#"{"model":"m""#, #"{"model":"m"} x"#, #"{"model":"m",}"#, #"{"model":01}"#, #"{"model":"\x"}"#, "{\"model\":\"a\u{01}\"}",
                    #"{"model":1.}"#, #"{"model":-}"#, #"{"model":tru}"#, #"{'model':'m'}"#] {
            #expect(code(bad) == "invalid_json", "\(bad)")
        }
        #expect(code(String(repeating: "[", count: 600) + String(repeating: "]", count: 600)) == "invalid_json")
        #expect(code(#"{"model":"m","x":"# + String(repeating: "[", count: 500) + String(repeating: "]", count: 500) + "}") == nil)
        // Invalid UTF-8: a stray continuation byte, an overlong form, a surrogate.
        for bytes: [UInt8] in [[0x80], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80]] {
            let body = Array(#"{"model":""#.utf8) + bytes + Array(#""}"#.utf8)
            #expect(throws: GatewayError.self) { _ = try RequestHead.parse(body) }
        }
    }

    /// Agrees with Foundation's own parser on which bodies are JSON, over random documents and
    /// random damage to them.
    @Test func acceptsExactlyWhatFoundationAccepts() async throws {
        #expect(Self.cappingNumbers(Array(#"{"x":[1e999,"1e999",-2E+400,1e3,+1e999]}"#.utf8))
                == Array(#"{"x":[0,"1e999",0,1e3,+1e999]}"#.utf8))
        await propertyCheck(count: 2000, input: Gen.int(in: 0...Int.max), Gen.int(in: 0...4)) { seed, damage in
            var rng = SplitMix(seed: UInt64(truncatingIfNeeded: seed))
            var doc = Array(("{\"model\":\"m\",\"x\":" + Self.randomValue(&rng, depth: 0) + "}").utf8)
            for _ in 0..<damage {
                let at = Int(rng.next() % UInt64(doc.count + 1))
                let junk: [UInt8] = Array(#"{}[],:"\ 0-.eE+tfnu1"#.utf8)
                switch rng.next() % 3 {
                case 0 where at < doc.count: doc.remove(at: at)
                case 1: doc.insert(junk[Int(rng.next() % UInt64(junk.count))], at: at)
                default: if at < doc.count { doc[at] = junk[Int(rng.next() % UInt64(junk.count))] }
                }
            }
            // Foundation also takes a trailing comma in an object or array, which RFC 8259 and we
            // do not; and refuses a number beyond Double's range (1e309), which both allow.
            let foundation = (try? JSONSerialization.jsonObject(with: Data(Self.cappingNumbers(doc)), options: [.fragmentsAllowed])) != nil
                && !Self.hasTrailingComma(doc)
            var scanner = JSONScanner(doc, keys: [])
            let ours = (try? scanner.scanDocument()) != nil
            #expect(ours == foundation, "\(String(decoding: doc, as: UTF8.self))")
        }
    }

    /// `doc` with each JSON number beyond Double's range (outside strings) replaced by `0`, so
    /// that Foundation is asked only about the syntax.
    static func cappingNumbers(_ doc: [UInt8]) -> [UInt8] {
        let number = #/-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/#, numeric = Set("-+.0123456789eE".utf8)
        var out: [UInt8] = [], run: [UInt8] = [], inString = false, escaped = false
        func flush() {
            let text = String(decoding: run, as: UTF8.self)
            out += (try? number.wholeMatch(in: text)) != nil && Double(text)?.isInfinite == true ? [UInt8(ascii: "0")] : run
            run = []
        }
        for b in doc {
            if inString {
                if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") { inString = false }
                out.append(b)
            } else if numeric.contains(b) {
                run.append(b)
            } else {
                flush()
                if b == UInt8(ascii: "\"") { inString = true }
                out.append(b)
            }
        }
        flush()
        return out
    }

    /// A `,` followed (after blanks) by `}` or `]`, outside strings.
    static func hasTrailingComma(_ doc: [UInt8]) -> Bool {
        var inString = false, escaped = false, lastComma = false
        for b in doc {
            if inString {
                if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch b {
            case UInt8(ascii: "\""): inString = true; lastComma = false
            case UInt8(ascii: ","): lastComma = true
            case UInt8(ascii: "}"), UInt8(ascii: "]"): if lastComma { return true }
            case 0x20, 0x09, 0x0A, 0x0D: break
            default: lastComma = false
            }
        }
        return false
    }

    static func randomValue(_ rng: inout SplitMix, depth: Int) -> String {
        switch rng.next() % (depth > 4 ? 4 : 6) {
        case 0: return ["0", "-12", "3.25", "1e9", "-0.5E-3", "42"][Int(rng.next() % 6)]
        case 1: return ["true", "false", "null"][Int(rng.next() % 3)]
        case 2, 3: return "\"" + ["plain", "é", "a\\\"b", "tab\\t", "\\u00e9", "\\\\", "", "日本"][Int(rng.next() % 8)] + "\""
        case 4: return "[" + (0..<Int(rng.next() % 4)).map { _ in randomValue(&rng, depth: depth + 1) }.joined(separator: ",") + "]"
        default:
            return "{" + (0..<Int(rng.next() % 4)).map { k in "\"k\(k)\" : " + randomValue(&rng, depth: depth + 1) }.joined(separator: ", ") + "}"
        }
    }
}

