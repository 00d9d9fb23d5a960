import Synchronization
import Testing
@testable import KeywardCrypto
#if canImport(Glibc)
import Glibc
#endif

/// The helper threads behind parallel batches: each part of a batch runs exactly once, part 0 on
/// the caller, whether the helpers are spinning, asleep, or busy with another caller's batch.
@Suite struct FrameParallelismTests {
    /// Runs `batches` batches of `parts` parts, pausing now and then long enough for the helpers
    /// to fall asleep; returns how often each part ran, and whether part 0 ever left the caller.
    private func runBatches(_ batches: Int, parts: Int, pauseEvery: Int) -> (counts: [Int], part0Elsewhere: Bool) {
        let counts = UnsafeMutableBufferPointer<Atomic<Int>>.allocate(capacity: batches * parts)
        defer { counts.deallocate() }
        for i in 0..<counts.count { (counts.baseAddress! + i).initialize(to: Atomic(0)) }
        var elsewhere = false
        let caller = pthread_self()
        for b in 0..<batches {
            var part0Thread = caller
            FrameParallelism.run(parts) { i in
                if i == 0 { part0Thread = pthread_self() }
                counts[b * parts + i].add(1, ordering: .relaxed)
            }
            if pthread_equal(part0Thread, caller) == 0 { elsewhere = true }
            if b % pauseEvery == pauseEvery - 1 { usleep(1_000) }  // past the helpers' spin: they sleep
        }
        return ((0..<counts.count).map { counts[$0].load(ordering: .relaxed) }, elsewhere)
    }

    @Test(arguments: [2, 3, 7])
    func everyPartRunsOnceAndPartZeroOnTheCaller(parts: Int) {
        let (counts, elsewhere) = runBatches(3_000, parts: parts, pauseEvery: 50)
        #expect(counts.allSatisfy { $0 == 1 }, "parts run \(Set(counts)) times")
        #expect(!elsewhere)
    }

    @Test func concurrentCallersEachGetEveryPartOnce() async {
        // One caller posts to the helpers; the others, finding them taken, run their parts alone.
        await withTaskGroup(of: [Int].self) { group in
            for _ in 0..<4 {
                group.addTask { runBatches(2_000, parts: 3, pauseEvery: 400).counts }
            }
            for await counts in group {
                #expect(counts.allSatisfy { $0 == 1 }, "parts run \(Set(counts)) times")
            }
        }
    }

    @Test func helpersTakeParts() {
        guard FrameParallelism.workers > 1 else { return }
        // Tests running beside this one may hold the helpers for a while (their callers then run
        // alone): a few rounds, until a part runs off the calling thread.
        let caller = pthread_self()
        let offCaller = Atomic<Int>(0)
        for _ in 0..<20 where offCaller.load(ordering: .relaxed) == 0 {
            for _ in 0..<300 {
                FrameParallelism.run(2) { _ in
                    if pthread_equal(pthread_self(), caller) == 0 { offCaller.add(1, ordering: .relaxed) }
                    for _ in 0..<2_000 { _ = offCaller.load(ordering: .relaxed) }  // long enough for a spinning helper
                }
            }
        }
        #expect(offCaller.load(ordering: .relaxed) > 0)
    }
}
