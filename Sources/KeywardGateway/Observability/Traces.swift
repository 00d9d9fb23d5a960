import Tracing

/// Spans of the gateway's own work (key-store calls, upstream calls, storage writes) under the
/// request's span, made only when tracing is on: off, a call costs one branch and no span.
/// Attributes name kinds, counts, statuses and upstream names only: never a prompt, token or key.
struct Traces: Sendable {
    let enabled: Bool

    static let off = Traces(enabled: false)

    /// Runs `body` in a span named `name` (nil when tracing is off), ended when `body` returns.
    @inline(__always)
    func span<T>(_ name: String, kind: SpanKind = .internal, _ body: ((any Span)?) async throws -> T) async rethrows -> T {
        guard enabled else { return try await body(nil) }
        return try await withSpan(name, ofKind: kind) { span in try await body(span) }
    }
}
