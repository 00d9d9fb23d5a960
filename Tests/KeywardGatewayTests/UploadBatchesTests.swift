@testable import KeywardGateway
import Testing

/// The hand-overs between an upload's loop and its sealer, without threads: waiters are names.
@Suite("Upload batches")
struct UploadBatchesTests {
    struct Failed: Error, Equatable { let batch: Int }

    /// The sealer goes on with batches filled while it sealed, in order, without being started
    /// again; it stops when none is full, and the next full batch starts it anew.
    @Test func theSealerGoesOnWhileBatchesAreFull() throws {
        var b = UploadBatches<String>(count: 3)
        guard case .seal(0) = b.filled(0) else { Issue.record("the first batch starts the sealer"); return }
        #expect(try b.takeEmpty("loop")?.get() == 1)
        guard case .queued = b.filled(1) else { Issue.record("a batch filled while one seals waits for it"); return }
        #expect(try b.takeEmpty("loop")?.get() == 2)
        guard case .queued = b.filled(2) else { Issue.record("queued behind 1"); return }
        // Every batch is full or sealing: the loop waits.
        #expect(b.takeEmpty("loop") == nil)
        // 0 sealed: the sealer goes on with 1 (filled first), the loop gets 0.
        let after0 = b.sealed(0, failure: nil)
        #expect(after0.next == 1)
        #expect(after0.resume?.waiter == "loop")
        #expect(try after0.resume?.result.get() == 0)
        let after1 = b.sealed(1, failure: nil)
        #expect(after1.next == 2 && after1.resume == nil && b.sealing)
        let after2 = b.sealed(2, failure: nil)
        #expect(after2.next == nil && after2.resume == nil && !b.sealing)
        // Idle now: the loop's wait for the sealer ends at once, and a full batch starts it again.
        #expect(try b.awaitIdle("loop")?.get() == .some(nil))
        guard case .seal(0) = b.filled(0) else { Issue.record("an idle sealer is started"); return }
    }

    /// Waiting for the sealer to stop (before the last batch) lasts until every queued batch is
    /// sealed, not just the one sealing: the last batch must not be sealed beside the sealer.
    @Test func theLoopWaitsForEveryQueuedBatch() throws {
        var b = UploadBatches<String>(count: 3)
        guard case .seal(0) = b.filled(0) else { Issue.record("the first batch starts the sealer"); return }
        let one = try #require(try b.takeEmpty("loop")?.get())
        guard case .queued = b.filled(one) else { Issue.record("queued behind 0"); return }
        let last = try #require(try b.takeEmpty("loop")?.get())
        #expect(b.awaitIdle("commit") == nil)
        let first = b.sealed(0, failure: nil)
        #expect(first.next == one && first.resume == nil, "batch \(one) is still queued: the commit waits on")
        let second = b.sealed(one, failure: nil)
        #expect(second.next == nil && second.resume?.waiter == "commit")
        #expect(try second.resume?.result.get() == .some(nil))
        #expect(!b.sealing && last != one && last != 0)
    }

    /// A failure drops the queued batches, stops the sealer, reaches the waiting loop, and fails
    /// every later call: nothing after it is sealed.
    @Test func aFailureStopsEverything() throws {
        var b = UploadBatches<String>(count: 3)
        _ = b.filled(0)
        let one = try #require(try b.takeEmpty("loop")?.get())
        _ = b.filled(one)
        let two = try #require(try b.takeEmpty("loop")?.get())
        _ = b.filled(two)
        #expect(b.takeEmpty("loop") == nil)
        let step = b.sealed(0, failure: Failed(batch: 0))
        #expect(step.next == nil && !b.sealing, "the queued batches are not sealed")
        #expect(step.resume?.waiter == "loop")
        #expect(throws: Failed(batch: 0)) { try step.resume?.result.get() }
        #expect(throws: Failed(batch: 0)) { try b.takeEmpty("loop")?.get() }
        #expect(throws: Failed(batch: 0)) { try b.awaitIdle("abort")?.get() }
    }

    /// An upload abandoned by its loop (a client gone, a file too large) stops its sealer after
    /// the batch it is on: what was queued is not encrypted for nothing.
    @Test func anAbandonedUploadSealsNothingMore() throws {
        var b = UploadBatches<String>(count: 3)
        _ = b.filled(0)
        let one = try #require(try b.takeEmpty("loop")?.get())
        guard case .queued = b.filled(one) else { Issue.record("queued behind 0"); return }
        b.abandon(because: Failed(batch: -1))
        #expect(b.awaitIdle("abort") == nil, "batch 0 is being sealed")
        let step = b.sealed(0, failure: nil)
        #expect(step.next == nil && !b.sealing)
        #expect(step.resume?.waiter == "abort")
        #expect(throws: Failed(batch: -1)) { try step.resume?.result.get() }
        #expect(throws: Failed(batch: -1)) { try b.takeEmpty("loop")?.get() }
    }

    /// A wait for the sealer to stop gets its failure too (a commit must not write past it).
    @Test func aFailureReachesAWaitForIdle() throws {
        var b = UploadBatches<String>(count: 2)
        _ = b.filled(0)
        #expect(b.awaitIdle("commit") == nil)
        let step = b.sealed(0, failure: Failed(batch: 0))
        #expect(step.resume?.waiter == "commit")
        #expect(throws: Failed(batch: 0)) { try step.resume?.result.get() }
    }
}
