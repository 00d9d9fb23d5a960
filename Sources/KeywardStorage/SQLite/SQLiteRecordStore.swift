import CSQLite
import Dispatch
import Foundation
import KeywardAudit
import Synchronization

/// The embedded default store: one SQLite database in WAL mode, written through one connection.
///
/// Calls run under a lock on the caller's thread: each is a few microseconds of in-process work
/// (WAL with `synchronous=NORMAL` syncs at checkpoints, not at each commit), cheaper than a hop
/// to a thread pool. A crash of the process loses nothing committed; a power loss may lose the
/// last transactions since the last checkpoint.
public final class SQLiteRecordStore: SQLStore {
    /// Bytes SQLite's allocator holds in this process, every connection's page cache included.
    public static var memoryInUse: Int64 { sqlite3_memory_used() }

    private let connection: Mutex<SQLiteConnection>
    /// Checkpoints run on their own connection, off the request path: a checkpoint syncs the
    /// database file, which would stall every writer if it ran inside a commit.
    private let checkpointer: Mutex<SQLiteConnection?>
    /// Keeps the log's pages cached (see ``ResidentFileRange``); internal for a test.
    let residentLog: ResidentFileRange?
    public let path: String

    /// Runs a closure where the calling task came from; see ``init(path:callerHome:)``.
    public typealias Home = @Sendable (@escaping @Sendable () -> Void) -> Void

    /// Where an insert that waits for another caller's commit is resumed: nil, on the thread
    /// that committed it.
    private let callerHome: @Sendable () -> Home?

    /// Opens or creates the database at `path` (`:memory:` for a private, temporary one).
    ///
    /// - Parameter callerHome: called when an insert waits for another caller's commit; returns
    ///   how to run code on the caller's own thread. The gateway returns its event loop, so that a
    ///   request does not continue on the loop that happened to commit it (and hop back for
    ///   every write to its connection).
    public init(path: String, callerHome: @escaping @Sendable () -> Home? = { nil }) throws {
        self.path = path
        self.callerHome = callerHome
        let c = try SQLiteConnection(path: path)
        // secure_delete zeroes freed pages; temp_store keeps sorts and temporary tables off disk;
        // a 16 MiB page cache keeps the indexes' hot pages in memory as the database grows (64 MiB
        // cost the same CPU per stored exchange on an 800 MiB database, and filled for a quarter
        // of an hour at a steady load, which a memory-growth check cannot tell from a leak); the
        // log file is trimmed only past twice the size at which checkpoints restart it (trimming
        // it to that size at each restart cost a truncate and a regrowth every second under load).
        try c.exec("""
            PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;
            PRAGMA secure_delete=ON; PRAGMA temp_store=MEMORY; PRAGMA wal_autocheckpoint=0;
            PRAGMA cache_size=-16384; PRAGMA journal_size_limit=134217728; SELECT 1 FROM sqlite_master LIMIT 1;
            """)
        connection = Mutex(c)
        checkpointer = Mutex(path == ":memory:" ? nil : try SQLiteConnection(path: path))
        let logBytes = path == ":memory:" ? 0 : Self.logFileBytes(besides: path)
        if logBytes > 0 && c.preallocateLog(bytes: logBytes) {
            residentLog = ResidentFileRange(path: path + "-wal", length: Int(logBytes))
        } else {
            residentLog = nil
        }
    }

    /// The log file's size, allocated when the store opens (and the size past which restarts trim
    /// it), so that appends never grow it. An fsync of a growing file holds its inode lock while it
    /// writes the new size and blocks, and every append waits meanwhile: measured on this
    /// project's machine (ext4), appends stalled up to 48 ms against 4 ms into allocated space.
    /// PostgreSQL preallocates its log segments for the same reason. SQLite reads the zeros past
    /// the last frame as the log's end. On a small volume, a quarter of its free space (in whole
    /// MiB; none below 8 MiB): the database, the keys and the blobs need the rest, and a server
    /// that filled its volume before writing its root key would not start.
    static func logFileBytes(besides path: String) -> Int64 {
        var st = statvfs()
        let folder = (path as NSString).deletingLastPathComponent
        guard statvfs(folder.isEmpty ? "." : folder, &st) == 0 else { return 0 }
        let bytes = min(maxLogFileBytes, Int64(st.f_bavail) * Int64(st.f_frsize) / 4) & ~Int64((1 << 20) - 1)
        return bytes >= 8 << 20 ? bytes : 0
    }

    static let maxLogFileBytes: Int64 = 134_217_728

    /// 64 MiB of 4 KiB pages: past this, a checkpoint holds writers back briefly to restart the log.
    static let maxLogFrames: Int64 = 16_384
    /// Passive passes repeat until one copies at most this much (4 MiB): the pass that then holds
    /// writers back copies and syncs about as little.
    static let finalPassFrames: Int64 = 1_024

