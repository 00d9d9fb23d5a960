/// Where an upload's batches are, as a value (in the manner of ``GroupCommit``): the request's
/// event loop fills one batch while a blocking-pool thread, the sealer, encrypts the full ones in
/// order and appends them to the blob. Every decision is taken here, under the upload's lock, and
/// returned as an action; the owner runs the sealer and resumes whom it is told to.
///
/// The sealer goes on with the next full batch as long as there is one, so that a batch filled
/// while another was being sealed starts without a thread being woken for it: a pool job per
/// 1 MiB batch, each waking a pool thread, had the sealer waiting 0.16–0.26 s per GiB uploaded
/// (about 0.2 ms a batch) on this project's 2-core machine. The loop waits for a batch only when
/// every other is full or being sealed (and, to end or abort, for the sealer to stop). After a
/// failure, or once the loop abandons the upload, nothing more is sealed and every later call fails.
struct UploadBatches<Waiter> {
    /// Batches neither filled, queued nor being sealed.
    private var empty: [Int]
    /// Full batches waiting for the sealer, oldest first.
    private var full: [Int] = []
    /// Whether the sealer runs (or was told to start).
    private(set) var sealing = false
    /// The first error the sealer met.
    private(set) var failure: (any Error)?
    private var waiting: Waiting?

    private enum Waiting {
        /// The loop waits for an empty batch.
        case batch(Waiter)
        /// The loop waits for the sealer to stop (before the last batch, or to abort).
        case idle(Waiter)
    }

    /// Whom to resume and with what: an empty batch's index, nil for a wait for the sealer to
    /// stop, or the sealer's failure.
    typealias Resume = (waiter: Waiter, result: Result<Int?, any Error>)

    /// `count` batches; the loop starts filling batch 0.
    init(count: Int) {
        precondition(count >= 2, "one batch to fill and one to seal at least")
        empty = Array((1..<count).reversed())
    }

    /// What the loop does with a batch it filled.
    enum Filled {
        /// Start the sealer with it.
        case seal(Int)
        /// Nothing: the running sealer takes it in its turn.
        case queued
        /// The sealer failed: give up (the batch is dropped).
        case failed(any Error)
    }

    /// The loop filled batch `index`.
    mutating func filled(_ index: Int) -> Filled {
        precondition(!empty.contains(index) && !full.contains(index), "a batch the loop holds")
        if let failure {
            empty.append(index)
            return .failed(failure)
        }
        guard !sealing else {
            full.append(index)
            return .queued
        }
        sealing = true
        return .seal(index)
    }

    /// The loop needs an empty batch: its index, the failure, or nil when `waiter` is to be
    /// resumed with one later.
    mutating func takeEmpty(_ waiter: Waiter) -> Result<Int?, any Error>? {
        precondition(waiting == nil, "one loop per upload")
        if let failure { return .failure(failure) }
        if let index = empty.popLast() { return .success(index) }
        waiting = .batch(waiter)
        return nil
    }

    /// The loop waits for the sealer to stop: now (with its failure, if any), or nil when `waiter`
    /// is to be resumed once it has.
    mutating func awaitIdle(_ waiter: Waiter) -> Result<Int?, any Error>? {
        precondition(waiting == nil, "one loop per upload")
        guard sealing else { return failure.map { .failure($0) } ?? .success(nil) }
        waiting = .idle(waiter)
        return nil
    }

    /// The loop gives the upload up (it failed before its end): the queued batches are dropped,
    /// and the sealer stops after the batch it is on, as after a failure of its own.
    mutating func abandon(because error: any Error) {
        failure = failure ?? error
        empty += full
        full = []
    }

    /// What the sealer does after a batch.
    struct Sealed {
        /// The batch to seal next, or nil: the sealer stops.
        var next: Int?
        /// The loop, if it waited for what this batch freed.
        var resume: Resume?
    }

    /// The sealer finished batch `index`, or failed on it.
    mutating func sealed(_ index: Int, failure error: (any Error)?) -> Sealed {
        precondition(sealing, "only the sealer finishes batches")
        if let error {
            failure = failure ?? error
            empty += full
            full = []
        }
        empty.append(index)
        let next = full.isEmpty ? nil : full.removeFirst()
        sealing = next != nil
        var resume: Resume?
        switch waiting {
        case .batch(let waiter):
            waiting = nil
            resume = (waiter, failure.map { .failure($0) } ?? .success(empty.removeLast()))
        case .idle(let waiter) where !sealing:
            waiting = nil
            resume = (waiter, failure.map { .failure($0) } ?? .success(nil))
        case .idle, nil:
            break
        }
        return Sealed(next: next, resume: resume)
    }
}
