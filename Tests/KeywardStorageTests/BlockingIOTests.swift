import Dispatch
import Synchronization
import Testing
import KeywardBlockingIO
import KeywardStorage
import KeywardTesting

/// Blocking calls run on a pool's own threads, at most its limit at once, and leave the caller's
/// thread free (in the gateway, an event loop).
@Suite("Blocking calls off the caller's thread")
struct BlockingIOTests {
    @Test func theCallersThreadRunsOthersMeanwhile() async throws {
        let thread = OneThread()
        let other = DispatchSemaphore(value: 0)
        let (ran, label) = try await withTaskExecutorPreference(thread) {
            // The call waits for a task that runs on the caller's thread: it sees it only if it does
            // not hold that thread itself (run inline, it would wait out the 10 s timeout).
            async let call = BlockingIO.run { (other.wait(timeout: .now() + 10) == .success, BlockingIO.currentLabel) }
            async let signal: Void = { other.signal() }()
            await signal
            return try await call
        }
        #expect(ran)
        #expect(label == "keyward-io", "the call ran on the shared pool's thread, not elsewhere")
    }

    final class Count: Sendable {
        private let value = Mutex(0)
        func add(_ n: Int) { value.withLock { $0 += n } }
        var now: Int { value.withLock { $0 } }
    }

    @Test func atMostTheLimitRunAtOnce() async throws {
        let pool = BlockingIO(label: "test-two", threads: 2)
        let submitted = Count(), running = Count(), release = DispatchSemaphore(value: 0)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    submitted.add(1)
                    try await pool.run {
                        running.add(1)
                        release.wait()
                        running.add(-1)
                    }
                }
            }
            // Every call submitted and two running. The wait is long: the tests share two
            // cooperative threads, which other suites hold for seconds at a time in CI.
            let clock = ContinuousClock(), deadline = clock.now + .seconds(60)
            while submitted.now < 4 || running.now < 2, clock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
            #expect(submitted.now == 4 && running.now == 2)
            // A third thread would have started by now: starting one takes well under a millisecond.
            try await Task.sleep(for: .milliseconds(200))
            #expect(running.now == 2)
            for _ in 0..<4 { release.signal() }
            try await group.waitForAll()
        }
        #expect(running.now == 0)
    }

    /// A call that outlives its deadline: the caller gets the late error then, while the call
    /// keeps its thread; a call queued behind it (the pool's one thread held) never starts.
    @Test func aCallPastItsDeadlineFailsAndOneNotStartedNeverStarts() async throws {
        struct Late: Error {}
        let pool = BlockingIO(label: "test-late", threads: 1)
        let release = DispatchSemaphore(value: 0), started = Count(), finished = Count()
        let clock = ContinuousClock(), start = clock.now
        let first = Task {
            try await pool.run(within: .milliseconds(200), orThrow: { Late() }) {
                started.add(1)
                release.wait()
                finished.add(1)
            }
        }
        while started.now == 0, clock.now - start < .seconds(30) { try await Task.sleep(for: .milliseconds(5)) }
        let second = Task { try await pool.run(within: .milliseconds(200), orThrow: { Late() }) { started.add(1) } }
        await #expect(throws: Late.self) { try await first.value }
        await #expect(throws: Late.self) { try await second.value }
        // Generous (the tests share two busy cores); without the deadline the call holds on for ever.
        #expect(clock.now - start < .seconds(30))
        #expect(started.now == 1 && finished.now == 0)
        release.signal()
        let deadline = clock.now + .seconds(30)
        while finished.now == 0, clock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        // A call within its deadline gives its result: the one thread took it after the second
        // call's job, which was dropped without running (given up while queued).
        #expect(try await pool.run(within: .seconds(30), orThrow: { Late() }) { 42 } == 42)
        #expect(finished.now == 1 && started.now == 1)
    }

    @Test func anErrorReachesTheCaller() async throws {
        await #expect(throws: StorageError.self) {
            try await BlockingIO.run { throw StorageError(.unavailable, "disk full") }
        }
    }
}
