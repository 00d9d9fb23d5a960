import NIOCore
import NIOPosix

/// An event loop of NIO's singleton group as a task executor, to run work on another core than
/// the calling task's. `keyward serve` installs that group as Swift's global executor, whose jobs
/// stay on the loop that enqueues them: a child task (`async let`) would run on the same core as
/// its parent, after it, instead of beside it.
final class SiblingLoop: TaskExecutor {
    let loop: any EventLoop

    private init(_ loop: any EventLoop) { self.loop = loop }

    private static let all: [SiblingLoop] = MultiThreadedEventLoopGroup.singleton.makeIterator().map(SiblingLoop.init)

    /// A loop other than the current thread's (the next one after it), or nil with one loop only.
    static func other() -> SiblingLoop? {
        guard all.count > 1 else { return nil }
        guard let current = all.firstIndex(where: { $0.loop.inEventLoop }) else { return all[0] }
        return all[(current + 1) % all.count]
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