    /// Where checkpoints run: one thread, reused, off every executor (a checkpoint writes and
    /// syncs the database file for milliseconds, and may wait for the writer's role).
    private static let checkpoints = DispatchQueue(label: "keyward.sqlite.checkpoint")

    /// Copies the write-ahead log into the database without blocking writers; the gateway calls
    /// it four times a second. Returns the number of log frames copied.
    @discardableResult
    public func maintain() async throws -> Int {
        try await withCheckedThrowingContinuation { continuation in
            Self.checkpoints.async { continuation.resume(with: Result { try self.checkpoint() }) }
        }
    }

    private func checkpoint() throws -> Int {
        try checkpointer.withLock { c in
            guard let c else { return 0 }
            // (frames in the log, frames copied so far)
            func pass() throws -> (log: Int64, copied: Int64) {
                try c.query("PRAGMA wal_checkpoint(PASSIVE)") { ($0.int(1), $0.int(2)) }.first ?? (0, 0)
            }
            var state = try pass()
            let copied = state.copied
            guard state.log > Self.maxLogFrames else { return Int(copied) }
            // Under steady writes a passive checkpoint never catches up with the log's end, so the
            // writer never restarts the log and it grows without bound. Copying is faster than our
            // writers fill the log: repeat until little is left, then hold writers back (their
            // inserts queue; no thread blocks on them) while a last pass copies the rest. The
            // checkpoint is then complete, the next write restarts the log, and journal_size_limit
            // trims the file.
            for _ in 0..<8 {
                let before = state.copied
                state = try pass()
                if state.copied - before <= Self.finalPassFrames { break }
            }
            // The last pass syncs the database file before the log restarts, which would flush
            // every page the passive passes copied (tens of milliseconds with writers held): flush
            // them now, and the log written so far, so that it syncs only what it copies itself.
            c.syncFiles()
            // Takes the writer's role ahead of queued inserts; this thread waits (it is the
            // checkpoints' own) until the writer hands the role over.
            let granted = DispatchSemaphore(value: 0)
            if !pending.withLock({ $0.requestExclusive(granted) }) { granted.wait() }
            defer { _ = commitAsWriter(nil) }
            _ = try run { _ in try pass() }
            return Int(copied)
        }
    }

    /// Runs `body` with the connection, under its lock.
    func run<T>(_ body: (SQLiteConnection) throws -> T) throws -> T {
        try connection.withLock { try body($0) }
    }

    /// Applies ``Schema``'s migrations after `PRAGMA user_version`, each in its own transaction.
    public func migrate() async throws {
        try run { c in
            for migration in Schema.pending(after: 0) {
                try c.transaction {
                    let version = try c.query("PRAGMA user_version") { $0.int(0) }.first ?? 0
                    guard version < migration.version else { return }
                    for statement in migration.statements(for: .sqlite) { try c.exec(statement) }
                    try c.exec("PRAGMA user_version=\(migration.version)")
                }
            }
        }
    }

    public func ping() async throws {
        _ = try run { try $0.query("SELECT 1") { $0.int(0) } }
    }

    // MARK: Statements

    public var dialect: SQLDialect { .sqlite }

    public func query<T>(_ statement: SQLStatement, _ decode: (SQLiteRow) throws -> T) async throws -> [T] {
        try run { try $0.query(statement.text, statement.values, decode) }
    }

    @discardableResult
    public func execute(_ statement: SQLStatement) async throws -> Int {
        try run { try $0.execute(statement.text, statement.values) }
    }

    // MARK: Group commit

