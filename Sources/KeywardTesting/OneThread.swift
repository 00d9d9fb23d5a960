import Dispatch

/// One thread as a task executor: a job that blocks it holds back every other job on it, as a
/// blocking call holds back an event loop. Tests run work under it (`withTaskExecutorPreference`)
/// to show that a call leaves its caller's thread free.
public final class OneThread: TaskExecutor {
    private let queue = DispatchQueue(label: "test.one-thread")

    public init() {}

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
