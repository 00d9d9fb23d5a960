import Foundation

/// Set-up that blocks (a child process to wait for, a port polled until it opens) run on a thread
/// of its own. Swift Testing runs every test at once on the cooperative pool, which has one thread
/// per core: a test that blocks one of them for seconds starves every other test's tasks, and
/// their deadlines fire late.
public enum BlockingWork {
    /// `work`'s result, computed on a new thread while the caller's task is suspended.
    public static func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread { continuation.resume(with: Result { try work() }) }
        }
    }
}
