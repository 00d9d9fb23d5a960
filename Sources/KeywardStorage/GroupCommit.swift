/// Who commits, and with whom, when inserts arrive concurrently (group commit), as a value: every
/// decision is taken here, under its owner's lock, and returned as an action; the owner does the
/// I/O and resumes whom it is told to. Both engines use it; its tests need neither.
///
/// One caller at a time holds the writer's role. A caller that finds it free writes at once, on
/// its own thread, without suspending. Callers that arrive meanwhile queue; the writer commits
/// its own work together with what queued, resumes those callers with their results, and hands the
/// role to the first caller that queued after it took the others (which commits on its own
/// thread) or frees it. Something that must hold every writer back (SQLite's checkpoint that
/// restarts the log) asks for the role with ``requestExclusive(_:)`` and gets it before any queued
/// writer; it then finishes like a writer.
public struct GroupCommit<Waiter, Exclusive> {
    private var queue: [Waiter] = []
    private var head = 0
    private var exclusiveWaiter: Exclusive?
    /// Whether someone holds the writer's role.
    public private(set) var writing = false
    /// Whether the last commit carried work that had queued behind another.
    private var followed = false

    public init() {}

    /// What a caller with work should do.
    public enum Arrival: Equatable {
        /// Commit now, as the writer. `gather`: the last commit was shared, so others are likely
        /// to arrive at once; yielding once first lets them join this commit.
        case write(gather: Bool)
        /// Queue with ``enqueue(_:)``.
        case wait
    }

    /// A caller arrives with work.
    public mutating func arrive() -> Arrival {
        guard !writing else { return .wait }
        writing = true
        return .write(gather: followed)
    }

    /// What became of a caller that queued.
    public enum Queueing: Equatable {
        /// It waits to be resumed (with its result, or with the writer's role).
        case queued
        /// The writer left between ``arrive()`` and now: the caller writes.
        case write
    }

    /// The caller told to ``Arrival/wait`` queues, now that it has a waiter to resume.
    public mutating func enqueue(_ waiter: Waiter) -> Queueing {
        guard writing else {
            writing = true
            return .write
        }
        queue.append(waiter)
        return .queued
    }

    /// The writer takes up to `limit` of the queued callers, to commit their work with its own.
    public mutating func takeQueued(limit: Int = .max) -> [Waiter] {
        precondition(writing, "only the writer takes queued work")
        let n = min(limit, queue.count - head)
        let taken = Array(queue[head..<(head + n)])
        head += n
        if head == queue.count {
            queue.removeAll(keepingCapacity: true)
            head = 0
        }
        followed = !taken.isEmpty
        return taken
    }

    /// Whom the writer's role goes to next.
    public enum Handover {
        /// Nobody: the role is free.
        case idle
        /// A queued caller: resume it to write.
        case writer(Waiter)
        /// What asked to hold writers back: resume it; it holds the role.
        case exclusive(Exclusive)
    }

    /// The writer is done with its commit and has resumed those whose work it carried.
    public mutating func finish() -> Handover {
        precondition(writing, "only the writer finishes")
        if let e = exclusiveWaiter {
            exclusiveWaiter = nil
            return .exclusive(e)
        }
        if head < queue.count {
            let next = queue[head]
            head += 1
            if head == queue.count {
                queue.removeAll(keepingCapacity: true)
                head = 0
            }
            return .writer(next)
        }
        writing = false
        return .idle
    }

    /// Asks for the writer's role ahead of every queued caller.
    /// - Returns: true if it is granted now; otherwise `waiter` is resumed when the writer finishes.
    public mutating func requestExclusive(_ waiter: Exclusive) -> Bool {
        guard writing else {
            writing = true
            return true
        }
        precondition(exclusiveWaiter == nil, "one exclusive holder at a time")
        exclusiveWaiter = waiter
        return false
    }

    /// Queued callers, for tests and logs.
    public var queuedCount: Int { queue.count - head }
}
