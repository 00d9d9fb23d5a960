/// Where a streaming encryption or decryption reads from. Chunks are lent, not copied, so a
/// memory-mapped file feeds the frame loop straight from the page cache.
public protocol ByteSource {
    /// Calls `body` with the next bytes (at least one); returns false, without calling it, at the
    /// end of input. The bytes are valid only during the call.
    mutating func nextChunk(_ body: (UnsafeRawBufferPointer) throws -> Void) throws -> Bool
}

/// A source whose bytes are at known offsets (a regular file): the encryptor's workers read their
/// frames' plaintext straight into place in the output, each on its own thread, instead of taking
/// chunks in turn. No mapping to set up and tear down per window, no copy but the read.
public protocol PositionalByteSource: AnyObject, ByteSource {
    /// Bytes not yet consumed.
    var remaining: Int { get }
    /// Fills `buffers` in order with the bytes from `offset` past the consumed ones. Called from
    /// several threads at once, for disjoint ranges. Throws if the bytes cannot all be read.
    func read(at offset: Int, into buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>) throws
    /// Marks `count` more bytes as consumed; `nextChunk` goes on after them.
    func consume(_ count: Int)
}

/// Where a streaming encryption or decryption writes to.
public protocol ByteSink {
    mutating func write(_ bytes: UnsafeRawBufferPointer) throws
}

/// A sink that collects bytes in memory.
public struct ArraySink: ByteSink {
    public var bytes: [UInt8] = []
    public init() {}
    public mutating func write(_ bytes: UnsafeRawBufferPointer) throws { self.bytes.append(contentsOf: bytes) }
}

/// A source over bytes in memory, lent as one chunk.
public struct ArraySource: ByteSource {
    private let parts: [[UInt8]]
    private var next = 0
    public init(_ bytes: [UInt8]) { parts = [bytes] }
    /// Bytes stored in pieces (a record's header and body), read in turn without joining them.
    public init(parts: [[UInt8]]) { self.parts = parts }
    public mutating func nextChunk(_ body: (UnsafeRawBufferPointer) throws -> Void) throws -> Bool {
        while next < parts.count, parts[next].isEmpty { next += 1 }
        guard next < parts.count else { return false }
        next += 1
        try parts[next - 1].withUnsafeBytes(body)
        return true
    }
}
