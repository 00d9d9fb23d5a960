/// Thrown by ``ByteReader`` when the bytes at hand end before the field does; the streaming
/// decryptor answers it by waiting for more input, a one-shot parse by reporting truncation.
struct NeedMoreBytes: Error {}

/// Big-endian reads over borrowed bytes. Never copies unless asked to.
struct ByteReader {
    let bytes: UnsafeRawBufferPointer
    private(set) var offset: Int = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var remaining: Int { bytes.count - offset }

    mutating func readUInt8() throws -> UInt8 {
        guard remaining >= 1 else { throw NeedMoreBytes() }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func readUInt16() throws -> UInt16 {
        UInt16(try readUInt8()) << 8 | UInt16(try readUInt8())
    }

    mutating func readUInt32() throws -> UInt32 {
        guard remaining >= 4 else { throw NeedMoreBytes() }
        var v: UInt32 = 0
        for i in 0..<4 { v = v << 8 | UInt32(bytes[offset + i]) }
        offset += 4
        return v
    }

    mutating func readUInt64() throws -> UInt64 {
        guard remaining >= 8 else { throw NeedMoreBytes() }
        var v: UInt64 = 0
        for i in 0..<8 { v = v << 8 | UInt64(bytes[offset + i]) }
        offset += 8
        return v
    }

    /// A view of the next `count` bytes, valid as long as `bytes` is.
    mutating func readSlice(_ count: Int) throws -> UnsafeRawBufferPointer {
        guard count >= 0, remaining >= count else { throw NeedMoreBytes() }
        defer { offset += count }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + count])
    }

    mutating func readBytes(_ count: Int) throws -> [UInt8] { Array(try readSlice(count)) }
}

/// Big-endian appends to a growable byte array.
extension Array where Element == UInt8 {
    mutating func appendUInt16(_ v: UInt16) { append(UInt8(v >> 8)); append(UInt8(v & 0xFF)) }
    mutating func appendUInt32(_ v: UInt32) { for s in stride(from: 24, through: 0, by: -8) { append(UInt8((v >> UInt32(s)) & 0xFF)) } }
    mutating func appendUInt64(_ v: UInt64) { for s in stride(from: 56, through: 0, by: -8) { append(UInt8((v >> UInt64(s)) & 0xFF)) } }

    /// Appends a 2-byte length and the bytes; fails if they do not fit in 2 bytes.
    mutating func appendLengthPrefixed16<C: Collection>(_ bytes: C, what: String) throws where C.Element == UInt8 {
        guard bytes.count <= Int(UInt16.max) else {
            throw KeywardCryptoError(.limitExceeded, "\(what) is longer than 65,535 bytes")
        }
        appendUInt16(UInt16(bytes.count))
        append(contentsOf: bytes)
    }
}
