import Dispatch

/// Runs blocking file-system work (an fsync of a large blob, an unlink, a directory walk) on one of
/// Dispatch's threads, so that the calling thread keeps serving others meanwhile: in `keyward
/// serve` that thread is an event loop, and an upload's commit stalled every connection on it for
/// as long as its fsync took (0.2-0.25 s after a 512 MiB upload, measured on this project's VM).
enum BlockingIO {
    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result { try body() }) }
        }
    }

    /// Concurrent: two uploads' fsyncs need not wait for each other.
    private static let queue = DispatchQueue(label: "keyward.blob-io", qos: .utility, attributes: .concurrent)
}
