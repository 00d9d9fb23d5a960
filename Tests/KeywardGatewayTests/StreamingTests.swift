import KeywardJSON
import Foundation
@testable import KeywardGateway
import Testing

@Suite("JSON scanning and server-sent events")
struct StreamingTests {
    @Test func replacesOnlyTheTopLevelID() {
        let json = Array(#"{"object":"x","nested":{"id":"inner"},"list":[{"id":1}],"id" : "old","tail":1.50}"#.utf8)
        let out = JSONScanner.replacingString("id", with: "chatcmpl-new", in: json)
        #expect(String(decoding: out, as: UTF8.self) == #"{"object":"x","nested":{"id":"inner"},"list":[{"id":1}],"id" : "chatcmpl-new","tail":1.50}"#)
        // Strings containing braces and escaped quotes do not confuse the scan.
        let tricky = Array(#"{"a":"}\"{","id":"x"}"#.utf8)
        #expect(String(decoding: JSONScanner.replacingString("id", with: "y", in: tricky), as: UTF8.self) == #"{"a":"}\"{","id":"y"}"#)
        #expect(JSONScanner.valueRange(of: "id", in: Array("[1]".utf8)) == nil)
        #expect(JSONScanner.valueRange(of: "id", in: Array(#"{"x":1}"#.utf8)) == nil)
        #expect(JSONScanner.valueRange(of: "id", in: Array(#"{"id":"unterminated"#.utf8)) == nil)
    }

    @Test func readsNestedIntegers() {
        let json = Array(#"{"choices":[{"usage":{"prompt_tokens":99}}],"usage" : {"prompt_tokens": 12 ,"completion_tokens":7}}"#.utf8)
        #expect(JSONScanner.integer(at: ["usage", "prompt_tokens"], in: json) == 12)
        #expect(JSONScanner.integer(at: ["usage", "completion_tokens"], in: json) == 7)
        #expect(JSONScanner.integer(at: ["usage", "total_tokens"], in: json) == nil)
        #expect(JSONScanner.integer(at: ["choices"], in: json) == nil)
    }

    @Test func quotesControlCharacters() {
        #expect(String(decoding: JSONScanner.quoted("a\"b\\c\n"), as: UTF8.self) == #""a\"b\\c\u000a""#)
    }

    @Test func splitsEventsHoweverTheBytesArrive() {
        let wire = Array("event: a\r\ndata: {\"x\":1}\r\n\r\ndata: line1\ndata: line2\n\n: comment\ndata: [DONE]\n\n".utf8)
        for cut in 0...wire.count {
            var s = SSEEventSplitter()
            let events = s.feed(wire[..<cut]) + s.feed(wire[cut...]) + (s.finish().map { [$0] } ?? [])
            #expect(events.count == 3, "cut at \(cut)")
            #expect(events.first?.name == "a")
            #expect(events.first?.data == Array(#"{"x":1}"#.utf8))
            #expect(events.dropFirst().first?.data == Array("line1\nline2".utf8))
            #expect(events.last?.data == Array("[DONE]".utf8))
            #expect(events.last?.otherLines == [Array(": comment".utf8)])
        }
        #expect(SSEEvent(Array("event: a\ndata: x\ndata: y".utf8)).bytes == Array("event: a\ndata: x\ndata: y\n\n".utf8))
    }

    /// A large event in small pieces is scanned once: each piece used to rescan everything held
    /// (4 MiB in 1-KiB pieces: some 8 billion byte visits, minutes; now 4 million).
    @Test func aLargeEventInSmallPiecesIsScannedOnce() {
        var s = SSEEventSplitter()
        let piece = [UInt8](repeating: 0x61, count: 1024)
        let start = ContinuousClock.now
        var events: [SSEEvent] = s.feed(Array("data: ".utf8))
        for _ in 0..<4096 { events += s.feed(piece) }
        events += s.feed(Array("\n\n".utf8))
        #expect(events.count == 1 && events.first?.data.count == 4 << 20)
        #expect(ContinuousClock.now - start < .seconds(10))
    }

    @Test func assemblesAChatStreamWithToolCalls() throws {
        var a = ChatStreamAssembler()
        let chunks = [
            #"{"id":"c","model":"m","created":5,"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            #"{"id":"c","choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
            #"{"id":"c","choices":[{"index":0,"delta":{"content":"lo"}}]}"#,
            #"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\""}}]}}]}"#,
            #"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]}"#,
            #"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            #"{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        ]
        for c in chunks { a.add(Array(c.utf8)) }
        let object = try #require(try JSONSerialization.jsonObject(with: Data(a.assembled(id: "rec"))) as? [String: Any])
        #expect(object["id"] as? String == "rec")
        #expect(object["object"] as? String == "chat.completion")
        #expect(object["model"] as? String == "m")
        let choice = try #require((object["choices"] as? [[String: Any]])?.first)
        #expect(choice["finish_reason"] as? String == "tool_calls")
        let message = try #require(choice["message"] as? [String: Any])
        #expect(message["content"] as? String == "Hello")
        let call = try #require((message["tool_calls"] as? [[String: Any]])?.first)
        #expect(call["id"] as? String == "call_1")
        #expect((call["function"] as? [String: String])?["arguments"] == #"{"a":1}"#)
        #expect((object["usage"] as? [String: Any])?["completion_tokens"] as? Int == 4)
    }

    @Test func assemblesAnAnthropicStream() throws {
        var a = AnthropicStreamAssembler()
        let events = [
            #"{"type":"message_start","message":{"id":"msg_1","role":"assistant","content":[],"usage":{"input_tokens":5,"output_tokens":0}}}"#,
            #"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            #"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi "}}"#,
            #"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"there"}}"#,
            #"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}"#,
            #"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"q\":"}}"#,
            #"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"2}"}}"#,
            #"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":9}}"#,
        ]
        for e in events { a.add(Array(e.utf8)) }
        let m = try #require(try JSONSerialization.jsonObject(with: Data(a.assembled())) as? [String: Any])
        let content = try #require(m["content"] as? [[String: Any]])
        #expect(content.first?["text"] as? String == "Hi there")
        #expect((content.last?["input"] as? [String: Int])?["q"] == 2)
        #expect(m["stop_reason"] as? String == "tool_use")
        #expect(a.promptTokens == 5 && a.completionTokens == 9)
    }

    @Test func recordIDsSortByTime() {
        let a = Tokens.identifier("chatcmpl-", now: 1_795_000_000_000)
        let b = Tokens.identifier("chatcmpl-", now: 1_795_000_000_001)
        let c = Tokens.identifier("chatcmpl-", now: 1_895_000_000_000)
        #expect(a.count == "chatcmpl-".count + 24 && a < b && b < c)
        #expect(Tokens.identifier("x", now: 5) != Tokens.identifier("x", now: 5))
        #expect(a.allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" })
    }

    @Test func formatsMilliseconds() {
        #expect(AIController.millis(.microseconds(1234)) == "1.234")
        #expect(AIController.millis(.microseconds(5)) == "0.005")
        #expect(AIController.millis(.seconds(2)) == "2000.000")
        #expect(AIController.millis(.zero) == "0.000")
    }
}

@Suite("Expiring lookups")
struct ExpiringCacheTests {
    @Test func entriesExpireAndAreBounded() {
        var c = ExpiringCache<String, Int?>(ttl: 5, capacity: 2)
        c.insert(1, for: "a", now: 0)
        c.insert(nil, for: "b", now: 1)  // "known to have none" is a value too
        #expect(c.value(for: "a", now: 4.9) == .some(1))
        #expect(c.value(for: "b", now: 5.9) == .some(nil))
        #expect(c.value(for: "a", now: 5) == nil)  // expired, and dropped
        #expect(c.count == 1)
        c.insert(3, for: "c", now: 2)
        c.insert(4, for: "d", now: 2)  // over capacity: starts over rather than grow
        #expect(c.count == 1 && c.value(for: "d", now: 2) == .some(4))
        c.removeAll()
        #expect(c.value(for: "d", now: 2) == nil)
    }

    @Test func aValueReadBeforeAClearIsNotCachedAfterIt() {
        var c = ExpiringCache<String, Int>(ttl: 5)
        let before = c.generation
        c.removeAll()  // a change lands while the value was being read from the database
        c.insert(1, for: "a", now: 0, ifGeneration: before)
        #expect(c.value(for: "a", now: 0) == nil)
        c.insert(2, for: "a", now: 0, ifGeneration: c.generation)
        #expect(c.value(for: "a", now: 0) == 2)
    }
}
