import Foundation
@testable import KeywardGateway
import KeywardTesting
import NIOCore
import Testing

/// The streaming multipart reader: the same parts whatever the chunking, content that looks like
/// a delimiter passed through, and a clear error for every malformed body.
@Suite("Multipart reader")
struct MultipartReaderTests {
    /// A part as read: head and whole content.
    struct Part: Equatable {
        var head: MultipartReader.PartHead
        var content: [UInt8]
    }

    /// Reads `body` fed in chunks of the given sizes (cycled); returns the parts.
    func read(_ body: [UInt8], boundary: String, chunks: [Int]) throws -> [Part] {
        var reader = MultipartReader(boundary: boundary)
        var parts: [Part] = []
        var at = 0, i = 0
        func drain() throws {
            while let event = try reader.next() {
                switch event {
                case .head(let h): parts.append(Part(head: h, content: []))
                case .content(let b): parts[parts.count - 1].content += b.readableBytesView
                case .end: break
                }
            }
        }
        while at < body.count {
            let n = min(chunks[i % chunks.count], body.count - at)
            reader.append(ByteBuffer(bytes: body[at..<(at + n)]))
            try drain()
            at += n
            i += 1
        }
        try reader.finish()
        return parts
    }

    func body(_ boundary: String, _ parts: [(String, [UInt8])], preamble: String = "") -> [UInt8] {
        var out = Array(preamble.utf8)
        for (headers, content) in parts {
            out += Array("--\(boundary)\r\n\(headers)\r\n\r\n".utf8) + content + Array("\r\n".utf8)
        }
        return out + Array("--\(boundary)--\r\n".utf8)
    }

    @Test func everySplitOfABodyReadsTheSameParts() throws {
        let b = "XyZ-42"
        // Content holding the delimiter's prefixes, a lone CR LF, and `--boundary` without its CR LF.
        let tricky = Array("a\r\n--XyZ-4\r\n--XyZ\r\r\n-\r\n--XyZ-4_2x--XyZ-42".utf8)
        let raw = body(b, [("Content-Disposition: form-data; name=\"purpose\"", Array("batch".utf8)),
                           ("Content-Disposition: form-data; name=\"file\"; filename=\"d.jsonl\"\r\nContent-Type: application/jsonl", tricky),
                           ("Content-Disposition: form-data; name=\"empty\"", [])], preamble: "ignored preamble\r\n")
        let expected = [
            Part(head: .init(name: "purpose"), content: Array("batch".utf8)),
            Part(head: .init(name: "file", filename: "d.jsonl", contentType: "application/jsonl"), content: tricky),
            Part(head: .init(name: "empty"), content: []),
        ]
        #expect(try read(raw, boundary: b, chunks: [raw.count]) == expected)
        for split in 1..<raw.count {
            #expect(try read(raw, boundary: b, chunks: [split, raw.count]) == expected, "split at \(split)")
        }
        for size in 1...9 {
            #expect(try read(raw, boundary: b, chunks: [size]) == expected, "chunks of \(size)")
        }
    }

    /// File content is handed out up to what could begin the delimiter and no further, so that the
    /// next chunk is used as it is (a kept tail means copying the whole next chunk behind it).
    @Test func contentKeepsOnlyWhatCouldBeginTheDelimiter() throws {
        let boundary = "b0und"
        var reader = MultipartReader(boundary: boundary)
        reader.append(ByteBuffer(bytes: Array("--b0und\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n".utf8)))
        #expect(try reader.next() == .head(.init(name: "file")))
        var content: [UInt8] = []
        func feed(_ text: String) throws -> Int {
            reader.append(ByteBuffer(bytes: Array(text.utf8)))
            while case .content(let b)? = try reader.next() { content += b.readableBytesView }
            return reader.keptBytes
        }
        #expect(try feed("plain content, no CR at its end") == 0)
        #expect(try feed("ends with\r") == 1)
        #expect(try feed("\n--b0u") == 7)  // CR LF -- b0u: all could begin the delimiter
        #expect(try feed("x\r\n-") == 3)  // the kept prefix was not one after all; a new one starts
        #expect(try feed("-") == 4)
        #expect(try feed("--b0und") == 0)  // `\r\n---b0und`: the delimiter is not where it seemed
        reader.append(ByteBuffer(bytes: Array("\r\n--b0und--".utf8)))
        #expect(try reader.next() == .end)
        #expect(try reader.next() == nil && reader.isComplete)
        #expect(content == Array("plain content, no CR at its endends with\r\n--b0ux\r\n----b0und".utf8))
    }

