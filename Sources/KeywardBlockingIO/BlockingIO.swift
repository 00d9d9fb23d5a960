import Foundation

/// Runs a blocking call on a thread of its own, while the calling task is suspended, so that the
/// calling thread keeps serving others meanwhile. In `keyward serve` that thread is an event loop:
/// an upload's commit stalled every connection on it for as long as its fsync took (0.2–0.25 s after
/// a 512 MiB upload, measured on this project's VM), and a network HSM that answers slowly, or not
/// at all, would do the same. In the tests, set-up that waits (a child process, a port) blocked one
/// of the cooperative pool's threads (one per core), and other tests' deadlines fired late.
///
/// A new thread per call rather than a pool: these calls are rare next to requests (a commit per
/// upload, a key-store call per cache miss), each may block for long (a hung HSM for ever), and a
/// pool of a few threads would make the next call wait behind it.
public enum BlockingIO {
    /// `body`'s result, computed on a new thread.
    public static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
        }
    }
}
