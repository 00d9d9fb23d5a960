import Foundation
import KeywardStorage
import Logging
import NIOCore
import PostgresNIO
import Synchronization

/// Running statements: pooled connections leased with a deadline, statements bounded in time,
/// transactions, and driver errors turned into safe storage errors.
extension PostgresRecordStore {
    /// `body`'s result, or `unavailable` once `limit` has passed. Unstructured on purpose: a
    /// query on a connection the server dropped can ignore cancellation, and a task group would
    /// wait for it; here the caller is answered at the deadline and the straggler is left to fail
    /// when its connection is closed.
    static func withDeadline<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let waiter = DeadlineWaiter<T>()
        return try await withCheckedThrowingContinuation { continuation in
            waiter.slot.withLock { $0 = continuation }
            let work = Task {
                let result: Result<T, any Error>
                do { result = .success(try await body()) } catch { result = .failure(error) }
                waiter.take()?.resume(with: result)
            }
            Task {
                try? await Task.sleep(for: limit)
                guard let late = waiter.take() else { return }
                work.cancel()
                late.resume(throwing: StorageError(.unavailable, "the database did not answer within \(limit)"))
            }
        }
    }

    /// A connection handed from the task that leased it to the caller, and handed back.
    final class ConnectionLease: Sendable {
        private enum State { case waiting, handed(PostgresConnection), abandoned }
        private let state = Mutex<(State, CheckedContinuation<PostgresConnection, any Error>?)>((.waiting, nil))
        private let back = AsyncStream<Void>.makeStream()

        /// Called by the leasing task; false if the caller gave up meanwhile.
        func hand(_ c: PostgresConnection) -> Bool {
            let waiter: CheckedContinuation<PostgresConnection, any Error>?? = state.withLock { s in
                guard case .waiting = s.0 else { return .none }
                s.0 = .handed(c)
                defer { s.1 = nil }
                return .some(s.1)
            }
            guard let waiter else { return false }
            waiter?.resume(returning: c)
            return true
        }

        /// Waits until the caller is done with the connection.
        func returned() async {
            for await _ in back.stream {}
        }

        func giveBack() { back.continuation.finish() }

        func connection(within limit: Duration, cancelling holder: Task<Void, Never>) async throws -> PostgresConnection {
            let timer = Task { [weak self] in
                try await Task.sleep(for: limit)
                self?.abandon(holder)
            }
            defer { timer.cancel() }
            return try await withCheckedThrowingContinuation { continuation in
                let ready: PostgresConnection?? = state.withLock { s in
                    switch s.0 {
                    case .handed(let c): return .some(c)
                    case .abandoned: return .some(nil)  // failed or timed out before we asked
                    case .waiting:
                        s.1 = continuation
                        return .none
                    }
                }
                switch ready {
                case .some(.some(let c)): continuation.resume(returning: c)
                case .some(.none): continuation.resume(throwing: StorageError(.unavailable, "no database connection within \(limit)"))
                case .none: break
                }
            }
        }

        private func abandon(_ holder: Task<Void, Never>) {
            holder.cancel()
            fail(StorageError(.unavailable, "no database connection in time"))
        }

        /// The lease failed (or came too late): the caller gets `error`.
        func fail(_ error: any Error) {
            let waiter: CheckedContinuation<PostgresConnection, any Error>? = state.withLock { s in
                guard case .waiting = s.0 else { return nil }
                s.0 = .abandoned
                defer { s.1 = nil }
                return s.1
            }
            waiter?.resume(throwing: error)
        }
    }

    /// The caller of ``withDeadline``, answered once by whichever comes first.
    final class DeadlineWaiter<T: Sendable>: Sendable {
        let slot = Mutex<CheckedContinuation<T, any Error>?>(nil)
        func take() -> CheckedContinuation<T, any Error>? { slot.withLock { $0.take() } }
    }

    // MARK: Running statements

    /// Runs `body`, turning driver errors into safe storage errors; fails at once while the
    /// server is known to be down.
    func run<T>(_ body: () async throws -> T) async throws -> T {
        guard health.up.load(ordering: .relaxed) else { throw StorageError(.unavailable, "the database is unreachable") }
        do { return try await body() } catch { throw PostgresErrors.map(error) }
    }

    func rows(_ query: PostgresQuery, limit: Duration = .seconds(5)) async throws -> [PostgresRandomAccessRow] {
        try await run {
            var out: [PostgresRandomAccessRow] = []
            try await leased { c in out = try await Self.rows(query, on: c, logger: logger, limit: limit) }
            return out
        }
    }

    /// One statement on `c`, answered within `limit`: a statement in flight when the server
    /// drops the connection has been seen never to complete, even once the connection is closed,
    /// so the caller is not left waiting on it (the straggler fails or stays parked, harmlessly).
    @discardableResult
    static func rows(_ query: PostgresQuery, on c: PostgresConnection, logger: Logger,
                     limit: Duration = .seconds(5)) async throws -> [PostgresRandomAccessRow] {
        do {
            return try await withDeadline(limit) {
                var out: [PostgresRandomAccessRow] = []
                for try await row in try await c.query(query, logger: logger) { out.append(row.makeRandomAccess()) }
                return out
            }
        } catch let e as StorageError where e.code == .unavailable {
            try? await c.close()
            throw e
        }
    }

    /// A pooled connection for `body`, or `unavailable` if none comes within 5 s (a pool waiting
    /// to reconnect must not hold requests indefinitely). Statements on it are bounded by
    /// ``rows(_:on:logger:limit:)``.
    func leased<T>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        let lease = ConnectionLease()
        let holder = Task { [client] in
            do {
                try await client.withConnection { c in
                    guard lease.hand(c) else { return }
                    await lease.returned()
                }
            } catch {
                lease.fail(error)
            }
        }
        defer { lease.giveBack() }
        return try await body(try await lease.connection(within: .seconds(5), cancelling: holder))
    }

    /// A transaction on one pooled connection: committed if `body` returns, rolled back if it throws.
    func transaction<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await run {
            try await leased { c in
                try await Self.rows("BEGIN", on: c, logger: logger)
                do {
                    let result = try await body(c)
                    try await Self.rows("COMMIT", on: c, logger: logger)
                    return result
                } catch {
                    if PostgresErrors.brokeConnection(error) {
                        // Another statement on a connection that got a fatal error can wait
                        // forever: close it, and the pool makes a new one.
                        try? await c.close()
                    } else {
                        let logger = logger
                        do { try await Self.rows("ROLLBACK", on: c, logger: logger, limit: .seconds(2)) } catch {
                            try? await c.close()
                        }
                    }
                    throw error
                }
            }
        }
    }
}
