import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Spreads batches of whole frames over the machine's cores. Frames are independent under GCM and
/// their places in the output are known in advance, so workers write side by side without locks.
/// Small batches stay on the calling thread: a thread hop costs more than a few frames.
enum FrameParallelism {
    /// Worker count: the online cores, at most 4.
    static let workers: Int = max(1, min(Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), 4))
    /// Plaintext bytes below which a batch is not split.
    static let minimumBatchBytes = 128 << 10
    /// Plaintext bytes per batch read from a positional source.
    static let batchBytes = 1 << 20

    /// Runs `body(i)` for i in 0..<parts, in parallel when parts > 1, and returns when all are done.
    /// Part 0 always runs on the calling thread, which starts on it at once. Callers give each `i`
    /// its own cipher and its own disjoint output range, which is what makes sharing the closure
    /// across threads sound.
    static func run(_ parts: Int, _ body: (Int) -> Void) {
        guard parts > 1, workers > 1 else {
            for i in 0..<parts { body(i) }
            return
        }
        HelperThreads.shared.run(parts, body)
    }
}

/// A batch's frames, handed out about 64 KiB at a time to whichever worker asks next: a core that
/// is held up (on a shared machine one often is) does less, instead of the whole batch waiting for
/// its fixed share.
final class FrameRuns: Sendable {
    private let next = Atomic<Int>(0)
    private let count: Int
    private let length: Int

    init(count: Int, frameLength: Int) {
        self.count = count
        length = max(1, (64 << 10) / frameLength)
    }

    /// The next run of frame indexes, or nil when all are taken.
    func take() -> Range<Int>? {
        let start = next.wrappingAdd(length, ordering: .relaxed).oldValue
        return start < count ? start..<min(start + length, count) : nil
    }
}

/// Threads that help the calling thread with its batches, kept for the life of the process. After
/// a batch each one spins for a while before it sleeps, so that the next batch, posted a few
/// microseconds later, starts on every core at once. A sleeping thread woken per batch (as with
/// `DispatchQueue.concurrentPerform`) joined about 0.1 ms late on this project's 2-core VMs: as long
/// as AES-GCM takes over a whole 1 MiB batch, and 15 % of each step of a signed message's hash.
private final class HelperThreads: @unchecked Sendable {
    static let shared = HelperThreads(count: FrameParallelism.workers - 1)

    /// The current batch: its generation (bits 40–63), its part count (32–39) and the next part to
    /// take (0–31). A part is taken by moving the index up with a compare-and-exchange, which fails
    /// once a newer batch is posted; a thread that took one reads the batch's `body` only then, and
    /// the caller waits for every taken part before it posts the next.
    private let ticket = Atomic<UInt64>(0)
    /// Parts of the current batch done.
    private let finished = Atomic<Int>(0)
    /// Helpers asleep on `wake`.
    private let sleeping = Atomic<Int>(0)
    /// One caller at a time posts batches; another meanwhile runs its parts alone.
    private let busy = Atomic<Bool>(false)
    /// The current batch's work: written before its ticket is posted, read by takers of its parts.
    private var body: ((Int) -> Void)?
    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    /// How long a helper spins for the next batch before it sleeps: longer than the caller takes
    /// between batches to hand one on (microseconds; a write to a file takes longer, and then the
    /// wake-up is lost in it), short enough to leave the core to others when no batch comes.
    private static let spinNanoseconds: UInt64 = 50_000

    private init(count: Int) {
        pthread_mutex_init(lock, nil)
        pthread_cond_init(wake, nil)
        for _ in 0..<count {
            var thread = pthread_t()
            let rc = pthread_create(&thread, nil, { _ in
                HelperThreads.shared.serve()
                return nil
            }, nil)
            if rc == 0 { pthread_detach(thread) }
        }
    }

    func run(_ parts: Int, _ work: (Int) -> Void) {
        precondition(parts < 256)
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            for i in 0..<parts { work(i) }
            return
        }
        defer { busy.store(false, ordering: .releasing) }
        withoutActuallyEscaping(work) { work in
            body = work
            finished.store(0, ordering: .relaxed)
            let g = ((ticket.load(ordering: .relaxed) >> 40) + 1) & 0xff_ffff  // only this caller posts
            // Part 0 is the caller's: it is taken as the ticket is posted.
            ticket.store(g << 40 | UInt64(parts) << 32 | 1, ordering: .sequentiallyConsistent)
            if sleeping.load(ordering: .sequentiallyConsistent) > 0 {
                pthread_mutex_lock(lock)
                pthread_cond_broadcast(wake)
                pthread_mutex_unlock(lock)
            }
            work(0)
            var done = 1
            while let i = take(g) {
                work(i)
                done += 1
            }
            // Every part is taken: wait for the helpers' to finish, spinning (they are running).
            while finished.load(ordering: .acquiring) + done < parts {}
            body = nil
        }
    }

    /// Takes the next part of batch `g`, or nil if it has none left (or a newer batch is posted).
    private func take(_ g: UInt64) -> Int? {
        var t = ticket.load(ordering: .acquiring)
        while t >> 40 == g, t & 0xffff_ffff < (t >> 32) & 0xff {
            let (exchanged, current) = ticket.compareExchange(expected: t, desired: t + 1, ordering: .acquiringAndReleasing)
            if exchanged { return Int(t & 0xffff_ffff) }
            t = current
        }
        return nil
    }

    private func serve() {
        var seen: UInt64 = 0
        while true {
            seen = nextGeneration(after: seen)
            while let i = take(seen) {
                body!(i)
                finished.add(1, ordering: .releasing)
            }
        }
    }

    /// Waits for a batch newer than `seen`: spins first, then sleeps until one is posted.
    private func nextGeneration(after seen: UInt64) -> UInt64 {
        let start = Self.now()
        var spins = 0
        while true {
            let g = ticket.load(ordering: .acquiring) >> 40
            if g != seen { return g }
            // Gives the core to any other runnable thread (returns at once when there is none):
            // a spinning helper must not slow the rest of the process.
            sched_yield()
            spins += 1
            if spins & 63 == 0 && Self.now() - start > Self.spinNanoseconds { break }
        }
        pthread_mutex_lock(lock)
        sleeping.add(1, ordering: .sequentiallyConsistent)
        var g = ticket.load(ordering: .sequentiallyConsistent) >> 40
        while g == seen {
            pthread_cond_wait(wake, lock)
            g = ticket.load(ordering: .sequentiallyConsistent) >> 40
        }
        sleeping.subtract(1, ordering: .sequentiallyConsistent)
        pthread_mutex_unlock(lock)
        return g
    }

    private static func now() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
    }
}
