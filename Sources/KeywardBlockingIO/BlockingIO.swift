import Dispatch
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Threads for blocking calls, so that the calling thread keeps serving others meanwhile: the
/// calling task is suspended while one of these threads makes the call. In `keyward serve` the
/// calling thread is an event loop: an upload's commit stalled every connection on it for as long
/// as its fsync took (0.2–0.25 s after a 512 MiB upload, measured on this project's VM), and a
/// network HSM that answers slowly, or not at all, would do the same. In the tests, set-up that
/// waits (a child process, a port) blocked one of the cooperative pool's threads (one per core),
/// and other tests' deadlines fired late.
///
/// At most `threads` calls run at once; more wait their turn (a hung HSM holds at most its own
/// pool's threads, and a burst of calls cannot create threads without bound). Threads are started
/// as calls need them and then kept for the life of the process (some PKCS#11 clients keep state
/// per thread), so pools are made once (static), not per request or per object. If no thread can
/// be started at all, a call runs on the caller's thread rather than never.
public final class BlockingIO: Sendable {
    /// The file system's (blob commits, deletes, sweeps) and the tests' set-up.
    public static let shared = BlockingIO(label: "keyward-io", threads: 16)

    /// `body`'s result, computed on one of ``shared``'s threads.
    public static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await shared.run(body)
    }

    /// - Parameters:
    ///   - label: the threads' name (the first 15 bytes: Linux's limit) and ``currentLabel``.
    ///   - threads: the most calls that run at once.
    public init(label: String, threads: Int) {
        precondition(threads > 0, "a pool of blocking threads needs one at least")
        self.label = label
        self.limit = threads
    }

    /// `body`'s result, computed on one of this pool's threads.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            submit { continuation.resume(with: Result { try body() }) }
        }
    }

    /// `body`'s result, computed on one of this pool's threads, or `late()` thrown once `limit` has
    /// passed without it (time queued included). A call cannot be interrupted (a PKCS#11 module's,
    /// blocked on a token that does not answer): it goes on, holding its thread, and its result is
    /// dropped. A call that has not started by then (every thread held) never starts.
    public func run<T: Sendable>(within limit: Duration, orThrow late: @escaping @Sendable () -> any Error,
                                 _ body: @escaping @Sendable () throws -> T) async throws -> T {
        let waiter = Waiter<T>()
        return try await withCheckedThrowingContinuation { continuation in
            let timer = DispatchSource.makeTimerSource(queue: .global())
            let (seconds, attoseconds) = limit.components
            timer.schedule(deadline: .now() + .nanoseconds(Int(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)))
            timer.setEventHandler { if waiter.isWaiting { waiter.resume(with: .failure(late())) } }
            waiter.wait(continuation, cancelling: Timer(source: timer))
            timer.resume()
            submit {
                guard waiter.isWaiting else { return }
                waiter.resume(with: Result { try body() })
            }
        }
    }

    /// A continuation resumed once, by whichever comes first: the call or its deadline (whose timer
    /// is then cancelled, so that a long deadline does not keep finished calls' timers).
    private final class Waiter<T: Sendable>: Sendable {
        private let state = Mutex<(continuation: CheckedContinuation<T, any Error>, timer: Timer)?>(nil)
        func wait(_ continuation: CheckedContinuation<T, any Error>, cancelling timer: Timer) {
            state.withLock { $0 = (continuation, timer) }
        }
        var isWaiting: Bool { state.withLock { $0 != nil } }
        func resume(with result: Result<T, any Error>) {
            guard let (continuation, timer) = state.withLock({ s in defer { s = nil }; return s }) else { return }
            timer.source.cancel()
            continuation.resume(with: result)
        }
    }

    /// A deadline's timer; libdispatch's sources may be cancelled from any thread.
    private struct Timer: @unchecked Sendable {
        let source: any DispatchSourceTimer
    }

    /// The label of the pool whose thread calls this; nil on any other thread. For tests and logs.
    public static var currentLabel: String? { Thread.current.threadDictionary[labelKey] as? String }
    private static let labelKey = "keyward.blocking-io.label"

    typealias Job = @Sendable () -> Void

    private struct State {
        var jobs: [Job] = []
        var head = 0
        var threads = 0
        var busy = 0
        var queued: Int { jobs.count - head }

        mutating func pop() -> Job {
            let job = jobs[head]
            head += 1
            if head == jobs.count {
                jobs.removeAll(keepingCapacity: true)
                head = 0
            }
            return job
        }
    }

    private let label: String
    private let limit: Int
    private let state = Mutex(State())
    /// Signalled once per queued job.
    private let ready = DispatchSemaphore(value: 0)

    private func submit(_ job: @escaping Job) {
        let start = state.withLock { s -> Bool in
            s.jobs.append(job)
            // A new thread when the idle ones are fewer than the jobs waiting, up to the limit.
            guard s.threads < limit, s.queued > s.threads - s.busy else { return false }
            s.threads += 1
            return true
        }
        if start && !startThread() {
            let alone = state.withLock { s -> Job? in
                s.threads -= 1
                return s.threads == 0 ? s.pop() : nil
            }
            // No thread at all to take it (the job queued is this one): run it here.
            if let alone { return alone() }
        }
        ready.signal()
    }

    private func startThread() -> Bool {
        let retained = Unmanaged.passRetained(self)
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        var thread = pthread_t()
        let started = pthread_create(&thread, &attributes, { argument in
            Unmanaged<BlockingIO>.fromOpaque(argument!).takeRetainedValue().work()
        }, retained.toOpaque())
        guard started == 0 else {
            retained.release()
            return false
        }
        return true
    }

    /// A thread's life: take queued jobs, one at a time, for ever.
    private func work() -> Never {
        Thread.current.name = String(decoding: Array(label.utf8.prefix(15)), as: UTF8.self)
        Thread.current.threadDictionary[Self.labelKey] = label
        while true {
            ready.wait()
            let job = state.withLock { s -> Job in
                s.busy += 1
                return s.pop()
            }
            job()
            state.withLock { $0.busy -= 1 }
        }
    }
}
