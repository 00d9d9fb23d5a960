import Foundation
@testable import KeywardGateway
import Testing

/// The pure parts of batches: JSONL split the same whatever the chunking, each line checked
/// against the batch's endpoint with a reason that never repeats its content, and the per-upstream
/// permits handed out first come first served.
@Suite("Batch parts")
struct BatchPartsTests {
    func split(_ text: String, chunk: Int, limit: Int = 1 << 20) throws -> [String] {
        var lines = JSONLines(limit: limit)
        var out: [String] = []
        let bytes = Array(text.utf8)
        for start in stride(from: 0, to: bytes.count, by: chunk) {
            lines.append(bytes[start..<min(start + chunk, bytes.count)])
            while let line = try lines.next() { out.append(String(decoding: line, as: UTF8.self)) }
        }
        if let last = lines.finish() { out.append(String(decoding: last, as: UTF8.self)) }
        return out
    }

    @Test func linesAreTheSameWhateverTheChunking() throws {
        let text = "{\"a\":1}\r\n\n{\"b\":\"x\\ny\"}\n{\"c\":3}"
        for chunk in [1, 2, 3, 7, 100] {
            #expect(try split(text, chunk: chunk) == ["{\"a\":1}", "", "{\"b\":\"x\\ny\"}", "{\"c\":3}"])
        }
        #expect(try split("one\n", chunk: 2) == ["one"])
        #expect(throws: BatchLineError.self) { try split("0123456789\n", chunk: 3, limit: 5) }
        // Without a newline yet: refused as soon as it is longer than the limit.
        #expect(throws: BatchLineError.self) { try split("0123456789", chunk: 3, limit: 5) }
    }

    @Test func aLineIsCheckedAgainstTheEndpoint() throws {
        let good = #"{"custom_id": "r\u00e9-1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m-1", "messages": [], "temperature": 0.70}}"#
        let line = try BatchLine.parse(Array(good.utf8), endpoint: "/v1/chat/completions")
        #expect(line.customID == "ré-1" && line.model == "m-1")
        #expect(String(decoding: line.customIDJSON, as: UTF8.self) == #""r\u00e9-1""#)
        // The body is passed on byte for byte (0.70 stays 0.70).
        #expect(String(decoding: line.body, as: UTF8.self) == #"{"model": "m-1", "messages": [], "temperature": 0.70}"#)
        func code(_ text: String) -> String? {
            do { _ = try BatchLine.parse(Array(text.utf8), endpoint: "/v1/chat/completions"); return nil } catch { return error.code }
        }
        #expect(code("SECRET") == "invalid_json_line")
        #expect(code("[1]") == "invalid_json_line")
        #expect(code(#"{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}"#) == "invalid_json_line")
        #expect(code(#"{"method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}"#) == "missing_custom_id")
        #expect(code(#"{"custom_id": 7, "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}"#) == "missing_custom_id")
        #expect(code(#"{"custom_id": "a", "method": "GET", "url": "/v1/chat/completions", "body": {"model": "m"}}"#) == "invalid_method")
        #expect(code(#"{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m"}}"#) == "mismatched_endpoint")
        #expect(code(#"{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": "SECRET"}"#) == "missing_body")
        #expect(code(#"{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": "SECRET"}}"#) == "invalid_body")
        #expect(code(#"{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "stream": true}}"#) == "invalid_body")
        do {
            _ = try BatchLine.parse(Array(#"{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": "SECRET"}}"#.utf8),
                                    endpoint: "/v1/chat/completions")
        } catch {
            #expect(!error.message.contains("SECRET"))
        }
    }

    @Test func resultLinesAreOpenAIsShape() throws {
        let ok = LineSender.resultLine(customID: Array(#""a""#.utf8), status: 200, requestID: "req_1", body: Array(#"{"x":1}"#.utf8))
        let text = String(decoding: ok, as: UTF8.self)
        #expect(text.hasPrefix(#"{"id":"batch_req_"#))
        #expect(text.hasSuffix(#","custom_id":"a","response":{"status_code":200,"request_id":"req_1","body":{"x":1}},"error":null}"#))
        let odd = String(decoding: LineSender.resultLine(customID: Array(#""a""#.utf8), status: 502, requestID: "r", body: Array("<html>".utf8)),
                         as: UTF8.self)
        #expect(odd.contains(#""body":"<html>"}"#))
        let error = String(decoding: LineSender.errorLine(customID: Array(#""b""#.utf8), code: "batch_cancelled", message: "say \"no\""), as: UTF8.self)
        #expect(error.hasSuffix(#","custom_id":"b","response":null,"error":{"code":"batch_cancelled","message":"say \"no\""}}"#))
        #expect(Batches.lineID("batch_x", 42) == "batch_x.0000042")
        #expect(Batches.lineID("batch_x", 49_999) < Batches.lineID("batch_x", 50_000))
    }

    @Test func permitsAreHandedOutInTurn() {
        var p = PermitCounts(limit: 2)
        let granted = [p.acquire("up", waiter: 1), p.acquire("up", waiter: 2), p.acquire("up", waiter: 3), p.acquire("up", waiter: 4),
                       p.acquire("other", waiter: 5)]
        #expect(granted == [true, true, false, false, true])
        // A waiter that gives up leaves the queue; the permit passes to the next in line.
        let withdrawn = [p.withdraw("up", waiter: 3), p.withdraw("up", waiter: 3)]
        #expect(withdrawn == [true, false])
        let next = p.release("up")
        #expect(next == 4 && p.holders("up") == 2)
        let rest = [p.release("up"), p.release("up")]
        #expect(rest == [nil, nil] && p.holders("up") == 0)
        // A newcomer does not pass the queue.
        var q = PermitCounts(limit: 1)
        let first = [q.acquire("u", waiter: 1), q.acquire("u", waiter: 2)]
        let passed = q.release("u")
        let late = q.acquire("u", waiter: 3)
        #expect(first == [true, false] && passed == 2 && !late)
    }

    @Test func permitsBoundTasksAndSurviveCancellation() async throws {
        let permits = Permits(limit: 2)
        let peak = Peak()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<20 {
                group.addTask {
                    try await permits.withPermit("up") {
                        peak.enter()
                        try? await Task.sleep(for: .milliseconds(5))
                        peak.leave()
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(peak.max == 2)
        // Waiters cancelled while queued throw, and their permits are not lost.
        let waiting = Task {
            try await permits.withPermit("up") { try await Task.sleep(for: .seconds(10)) }
        }
        let holders = (0..<2).map { _ in Task { try await permits.withPermit("up") { try await Task.sleep(for: .seconds(10)) } } }
        try await Task.sleep(for: .milliseconds(50))
        waiting.cancel()
        for h in holders { h.cancel() }
        for t in [waiting] + holders { _ = await t.result }
        let again = try await permits.withPermit("up") { 7 }
        #expect(again == 7)
    }
}

private final class Peak: @unchecked Sendable {
    private let lock = NSLock()
    private var now = 0
    private(set) var max = 0
    func enter() { lock.lock(); now += 1; max = Swift.max(max, now); lock.unlock() }
    func leave() { lock.lock(); now -= 1; lock.unlock() }
}