    /// Inserts waiting while another caller writes are committed together, in one transaction
    /// (group commit, see ``GroupCommit``): one WAL append for many requests under load. Audit
    /// events ride in the same transaction as the records they describe, chained at the head as
    /// they commit.
    @discardableResult
    public func insert(_ records: [Record], audit: [AuditEvent]) async throws -> [AuditEvent] {
        let work = Work(records: records, audit: audit)
        switch pending.withLock({ $0.arrive() }) {
        case .write(let gather):
            // Nobody writing: commit on this thread without suspending (a hop to the executor and
            // back costs more than the commit). Under concurrent load, let the work already queued
            // on this thread reach its insert first, so that it shares this commit: a commit
            // rewrites the same few pages for one insert or for twenty. A lone writer does not
            // wait (a yield costs a thread hop).
            if gather { await Task.yield() }
            return try commitAsWriter(work)!.get()
        case .wait:
            break
        }
        let home = callerHome()
        let turn = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Turn, any Error>) in
            let waiter = PendingBatch(work: work, continuation: continuation, home: home)
            if pending.withLock({ $0.enqueue(waiter) }) == .write { continuation.resume(returning: .write) }
        }
        switch turn {
        case .committed(let events): return events
        case .write: return try commitAsWriter(work)!.get()
        }
    }

    /// Commits `work` (the caller's own; nil for a checkpoint that held writers back) and all that
    /// queued behind it, as the holder of the writer's role, resumes the others, then passes the
    /// role on. Returns the result of `work`.
    private func commitAsWriter(_ work: Work?) -> Result<[AuditEvent], any Error>? {
        let queued = pending.withLock { $0.takeQueued() }
        let works = (work.map { [$0] } ?? []) + queued.map(\.work)
        let results = works.isEmpty ? [] : commitEach(works)
        let own = work == nil ? 0 : 1
        for (b, result) in zip(queued, results.dropFirst(own)) { b.resume(with: result.map { .committed($0) }) }
        switch pending.withLock({ $0.finish() }) {
        case .idle: break
        case .writer(let next): next.resume(with: .success(.write))  // it commits where it came from
        case .exclusive(let checkpoint): checkpoint.signal()
        }
        return work == nil ? nil : results[0]
    }

    /// What one caller commits: record rows and audit events.
    private struct Work: Sendable {
        let records: [Record]
        let audit: [AuditEvent]
    }

    /// What a queued insert is told: its events as committed, or that it holds the writer's role.
    private enum Turn: Sendable {
        case committed([AuditEvent])
        case write
    }

    private struct PendingBatch: Sendable {
        let work: Work
        let continuation: CheckedContinuation<Turn, any Error>
        let home: Home?
        func resume(with result: Result<Turn, any Error>) {
            if let home { home { continuation.resume(with: result) } } else { continuation.resume(with: result) }
        }
    }

    private let pending = Mutex(GroupCommit<PendingBatch, DispatchSemaphore>())

    /// Commits `works` in one transaction; if that fails, each alone, so that only a caller at
    /// fault fails (all or none per caller).
    private func commitEach(_ works: [Work]) -> [Result<[AuditEvent], any Error>] {
        do {
            return try write(works).map { .success($0) }
        } catch where works.count == 1 {
            return [.failure(error)]
        } catch {
            return works.map { w in Result { try write([w])[0] } }
        }
    }

    private func write(_ batches: [Work]) throws -> [[AuditEvent]] {
        try run { c in
            let written = try c.transaction {
                // The head is whatever committed last: our own last append, unless another
                // connection has written since (data_version moves only for others' commits).
                let version = try c.dataVersion()
                var head: AuditHead? = cachedHead.withLock { $0?.version == version ? $0!.head : nil }
                var out: [[AuditEvent]] = []
                out.reserveCapacity(batches.count)
                let insertRecord = try c.statement(Record.insertSQL)
                let insertEvent = try c.statement(AuditEvent.insertSQL)
                for b in batches {
                    for r in b.records { try insertRecord.run(r.values) }
                    guard !b.audit.isEmpty else { out.append([]); continue }
                    var linked = try head ?? Self.auditHead(c)
                    let events = linked.link(b.audit)
                    for e in events { try insertEvent.run(e.values) }
                    head = linked
                    out.append(events)
                }
                return (out, version, head)
            }
            // Only after the commit: a rolled-back append leaves the head where it was.
            if let head = written.2 { cachedHead.withLock { $0 = (written.1, head) } }
            return written.0
        }
    }

    /// The chain head as of our last append, and the data_version it was read at; only touched
    /// under the connection lock.
    private let cachedHead = Mutex<(version: Int64, head: AuditHead)?>(nil)

    /// One writer, so the head is the last event (PostgreSQL's replicas lock a row for it instead).
    private static func auditHead(_ c: SQLiteConnection) throws -> AuditHead {
        try c.query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1") { AuditHead(seq: $0.int(0), hash: $0.bytes(1)) }.first
            ?? .genesis
    }

    public func auditHead() async throws -> AuditHead {
        try run { try Self.auditHead($0) }
    }

    // MARK: Jobs

    /// Jobs held by a worker of this process (the only process that writes this database).
    private let claimedJobs = Mutex<Set<String>>([])

    public func withJobClaimed(id: String, _ body: (Job) async throws -> (job: Job, headers: [HeaderChange])?) async throws -> JobClaim {
        guard claimedJobs.withLock({ $0.insert(id).inserted }) else { return .busy }
        defer { _ = claimedJobs.withLock { $0.remove(id) } }
        guard let current = try await job(id: id) else { return .missing }
        guard let (updated, changes) = try await body(current) else { return .unchanged(current) }
        var job = updated
        let replaced = try run { c in
            try c.transaction {
                var replaced = 0
                for ch in changes {
                    replaced += try c.execute("UPDATE records SET header = ? WHERE tenant = ? AND id = ? AND kind = ? AND header = ?",
                                              [.bytes(ch.new), .text(job.tenant), .text(ch.id), .text(ch.kind), .bytes(ch.old)])
                }
                // A header changed meanwhile (record deleted) was left alone: count what was written.
                job.rewrapped -= Int64(changes.count - replaced)
                let save = job.save
                _ = try c.execute(save.text, save.values)
                return replaced
            }
        }
        return .saved(job, replaced: replaced)
    }
}
