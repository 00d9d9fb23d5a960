import CKeywardOpenSSL

/// Key material held in memory we own: no printable form, compared in constant time, and
/// overwritten when the last reference goes away.
///
/// Bytes are reached only through ``withUnsafeBytes(_:)`` so that no copy escapes by accident.
public final class SecretBytes: @unchecked Sendable {
    // Immutable after init, so sharing across threads is safe.
    private let storage: UnsafeMutableRawBufferPointer

    /// The number of bytes.
    public var count: Int { count_ }

    /// Fresh random bytes from the CSPRNG.
    public init(randomCount count: Int) {
        storage = .allocate(byteCount: max(count, 1), alignment: 16)
        guard kw_random(storage.baseAddress!.assumingMemoryBound(to: UInt8.self), count) == 1 else {
            fatalError("the system CSPRNG failed")
        }
        self.count_ = count
    }

    /// Copies `bytes`. The caller remains responsible for wiping its own copy.
    public init<Bytes: Collection>(copying bytes: Bytes) where Bytes.Element == UInt8 {
        storage = .allocate(byteCount: max(bytes.count, 1), alignment: 16)
        UnsafeMutableRawBufferPointer(rebasing: storage[0..<bytes.count]).copyBytes(from: bytes)
        self.count_ = bytes.count
    }

    /// Lets `body` fill `count` bytes in place, so the secret never exists outside this buffer.
    public init(count: Int, initializingWith body: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
        storage = .allocate(byteCount: max(count, 1), alignment: 16)
        storage.initializeMemory(as: UInt8.self, repeating: 0)
        self.count_ = count
        do {
            try body(UnsafeMutableRawBufferPointer(rebasing: storage[0..<count]))
        } catch {
            kw_cleanse(storage.baseAddress, storage.count)
            storage.deallocate()
            throw error
        }
    }

    private let count_: Int

    deinit {
        kw_cleanse(storage.baseAddress, storage.count)
        storage.deallocate()
    }

    /// Calls `body` with the secret bytes; the pointer must not escape.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(rebasing: storage[0..<count_]))
    }

    /// Constant-time comparison (length is not secret).
    public func constantTimeEquals(_ other: SecretBytes) -> Bool {
        withUnsafeBytes { a in other.withUnsafeBytes { b in constantTimeEqual(a, b) } }
    }
}

extension SecretBytes: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}

/// Compares two byte ranges without an early exit on the first difference.
func constantTimeEqual(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    guard a.count == b.count else { return false }
    var diff: UInt8 = 0
    for i in 0..<a.count { diff |= a[i] ^ b[i] }
    return diff == 0
}
