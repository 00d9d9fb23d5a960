import NIOCore
import Synchronization

/// A response body as it arrives: an async sequence of buffers, with back-pressure (the
/// connection stops reading while more than the high watermark waits unread) and an end that is
/// either clean or an error.
///
/// Dropping a body before its end closes the connection it came on, which cannot carry another
/// request while part of this response is unread.
public final class HTTPResponseBody: AsyncSequence, Sendable {
    public typealias Element = ByteBuffer

    private struct State {
        var buffers = CircularBuffer<ByteBuffer>()
        var bytes = 0
        /// nil while the body is still arriving.
        var end: Result<Void, HTTPClientError>?
        var waiter: CheckedContinuation<ByteBuffer?, any Error>?
        /// The producer stopped reading because too much was buffered.
        var paused = false
    }

    private let state = Mutex(State())
    private let highWatermark: Int
    private let lowWatermark: Int
    /// Resumes reading (called off the event loop; the callee hops).
    private let demand: @Sendable () -> Void
    /// Closes the connection of a body dropped before its end.
    private let abandon: @Sendable () -> Void

    init(highWatermark: Int, lowWatermark: Int, demand: @escaping @Sendable () -> Void, abandon: @escaping @Sendable () -> Void) {
        self.highWatermark = highWatermark
        self.lowWatermark = lowWatermark
        self.demand = demand
        self.abandon = abandon
    }

    deinit {
        if state.withLock({ $0.end == nil }) { abandon() }
    }

    // MARK: Producer (the connection's event loop)

    /// Adds a part; returns false when the producer should stop reading until `demand`.
    func yield(_ buffer: ByteBuffer) -> Bool {
        let (waiter, more) = state.withLock { s -> (CheckedContinuation<ByteBuffer?, any Error>?, Bool) in
            if let w = s.waiter {
                s.waiter = nil
                return (w, true)
            }
            s.buffers.append(buffer)
            s.bytes += buffer.readableBytes
            if s.bytes > highWatermark { s.paused = true }
            return (nil, !s.paused)
        }
        waiter?.resume(returning: buffer)
        return more
    }

    func finish(_ result: Result<Void, HTTPClientError>) {
        let waiter = state.withLock { s -> CheckedContinuation<ByteBuffer?, any Error>? in
            guard s.end == nil else { return nil }
            s.end = result
            defer { s.waiter = nil }
            return s.waiter
        }
        switch result {
        case .success: waiter?.resume(returning: nil)
        case .failure(let e): waiter?.resume(throwing: e)
        }
    }

    // MARK: Consumer

    /// The next part, nil at the end; throws the error the body ended with.
    func next() async throws -> ByteBuffer? {
        enum Step { case part(ByteBuffer, resume: Bool), end(Result<Void, HTTPClientError>), wait }
        let step = state.withLock { s -> Step in
            if let b = s.buffers.popFirst() {
                s.bytes -= b.readableBytes
                let resume = s.paused && s.bytes <= lowWatermark
                if resume { s.paused = false }
                return .part(b, resume: resume)
            }
            if let end = s.end { return .end(end) }
            return .wait
        }
        switch step {
        case .part(let b, let resume):
            if resume { demand() }
            return b
        case .end(.success): return nil
        case .end(.failure(let e)): throw e
        case .wait:
            if state.withLock({ $0.paused }) {
                state.withLock { $0.paused = false }
                demand()
            }
            return try await withCheckedThrowingContinuation { c in
                let ready = state.withLock { s -> Step? in
                    if let b = s.buffers.popFirst() {
                        s.bytes -= b.readableBytes
                        return .part(b, resume: false)
                    }
                    if let end = s.end { return .end(end) }
                    s.waiter = c
                    return nil
                }
                switch ready {
                case .part(let b, _): c.resume(returning: b)
                case .end(.success): c.resume(returning: nil)
                case .end(.failure(let e)): c.resume(throwing: e)
                case .wait, nil: break
                }
            }
        }
    }

    /// The whole body in one buffer; throws `bodyTooLarge` past `limit` bytes.
    public func collect(upTo limit: Int) async throws -> ByteBuffer {
        var all: ByteBuffer?
        while var part = try await next() {
            guard (all?.readableBytes ?? 0) + part.readableBytes <= limit else {
                throw HTTPClientError(.bodyTooLarge, "the response body is larger than \(limit) bytes")
            }
            if all == nil { all = part } else { all!.writeBuffer(&part) }
        }
        return all ?? ByteBuffer()
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let body: HTTPResponseBody
        public mutating func next() async throws -> ByteBuffer? { try await body.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(body: self) }
}
