import Foundation
import HTTPTypes
import Hummingbird
import KeywardCrypto
import NIOCore

// The bodies EncryptedExchanges reads and writes as they pass: answers sealed frame by frame or
// event by event, a small answer gathered whole, an encrypted upload's ciphertext read chunk by chunk.

/// Seals a body of bytes as one message as it passes, frame by frame.
struct SealingStreamWriter: ResponseBodyWriter {
    var inner: any ResponseBodyWriter
    var encryptor: MessageEncryptor

    mutating func write(_ buffer: ByteBuffer) async throws {
        try buffer.withUnsafeReadableBytes { try encryptor.update($0) }
        try await flush()
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        try encryptor.finish()
        try await flush()
        try await inner.finish(trailingHeaders)
    }

    private mutating func flush() async throws {
        var out = ByteBuffer()
        encryptor.drain { out.writeBytes($0) }
        if out.readableBytes > 0 { try await inner.write(out) }
    }
}

/// A request body's chunks, one at a time, for a reader that is not a loop over it.
final class BodyReader: @unchecked Sendable {  // used by one task at a time
    private var iterator: RequestBody.AsyncIterator
    init(_ body: RequestBody) { iterator = body.makeAsyncIterator() }
    func next() async throws -> ByteBuffer? { try await iterator.next() }
    func drain() async { await Request.drain(&iterator) }
}

/// Gathers a whole (small, JSON) response body.
struct CollectingWriter: ResponseBodyWriter {
    final class Box: @unchecked Sendable { var buffer = ByteBuffer() }  // used by one task at a time
    let box: Box
    mutating func write(_ b: ByteBuffer) async throws { var b = b; box.buffer.writeBuffer(&b) }
    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
}

/// Re-writes an event stream as it passes: each event's data (a JSON object) becomes the base64
/// of one sealed message; `[DONE]` stays as it is.
struct SealingEventWriter: ResponseBodyWriter {
    var inner: any ResponseBodyWriter
    let sealer: AnswerSealer
    let requestID: String?
    var splitter = SSEEventSplitter()
    var sequence = 0

    init(inner: any ResponseBodyWriter, sealer: AnswerSealer, requestID: String?) {
        self.inner = inner
        self.sealer = sealer
        self.requestID = requestID
    }

    mutating func write(_ buffer: ByteBuffer) async throws {
        let events = splitter.feed(buffer.readableBytesView)
        guard !events.isEmpty else { return }
        var out: [UInt8] = []
        for event in events { out += try sealed(event).bytes }
        try await inner.write(ByteBuffer(bytes: out))
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        if let last = splitter.finish() { try await inner.write(ByteBuffer(bytes: try sealed(last).bytes)) }
        try await inner.finish(trailingHeaders)
    }

    private mutating func sealed(_ event: SSEEvent) throws -> SSEEvent {
        guard !event.data.isEmpty, event.data != Array("[DONE]".utf8) else { return event }
        var e = event
        e.data = Array(Data(try sealer.seal(event.data, requestID: requestID, sequence: sequence)).base64EncodedString().utf8)
        sequence += 1
        return e
    }
}
