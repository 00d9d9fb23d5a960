import KeywardStorage
import Testing

/// The group commit's decisions, without a database: who writes, who waits, who is resumed with
/// whose commit, and where the writer's role goes next.
@Suite("Group commit state machine")
struct GroupCommitTests {
    typealias Machine = GroupCommit<String, String>

    @Test func aLoneCallerWritesAtOnceAndFreesTheRole() {
        var m = Machine()
        do { let r = m.arrive(); #expect(r == .write(gather: false)) }
        do { let r = m.takeQueued(); #expect(r.isEmpty) }
        guard case .idle = m.finish() else { Issue.record("the role should be free"); return }
        #expect(!m.writing)
        do { let r = m.arrive(); #expect(r == .write(gather: false), "nothing was shared, so the next writer does not wait for company") }
    }

    @Test func callersArrivingDuringACommitQueueAndTheFirstOfTheNextGroupWrites() {
        var m = Machine()
        do { let r = m.arrive(); #expect(r == .write(gather: false)) }
        for name in ["b", "c"] {
            do { let r = m.arrive(); #expect(r == .wait) }
            do { let r = m.enqueue(name); #expect(r == .queued) }
        }
        // The writer carries b and c; d arrives while that commit runs.
        do { let r = m.takeQueued(); #expect(r == ["b", "c"]) }
        do { let r = m.arrive(); #expect(r == .wait) }
        do { let r = m.enqueue("d"); #expect(r == .queued) }
        guard case .writer("d") = m.finish() else { Issue.record("d should get the role"); return }
        #expect(m.writing && m.queuedCount == 0)
        do { let r = m.takeQueued(); #expect(r.isEmpty) }
        guard case .idle = m.finish() else { Issue.record("the role should be free"); return }
        do { let r = m.arrive(); #expect(r == .write(gather: false)) }
    }

    @Test func aSharedCommitAsksTheNextWriterToGather() {
        var m = Machine()
        _ = m.arrive()
        _ = m.arrive()
        _ = m.enqueue("b")
        do { let r = m.takeQueued(); #expect(r == ["b"]) }
        _ = m.finish()
        do { let r = m.arrive(); #expect(r == .write(gather: true)) }
    }

    @Test func aCallerWhoseWriterLeftBeforeItQueuedWritesItself() {
        var m = Machine()
        _ = m.arrive()
        do { let r = m.arrive(); #expect(r == .wait) }  // decided under the lock...
        _ = m.takeQueued()
        _ = m.finish()  // ...and the writer left before the caller queued
        do { let r = m.enqueue("late"); #expect(r == .write) }
        #expect(m.writing)
    }

    @Test func takingIsBoundedAndTheRestStayQueuedInOrder() {
        var m = Machine()
        _ = m.arrive()
        for i in 0..<5 { _ = m.arrive(); let r = m.enqueue("w\(i)"); #expect(r == .queued) }
        do { let r = m.takeQueued(limit: 2); #expect(r == ["w0", "w1"]) }
        guard case .writer("w2") = m.finish() else { Issue.record("w2 should write next"); return }
        do { let r = m.takeQueued(); #expect(r == ["w3", "w4"]) }
        guard case .idle = m.finish() else { Issue.record("the role should be free"); return }
    }

    @Test func anExclusiveRequestGetsTheRoleBeforeQueuedWritersAndThenCarriesThem() {
        var m = Machine()
        do { let r = m.requestExclusive("checkpoint"); #expect(r, "a free role is granted at once") }
        do { let r = m.arrive(); #expect(r == .wait, "writers queue while it is held") }
        _ = m.enqueue("a")
        // The checkpoint finishes like a writer: it commits what queued.
        do { let r = m.takeQueued(); #expect(r == ["a"]) }
        guard case .idle = m.finish() else { Issue.record("the role should be free"); return }

        _ = m.arrive()  // a writer holds the role
        _ = m.arrive(); _ = m.enqueue("b")
        do { let granted = m.requestExclusive("checkpoint"); #expect(!granted, "held: it waits") }
        guard case .exclusive("checkpoint") = m.finish() else { Issue.record("the checkpoint goes before b"); return }
        #expect(m.writing, "the checkpoint holds the role")
        do { let r = m.takeQueued(); #expect(r == ["b"]) }
        guard case .idle = m.finish() else { Issue.record("the role should be free"); return }
    }
}
