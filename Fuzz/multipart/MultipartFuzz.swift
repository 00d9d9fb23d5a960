import FuzzSupport
import NIOCore
@testable import KeywardGateway

/// The multipart/form-data reader a file upload streams through. The input is a boundary (its
/// length in the first byte), a chunk size (the second byte) and a body; the body is read whole
/// and in chunks of that size. Never a trap; and when both readings end without an error, they
/// found the same parts with the same contents.
func fuzz(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    guard count > 2 else { return 0 }
    let input = Array(UnsafeBufferPointer(start: data, count: count))
    let boundaryLength = min(Int(input[0]) % 70 + 1, count - 2)
    let boundary = String(decoding: input[2..<(2 + boundaryLength)], as: UTF8.self)
    let body = Array(input[(2 + boundaryLength)...])
    let whole = read(boundary, body, step: max(body.count, 1))
    let cut = read(boundary, body, step: Int(input[1]) + 1)
    if let whole, let cut { precondition(whole == cut, "the parts depend on how the body was cut") }
    return 0
}

struct Part: Equatable {
    var head: MultipartReader.PartHead
    var content: [UInt8] = []
    var ended = false
}

/// The parts read, or nil if the reader refused the body.
func read(_ boundary: String, _ body: [UInt8], step: Int) -> [Part]? {
    var reader = MultipartReader(boundary: boundary)
    var parts: [Part] = []
    do {
        for start in stride(from: 0, to: body.count, by: step) {
            reader.append(ByteBuffer(bytes: body[start..<min(start + step, body.count)]))
            while let event = try reader.next() {
                switch event {
                case .head(let head): parts.append(Part(head: head))
                case .content(let buffer):
                    precondition(!parts.isEmpty && !parts[parts.count - 1].ended, "content outside a part")
                    parts[parts.count - 1].content += buffer.readableBytesView
                case .end:
                    precondition(!parts.isEmpty, "the end of no part")
                    parts[parts.count - 1].ended = true
                }
            }
        }
    } catch {
        return nil
    }
    precondition(parts.count <= MultipartReader.maxParts)
    return parts
}

@_cdecl("fuzz_multipart_main")
func entry(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv) { fuzz($0, $1) }
}
