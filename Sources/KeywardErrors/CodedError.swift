/// An error with a code a caller can act on and a reason safe to show anyone: the shape of every
/// Keyward error. Equality and hashing go by code, so tests and callers compare codes.
public protocol CodedError: Error, Hashable, Sendable, CustomStringConvertible {
    associatedtype Code: Hashable & Sendable & CustomStringConvertible
    var code: Code { get }
    /// A short explanation without secrets.
    var reason: String { get }
}

extension CodedError {
    public var description: String { "\(reason) (\(code))" }
    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }
}