    @Test func largeRandomContentPassesThroughInAnyChunking() throws {
        var rng = SplitMix(seed: 7)
        let boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
        var content = rng.bytes(120_000)
        // Plant near-delimiters: everything but the last byte of the real one.
        let near = Array("\r\n--\(boundary)".utf8).dropLast()
        for at in stride(from: 1000, to: 110_000, by: 17_000) { content.replaceSubrange(at..<(at + near.count), with: near) }
        let raw = body(boundary, [("Content-Disposition: form-data; name=\"file\"; filename=\"x.bin\"", content)])
        for chunks in [[65536], [1], [7, 4096, 13], [100_000]] {
            let parts = try read(raw, boundary: boundary, chunks: chunks)
            #expect(parts.count == 1 && parts[0].content == content, "chunks \(chunks)")
        }
    }

    @Test func filenamesAreDecodedAsBrowsersAndSDKsSendThem() throws {
        let h = { (s: String) in try MultipartReader.head(Array(s.utf8)) }
        #expect(try h("Content-Disposition: form-data; name=\"file\"; filename=\"a \\\"q\\\".txt\"").filename == "a \"q\".txt")
        #expect(try h("content-disposition: form-data; name=file; filename=plain.txt").filename == "plain.txt")
        #expect(try h("Content-Disposition: form-data; name=\"file\"; filename*=UTF-8''na%C3%AFve.txt").filename == "naïve.txt")
        #expect(try h("Content-Disposition: form-data; name=\"file\"; filename=\"日本.txt\"").filename == "日本.txt")
        #expect(try h("Content-Disposition: form-data; name=\"purpose\"").filename == nil)
    }

    @Test func malformedBodiesAreRefusedWithACode() throws {
        func refused(_ raw: String, boundary: String = "b") -> String? {
            do {
                _ = try read(Array(raw.utf8), boundary: boundary, chunks: [5])
                return nil
            } catch let e as GatewayError {
                return e.code
            } catch {
                return "\(error)"
            }
        }
        #expect(refused("--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n") == "invalid_multipart")  // no closing delimiter
        #expect(refused("--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--") == "invalid_multipart")  // no disposition
        #expect(refused("--b\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx\r\n--b--") == "invalid_multipart")
        #expect(refused("--b\r\nContent-Disposition: form-data; name=\"a\r\n\r\nx\r\n--b--") == "invalid_multipart")  // open quote
        #expect(refused("--bXX\r\n\r\n--b--") == "invalid_multipart")  // a delimiter followed by junk
        #expect(refused("--b\r\nX-Pad: \(String(repeating: "p", count: 17_000))\r\n\r\n--b--") == "invalid_multipart")
        let many = String(repeating: "--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nv\r\n", count: 65) + "--b--"
        #expect(refused(many) == "invalid_multipart")
        #expect(refused(String(repeating: "preamble ", count: 2000) + "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--b--")
                == "invalid_multipart")
        // Nothing at all, or an epilogue after the close: the close is what counts.
        #expect(refused("") == "invalid_multipart")
        #expect(refused("--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--b--\r\nepilogue") == nil)
    }

    @Test func theBoundaryComesFromTheContentType() throws {
        #expect(try MultipartReader.boundary(contentType: "multipart/form-data; boundary=abc") == "abc")
        #expect(try MultipartReader.boundary(contentType: "Multipart/Form-Data; charset=utf-8; boundary=\"a b:c\"") == "a b:c")
        for bad in [nil, "application/json", "multipart/form-data", "multipart/form-data; boundary=",
                    "multipart/form-data; boundary=\(String(repeating: "x", count: 71))"] {
            #expect(throws: GatewayError.self) { try MultipartReader.boundary(contentType: bad) }
        }
    }
}
