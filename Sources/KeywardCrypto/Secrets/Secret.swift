/// A bearer token, provider API key or cloud credential: its UTF-8 held in ``SecretBytes`` (no
/// printable form, wiped when the last copy is released).
///
/// Some APIs take only a `String` (an HTTP header value, the database driver's password, a
/// token shown once): ``exposed()`` makes that copy where it is used. Swift cannot wipe a
/// `String`, so such a copy must never be kept.
public struct Secret: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    private let bytes: SecretBytes

    /// Copies `value`'s UTF-8. The caller's `String` is not wiped: prefer ``init(bytes:)``.
    public init(_ value: String) { bytes = SecretBytes(copying: value.utf8) }

    /// Takes `bytes` (UTF-8) as they are, without a copy.
    public init(bytes: SecretBytes) { self.bytes = bytes }

    /// The number of UTF-8 bytes.
    public var count: Int { bytes.count }

    /// Calls `body` with the UTF-8 bytes; the pointer must not escape.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try bytes.withUnsafeBytes(body)
    }

    /// A `String` copy for an API that takes nothing else; not wiped, so never keep it.
    public func exposed() -> String { bytes.withUnsafeBytes { String(decoding: $0, as: UTF8.self) } }

    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
    /// `dump` and mirrors see no children, so the value cannot leak through reflection either.
    public var customMirror: Mirror { Mirror(self, children: [:]) }
}
