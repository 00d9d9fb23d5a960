import Dispatch
import Testing
import KeywardBlockingIO
import KeywardStorage

/// Blocking file-system work leaves the caller's thread free (in the gateway, an event loop).
@Suite("Blocking I/O off the caller's thread")
struct BlockingIOTests {
    /// One thread as a task executor: a job that blocks it holds back every other job on it, as a
    /// blocking call holds back an event loop.
    final class OneThread: TaskExecutor {
        private let queue = DispatchQueue(label: "test.one-thread")
        func enqueue(_ job: consuming ExecutorJob) {
            let job = UnownedJob(job)
            queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
        }
    }

    @Test func theCallersThreadRunsOthersMeanwhile() async throws {
        let thread = OneThread()
        let other = DispatchSemaphore(value: 0)
        let ran = try await withTaskExecutorPreference(thread) {
            // The work waits for a task that runs on the caller's thread: it sees it only if it does
            // not hold that thread itself (run inline, it would wait out the timeout).
            async let work = BlockingIO.run { other.wait(timeout: .now() + 2) == .success }
            async let signal: Void = { other.signal() }()
            await signal
            return try await work
        }
        #expect(ran)
    }

    @Test func anErrorReachesTheCaller() async throws {
        await #expect(throws: StorageError.self) {
            try await BlockingIO.run { throw StorageError(.unavailable, "disk full") }
        }
    }
}
